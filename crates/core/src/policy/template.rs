//! Variables in policy values: `${namespace}`, `${app.name}`, `${app.id}`, `${role}`, and
//! `$${` for a literal `${`. Parsed once when a policy is loaded; a request only joins the
//! pieces with the pod's values.

use crate::spark::{SparkRole, APP_NAME_LABEL, APP_SELECTOR_LABEL};

/// The variables a policy value may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// The namespace the pod is created in.
    Namespace,
    /// The `spark-app-name` label.
    AppName,
    /// The `spark-app-selector` label (Spark's application id).
    AppId,
    /// `driver` or `executor`.
    Role,
}

impl Var {
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "namespace" => Some(Var::Namespace),
            "app.name" => Some(Var::AppName),
            "app.id" => Some(Var::AppId),
            "role" => Some(Var::Role),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Var::Namespace => "namespace",
            Var::AppName => "app.name",
            Var::AppId => "app.id",
            Var::Role => "role",
        }
    }

    /// The pod label the value comes from, for variables that read one.
    pub fn label(self) -> Option<&'static str> {
        match self {
            Var::AppName => Some(APP_NAME_LABEL),
            Var::AppId => Some(APP_SELECTOR_LABEL),
            Var::Namespace | Var::Role => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(Var),
}

/// A value with at least one variable, split into text and variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

/// What a value turned out to be once parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// No variable: the text to use (with `$${` already turned into `${`).
    Literal(String),
    Template(Template),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown variable \"${{{0}}}\"; the variables are ${{namespace}}, ${{app.name}}, ${{app.id}} and ${{role}} (write $${{ for a literal ${{, e.g. for Spark's own ${{env:NAME}} references)")]
    Unknown(String),
    #[error("\"${{\" is not closed by \"}}\" (write $${{ for a literal ${{)")]
    Unclosed,
}

/// Parses a policy value. Only `${` starts a variable; any other `$` is text.
pub fn parse(text: &str) -> Result<Parsed, TemplateError> {
    if !text.contains("${") {
        return Ok(Parsed::Literal(text.to_owned()));
    }
    let mut pieces = Vec::new();
    let mut buf = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        // `$${` is the escape: the `$` before `${` cancels it.
        if at > 0 && rest.as_bytes()[at - 1] == b'$' {
            buf.push_str(&rest[..at - 1]);
            buf.push_str("${");
            rest = &rest[at + 2..];
            continue;
        }
        buf.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let end = after.find('}').ok_or(TemplateError::Unclosed)?;
        let name = &after[..end];
        let var = Var::from_name(name).ok_or_else(|| TemplateError::Unknown(name.to_owned()))?;
        if !buf.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut buf)));
        }
        pieces.push(Piece::Var(var));
        rest = &after[end + 1..];
    }
    buf.push_str(rest);
    if pieces.is_empty() {
        return Ok(Parsed::Literal(buf));
    }
    if !buf.is_empty() {
        pieces.push(Piece::Text(buf));
    }
    Ok(Parsed::Template(Template(pieces)))
}

/// The pod's values for the variables.
#[derive(Debug, Clone, Copy)]
pub struct Vars<'a> {
    pub namespace: &'a str,
    pub app_name: Option<&'a str>,
    pub app_id: Option<&'a str>,
    pub role: SparkRole,
}

impl Vars<'_> {
    /// The pod's value for `var`, if it has one.
    pub fn value(&self, var: Var) -> Option<&str> {
        match var {
            Var::Namespace => Some(self.namespace),
            Var::AppName => self.app_name,
            Var::AppId => self.app_id,
            Var::Role => Some(self.role.as_str()),
        }
    }

    /// The value if it may be written: not empty and, when it comes from a label, a valid
    /// Kubernetes label value. A mutating webhook sees the pod before the API server
    /// validates it, so a tenant's label could hold `${env:SECRET}`, spaces or `/`: Spark
    /// would resolve the first in a metrics namespace it then publishes, and the others
    /// would change a path or a JVM option. Such a value is treated as missing.
    fn usable(&self, var: Var) -> Option<&str> {
        let value = self.value(var).filter(|s| !s.is_empty())?;
        (var.label().is_none() || is_label_value(value)).then_some(value)
    }
}

/// Kubernetes' rule for a label value: at most 63 characters, alphanumerics with `-`, `_`
/// and `.` inside.
pub fn is_label_value(s: &str) -> bool {
    let inner = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    s.len() <= 63
        && s.chars().all(inner)
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

impl Template {
    /// The value for this pod, or the first variable the pod has no value for: the caller
    /// skips the item rather than write a value with a hole in it.
    pub fn render(&self, vars: &Vars<'_>) -> Result<String, Var> {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Var(v) => match vars.usable(*v) {
                    Some(s) => out.push_str(s),
                    None => return Err(*v),
                },
            }
        }
        Ok(out)
    }
}

impl std::fmt::Display for Template {
    /// The template as written (escapes restored), for messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => f.write_str(&t.replace("${", "$${"))?,
                Piece::Var(v) => write!(f, "${{{}}}", v.name())?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars<'static> {
        Vars {
            namespace: "team-a",
            app_name: Some("etl"),
            app_id: None,
            role: SparkRole::Driver,
        }
    }

    #[test]
    fn text_without_variables_is_a_literal() {
        assert_eq!(
            parse("a $b $ {c}").unwrap(),
            Parsed::Literal("a $b $ {c}".into())
        );
        assert_eq!(parse("$${x}").unwrap(), Parsed::Literal("${x}".into()));
        assert_eq!(parse("$$${x}").unwrap(), Parsed::Literal("$${x}".into()));
    }

    #[test]
    fn variables_render_with_the_pods_values() {
        let Parsed::Template(t) =
            parse("s3a://b/${namespace}/${app.name}-${role}/$${env:X}").unwrap()
        else {
            panic!("a template")
        };
        assert_eq!(
            t.render(&vars()).unwrap(),
            "s3a://b/team-a/etl-driver/${env:X}"
        );
        assert_eq!(
            t.to_string(),
            "s3a://b/${namespace}/${app.name}-${role}/$${env:X}"
        );
        let Parsed::Template(t) = parse("${app.id}").unwrap() else {
            panic!("a template")
        };
        assert_eq!(t.render(&vars()), Err(Var::AppId));
    }

    #[test]
    fn a_label_that_is_not_a_label_value_is_no_value() {
        let Parsed::Template(t) = parse("-Dns=${app.name}").unwrap() else {
            panic!("a template")
        };
        for bad in [
            "${env:SECRET}",
            "a b",
            "../x",
            "a/b",
            "-a",
            "a.",
            "né",
            &"a".repeat(64),
        ] {
            let v = Vars {
                app_name: Some(bad),
                ..vars()
            };
            assert_eq!(t.render(&v), Err(Var::AppName), "{bad:?}");
        }
        for good in ["a", "pyspark-pi", "My_App.v2", &"a".repeat(63)] {
            let v = Vars {
                app_name: Some(good),
                ..vars()
            };
            assert_eq!(t.render(&v), Ok(format!("-Dns={good}")));
        }
    }

    #[test]
    fn unknown_and_unclosed_variables_are_errors() {
        assert_eq!(
            parse("${env:HOME}"),
            Err(TemplateError::Unknown("env:HOME".into()))
        );
        assert_eq!(parse("x${namespace"), Err(TemplateError::Unclosed));
        assert!(TemplateError::Unknown("x".into())
            .to_string()
            .contains("$${"));
    }
}
