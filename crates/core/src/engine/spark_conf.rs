//! sparkConf: Spark configuration defaults for driver pods, written as `-Dkey=value`
//! tokens into the Spark container's `SPARK_SUBMIT_OPTS`.
//!
//! Why that works: the driver container runs `spark-submit --deploy-mode client
//! --properties-file …/spark.properties`; Spark's launcher puts `SPARK_SUBMIT_OPTS` on the
//! JVM command line, SparkSubmit starts from `new SparkConf()` (every `spark.*` system
//! property) and then sets each property of spark.properties. So our values are defaults:
//! anything the submitter set wins, and executors get the result from their driver.
//!
//! The launcher (`CommandBuilderUtils.parseOptionString`) splits the variable like a shell
//! (single quotes, double quotes, backslash) and expands nothing; [`split`] reads it the
//! same way and [`quote`] writes tokens it reads back byte for byte. Before that, the
//! kubelet expands the env value itself (`$(NAME)` references, `$$` for `$`), so every `$`
//! we write is doubled ([`env_escape`]) and values are read back through [`env_unescape`].

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{EnvVar, PodSpec};

use super::context::Ctx;
use crate::policy::model::PodPatch;

pub const SUBMIT_OPTS_VAR: &str = "SPARK_SUBMIT_OPTS";

/// Collects one section's entries; they are written by [`apply`] once every policy has
/// had its turn. Within a policy, `driver` comes after `all` and its value replaces it.
pub(crate) fn collect<'p>(ctx: &mut Ctx<'p>, patch: &PodPatch) {
    for (key, value) in &patch.spark_conf {
        let policy = ctx.policy;
        match ctx
            .spark_conf
            .iter_mut()
            .find(|(p, k, _)| *p == policy && k == key)
        {
            Some(entry) => entry.2 = value.clone(),
            None => ctx.spark_conf.push((policy, key.clone(), value.clone())),
        }
    }
}

/// Appends the collected entries to the Spark container's `SPARK_SUBMIT_OPTS`. Per key the
/// first policy (highest priority) decides; a key the variable already sets is left as
/// it is: with our own value it is the mark of an earlier pass, with another value it is
/// the submitter's, which wins (with a warning).
pub(crate) fn apply(ctx: &mut Ctx<'_>, spec: &mut PodSpec, spark: usize) {
    let wanted = std::mem::take(&mut ctx.spark_conf);
    if wanted.is_empty() {
        return;
    }
    let container = &mut spec.containers[spark];
    let env = container.env.get_or_insert_with(Vec::new);
    let at = env.iter().position(|e| e.name == SUBMIT_OPTS_VAR);
    if let Some(e) = at.and_then(|i| env.get(i)) {
        if e.value_from.is_some() {
            for policy in policies(&wanted) {
                ctx.policy = policy;
                ctx.warn(format!(
                    "policy \"{policy}\": {SUBMIT_OPTS_VAR} of container \"{}\" comes from a reference, so the policy's sparkConf could not be added to it",
                    container.name
                ));
            }
            return;
        }
    }
    let current = at
        .and_then(|i| env.get(i))
        .and_then(|e| e.value.clone())
        .unwrap_or_default();
    let tokens = match env_tokens(&current) {
        Ok(t) => t,
        Err(e) => {
            for policy in policies(&wanted) {
                ctx.policy = policy;
                ctx.warn(format!(
                    "policy \"{policy}\": {SUBMIT_OPTS_VAR} of container \"{}\" cannot be read ({e}; Spark's launcher will refuse it too), so the policy's sparkConf was not added",
                    container.name
                ));
            }
            return;
        }
    };
    let existing = system_properties(&tokens);
    let mut decided: HashMap<&str, &str> = HashMap::new();
    let mut added = Vec::new();
    for (policy, key, value) in &wanted {
        ctx.policy = policy;
        let field = || format!("sparkConf[{key}]");
        if let Err(owner) = ctx.claim(["sparkConf", key.as_str()]) {
            let winner = existing
                .get(key.as_str())
                .or_else(|| decided.get(key.as_str()));
            if winner != Some(&value.as_str()) {
                ctx.change(|| {
                    (
                        field(),
                        format!("not set to \"{value}\": policy \"{owner}\" has higher priority"),
                    )
                });
            }
            continue;
        }
        match existing.get(key.as_str()) {
            Some(v) if *v == value => {}
            Some(v) => ctx.warn(format!(
                "policy \"{policy}\": {key} is already \"{v}\" in the driver's {SUBMIT_OPTS_VAR} (spark.kubernetes.driverEnv.{SUBMIT_OPTS_VAR}), so the policy's \"{value}\" was not added"
            )),
            None => {
                decided.insert(key, value);
                added.push(env_escape(&quote(&format!("-D{key}={value}"))));
                ctx.change(|| {
                    (
                        field(),
                        format!("set to \"{value}\" (via {SUBMIT_OPTS_VAR})"),
                    )
                });
            }
        }
    }
    if added.is_empty() {
        return;
    }
    let ours = added.join(" ");
    let value = if current.trim().is_empty() {
        ours
    } else {
        format!("{current} {ours}")
    };
    match at.and_then(|i| env.get_mut(i)) {
        Some(e) => e.value = Some(value),
        None => env.push(EnvVar {
            name: SUBMIT_OPTS_VAR.to_owned(),
            value: Some(value),
            value_from: None,
        }),
    }
}

/// Each policy once, in order.
fn policies<'p>(wanted: &[(&'p str, String, String)]) -> Vec<&'p str> {
    let mut out: Vec<&'p str> = Vec::new();
    for (p, _, _) in wanted {
        if !out.contains(p) {
            out.push(p);
        }
    }
    out
}

/// `-Dkey=value` tokens as key -> value; the JVM keeps the last of a repeated key.
/// `-Dkey` alone sets the property to the empty string.
pub fn system_properties(tokens: &[String]) -> HashMap<&str, &str> {
    tokens
        .iter()
        .filter_map(|t| t.strip_prefix("-D"))
        .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
        .collect()
}

/// The arguments Spark's launcher gets from this `SPARK_SUBMIT_OPTS` value as written in
/// the pod spec: the kubelet's `$$` unescaping, then the launcher's splitting. (A
/// `$(NAME)` reference stays as written: its value is only known in the running pod.)
pub fn env_tokens(value: &str) -> Result<Vec<String>, SplitError> {
    split(&env_unescape(value))
}

/// Writes text so that the kubelet's expansion of env values gives it back unchanged:
/// `$$` is its escape for `$`, and a doubled `$` can never start a `$(NAME)` reference.
pub fn env_escape(text: &str) -> String {
    text.replace('$', "$$")
}

/// The kubelet's reading of `$$` (one `$`); `$(NAME)` and any other `$` are left as written.
pub fn env_unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '$' && chars.peek() == Some(&'$') {
            chars.next();
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error("unclosed single quote")]
    SingleQuote,
    #[error("unclosed double quote")]
    DoubleQuote,
    #[error("ends with a lone backslash")]
    Backslash,
}

/// Splits an option string as Spark's launcher does (`parseOptionString`): whitespace
/// separates, single quotes keep everything, double quotes keep everything but a
/// backslash escapes the next character, outside quotes a backslash escapes the next
/// character, and `""` or `''` is an empty argument. Nothing is expanded.
pub fn split(s: &str) -> Result<Vec<String>, SplitError> {
    split_spans(s.char_indices(), s.len()).map(|t| t.into_iter().map(|(t, _)| t).collect())
}

/// A token and the span of text it came from.
type Spanned = (String, std::ops::Range<usize>);

/// [`split`] over characters at the given positions, each token with the span of text
/// it came from (quotes included): `end` is where the text ends.
fn split_spans(
    chars: impl Iterator<Item = (usize, char)>,
    end: usize,
) -> Result<Vec<Spanned>, SplitError> {
    let mut out = Vec::new();
    let mut opt = String::new();
    let mut start = 0;
    let (mut in_opt, mut single, mut double, mut escape) = (false, false, false, false);
    for (at, c) in chars {
        if !in_opt {
            start = at;
        }
        if escape {
            opt.push(c);
            escape = false;
            in_opt = true;
            continue;
        }
        match c {
            '\\' if !single => {
                escape = true;
                in_opt = true;
            }
            '\'' if !double => {
                single = !single;
                in_opt = true;
            }
            '"' if !single => {
                double = !double;
                in_opt = true;
            }
            c if java_whitespace(c) && !single && !double => {
                if in_opt {
                    out.push((std::mem::take(&mut opt), start..at));
                    in_opt = false;
                }
            }
            c => {
                opt.push(c);
                in_opt = true;
            }
        }
    }
    if single {
        return Err(SplitError::SingleQuote);
    }
    if double {
        return Err(SplitError::DoubleQuote);
    }
    if escape {
        return Err(SplitError::Backslash);
    }
    if in_opt {
        out.push((opt, start..end));
    }
    Ok(out)
}

/// [`env_tokens`], each token with its span in `value` as written in the pod spec: the
/// kubelet's `$$` is read as one `$` standing where the pair starts.
fn env_token_spans(value: &str) -> Result<Vec<Spanned>, SplitError> {
    let mut chars = value.char_indices().peekable();
    let unescaped = std::iter::from_fn(move || {
        let (at, c) = chars.next()?;
        if c == '$' && chars.peek().is_some_and(|(_, n)| *n == '$') {
            chars.next();
        }
        Some((at, c))
    });
    split_spans(unescaped, value.len())
}

/// Whether a token sets system property `key` (`-Dkey=…`, or `-Dkey` alone).
fn sets_key(token: &str, key: &str) -> bool {
    token
        .strip_prefix("-D")
        .and_then(|kv| kv.strip_prefix(key))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('='))
}

/// Removes from every literal `SPARK_SUBMIT_OPTS` of the container each token setting
/// `key`, unless the only one there is `-Dkey=keep` (an earlier pass's own). The other
/// tokens keep their text as written (quotes, `$(NAME)` references, `$$`). Returns the
/// values removed.
pub(crate) fn remove_key(
    spec: &mut PodSpec,
    spark: usize,
    key: &str,
    keep: Option<&str>,
) -> Vec<String> {
    let Some(env) = spec.containers.get_mut(spark).and_then(|c| c.env.as_mut()) else {
        return Vec::new();
    };
    let keep = keep.map(|v| format!("-D{key}={v}"));
    let mut found: Vec<(usize, Vec<Spanned>)> = Vec::new();
    for (i, e) in env.iter().enumerate() {
        if e.name != SUBMIT_OPTS_VAR {
            continue;
        }
        let Some(tokens) = e.value.as_deref().and_then(|v| env_token_spans(v).ok()) else {
            continue;
        };
        if tokens.iter().any(|(t, _)| sets_key(t, key)) {
            found.push((i, tokens));
        }
    }
    let setting: Vec<&String> = found
        .iter()
        .flat_map(|(_, t)| t.iter().map(|(t, _)| t))
        .filter(|t| sets_key(t, key))
        .collect();
    let first = env.iter().position(|e| e.name == SUBMIT_OPTS_VAR);
    if setting.len() == 1
        && keep.as_ref() == Some(setting[0])
        && found[0].0 == first.unwrap_or(usize::MAX)
    {
        return Vec::new();
    }
    let mut removed = Vec::new();
    for (i, tokens) in found {
        let Some(e) = env.get_mut(i) else { continue };
        let raw = e.value.clone().unwrap_or_default();
        let mut kept = Vec::new();
        for (token, span) in tokens {
            if sets_key(&token, key) {
                let value = token
                    .strip_prefix("-D")
                    .and_then(|kv| kv.strip_prefix(key))
                    .map(|r| r.strip_prefix('=').unwrap_or(r).to_owned())
                    .unwrap_or_default();
                removed.push(value);
            } else if let Some(text) = raw.get(span) {
                kept.push(text);
            }
        }
        e.value = Some(kept.join(" "));
    }
    removed
}

/// `Character.isWhitespace`, which the launcher splits on: Unicode space separators but
/// the non-breaking ones, and the ASCII controls \t \n \v \f \r and \x1c-\x1f.
fn java_whitespace(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{0B}' | '\u{0C}' | '\r' | '\u{1C}'..='\u{1F}'
    ) || (c.is_whitespace() && !matches!(c, '\u{85}' | '\u{A0}' | '\u{2007}' | '\u{202F}'))
}

/// Quotes one token so that [`split`] (and a POSIX shell) reads it back unchanged: left
/// bare when it only has characters neither treats specially, otherwise in single quotes,
/// with each `'` written as `'\''`.
pub fn quote(token: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_.,:/=@+%".contains(c);
    if !token.is_empty() && token.chars().all(plain) {
        return token.to_owned();
    }
    let mut out = String::with_capacity(token.len() + 2);
    out.push('\'');
    for c in token.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_reads_the_launchers_own_example() {
        // The example in CommandBuilderUtils.parseOptionString's comment.
        assert_eq!(
            split(r#""ab cd" efgh 'i " j'"#).unwrap(),
            ["ab cd", "efgh", "i \" j"]
        );
        assert_eq!(
            split(r#"a\ b "c\"d" 'e\f' "" ''"#).unwrap(),
            ["a b", "c\"d", r"e\f", "", ""]
        );
        assert_eq!(split("  -Dx=1\t-Dy=2\n").unwrap(), ["-Dx=1", "-Dy=2"]);
        assert_eq!(split("a\u{A0}b").unwrap(), ["a\u{A0}b"]);
        assert_eq!(split("'x"), Err(SplitError::SingleQuote));
        assert_eq!(split("\"x"), Err(SplitError::DoubleQuote));
        assert_eq!(split("x\\"), Err(SplitError::Backslash));
    }

    #[test]
    fn quoted_tokens_read_back_byte_for_byte() {
        for token in [
            "-Dspark.eventLog.dir=s3a://spark-events/team-a",
            "-Dspark.x=it's \"quoted\" $HOME \\n ${env:X} a\tb",
            "-Dspark.kubernetes.executor.annotation.example.com/x=y",
            "-Dspark.metrics.conf.*.sink.prometheusServlet.class=x",
            "-Dspark.empty=",
            "'",
            "",
            "\u{A0}ünï\u{85}",
        ] {
            let q = quote(token);
            assert_eq!(split(&q).unwrap(), [token], "{q}");
            let joined = format!("-Dfoo=1 {q} {q}");
            assert_eq!(split(&joined).unwrap(), ["-Dfoo=1", token, token]);
        }
        assert_eq!(quote("-Dspark.a=b"), "-Dspark.a=b");
    }

    #[test]
    fn dollars_survive_the_kubelets_expansion() {
        for text in ["$", "$$", "a$(HOME)b", "$$(X)", "${env:X}", "x$"] {
            assert_eq!(env_unescape(&env_escape(text)), text);
        }
        assert_eq!(env_escape("$(SPARK_USER)"), "$$(SPARK_USER)");
        assert_eq!(env_unescape("a$$b$c$(D)"), "a$b$c$(D)");
        assert_eq!(
            env_tokens("'-Dx=$$1' -Dy=$$$$").unwrap(),
            ["-Dx=$1", "-Dy=$$"]
        );
    }

    #[test]
    fn system_properties_keep_the_last_of_a_key() {
        let t = split("-Dspark.a=1 -Xmx1g -Dspark.a=2 -Dspark.b -Dspark.c=x=y").unwrap();
        let p = system_properties(&t);
        assert_eq!(p["spark.a"], "2");
        assert_eq!(p["spark.b"], "");
        assert_eq!(p["spark.c"], "x=y");
        assert_eq!(p.len(), 3);
    }
}
