//! The compiled form of a policy: regexes and globs built, quantities checked, hash taken,
//! so that nothing on the request path parses or compiles anything.

use globset::{Glob, GlobSet, GlobSetBuilder};
use k8s_openapi::api::core::v1::Toleration;
use sha2::{Digest, Sha256};

use super::kube_names;
use super::model::{
    DependencySource, DownloadSource, DownloadUrl, PodPatch, ResourceValues, Rules, SparkPodPolicy,
};
use super::pattern::Pattern;
use super::template::{self, Parsed, Template};
use super::PolicyError;
use crate::quantity;
use crate::spark::SparkRole;

/// Labels Spark uses to find its own pods: changing them would orphan executors.
const SPARK_LABELS: &[&str] = &[
    crate::spark::ROLE_LABEL,
    crate::spark::APP_SELECTOR_LABEL,
    crate::spark::APP_NAME_LABEL,
    crate::spark::EXEC_ID_LABEL,
    "spark-version",
    "spark-exec-resourceprofile-id",
];

#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    pub name: String,
    /// Where it came from, for messages: `file.yaml#1 (name)`.
    pub origin: String,
    /// First 10 hex digits of the SHA-256 of the policy as loaded.
    pub hash: String,
    /// `name@hash`, as written in the applied-policy annotation.
    pub tag: String,
    /// The policy as hashed (its canonical JSON): what the version history keeps, and
    /// loads back to the same hash.
    pub canonical: std::sync::Arc<str>,
    pub priority: i32,
    pub namespaces: Vec<String>,
    /// The glob entries of `namespaces`, built (none if there are none).
    pub namespace_globs: Option<GlobSet>,
    pub drivers: bool,
    pub executors: bool,
    pub app_name: Option<Pattern>,
    pub match_labels: Vec<(String, String)>,
    pub all: Option<CompiledPatch>,
    pub driver: Option<CompiledPatch>,
    pub executor: Option<CompiledPatch>,
    pub rules: Option<CompiledRules>,
}

/// A policy section with its variables parsed. Reads as the [`PodPatch`] it wraps; values
/// with variables are listed in `templated` and rendered per pod by the engine.
#[derive(Debug, Clone)]
pub struct CompiledPatch {
    /// The section, with `$${` escapes already replaced in values without variables.
    pub patch: PodPatch,
    /// Values with variables; empty for most policies, which then cost nothing per pod.
    pub templated: Vec<Templated>,
    /// `memoryOnOOM` with its quantities read (driver and executor sections only).
    pub oom: Option<crate::memory_on_oom::OomSettings>,
}

impl std::ops::Deref for CompiledPatch {
    type Target = PodPatch;
    fn deref(&self) -> &PodPatch {
        &self.patch
    }
}

/// One value with variables and where it goes.
#[derive(Debug, Clone)]
pub struct Templated {
    pub site: Site,
    pub template: Template,
}

/// A place in a [`PodPatch`] that may hold variables. Indices are positions in the
/// section's lists; map entries are named by key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Site {
    Label(String),
    Annotation(String),
    SparkConf(String),
    /// `env[i].value`
    Env(usize),
    /// `volumes[i].volume.persistentVolumeClaim.claimName`
    ClaimName(usize),
    /// `volumes[i].volume.configMap.name`
    ConfigMapName(usize),
    /// `volumes[i].volume.secret.secretName`
    SecretName(usize),
    /// `volumes[i].mount.subPath`
    SubPath(usize),
    /// `dependencies[i].source`: its claimName, configMap name or secretName
    DependencySource(usize),
}

#[derive(Debug, Clone)]
pub struct CompiledRules {
    pub rules: Rules,
    pub allowed_images: Option<Vec<Pattern>>,
    pub allowed_service_accounts: Option<Vec<Pattern>>,
}

/// The policy's namespace globs as one set. Each entry must parse and its matcher must
/// build (globset refuses a glob whose automaton is over its size limit): an entry that
/// cannot be matched rejects the policy with its path, never silently matching nothing.
fn namespace_globs(
    namespaces: &[String],
    err: &impl Fn(&str, String) -> PolicyError,
) -> Result<Option<GlobSet>, PolicyError> {
    let mut builder = GlobSetBuilder::new();
    let mut any = false;
    for (i, ns) in namespaces.iter().enumerate() {
        let path = format!("/spec/namespaces/{i}");
        let glob =
            Glob::new(ns).map_err(|e| err(&path, format!("not a valid namespace glob: {e}")))?;
        if crate::matching::is_glob(ns) {
            builder.add(glob);
            any = true;
        }
    }
    if !any {
        return Ok(None);
    }
    match builder.build() {
        Ok(set) => Ok(Some(set)),
        Err(all) => {
            // Name the entry that cannot be built; the slow search runs only on this path.
            for (i, ns) in namespaces.iter().enumerate() {
                let alone = Glob::new(ns).map(|g| GlobSetBuilder::new().add(g).build());
                if let Ok(Err(e)) = alone {
                    return Err(err(
                        &format!("/spec/namespaces/{i}"),
                        format!("namespace glob cannot be matched: {e}"),
                    ));
                }
            }
            Err(err(
                "/spec/namespaces",
                format!("namespace globs too large to match together: {all}"),
            ))
        }
    }
}

impl CompiledPolicy {
    pub fn compile(policy: SparkPodPolicy, origin: String) -> Result<Self, PolicyError> {
        let err = |path: &str, msg: String| PolicyError::new(origin.clone(), path, msg);
        let spec = &policy.spec;

        let namespace_globs = namespace_globs(&spec.namespaces, &err)?;
        let (drivers, executors) = match spec.selector.as_ref().and_then(|s| s.roles.as_ref()) {
            None => (true, true),
            Some(roles) if roles.is_empty() => {
                return Err(err(
                    "/spec/selector/roles",
                    "an empty role list matches no pod; omit it to match both roles".into(),
                ))
            }
            Some(roles) => (
                roles.contains(&SparkRole::Driver),
                roles.contains(&SparkRole::Executor),
            ),
        };
        let app_name = match spec.selector.as_ref().and_then(|s| s.app_name.as_deref()) {
            None => None,
            Some(re) => Some(Pattern::regex(re).map_err(|e| {
                err(
                    "/spec/selector/appName",
                    format!("not a valid regular expression: {}", last_line(&e)),
                )
            })?),
        };
        // A pod can only carry valid labels: a key or value no pod can have would make the
        // policy silently match nothing.
        for (key, value) in spec.selector.iter().flat_map(|s| &s.match_labels) {
            let path = format!("/spec/selector/matchLabels/{}", escape_pointer(key));
            let no_pod = "no pod can carry it, so this policy would match no pod";
            kube_names::qualified_name(key).map_err(|e| {
                err(
                    &path,
                    format!("key \"{key}\" is not a valid label key: {e}; {no_pod}"),
                )
            })?;
            kube_names::label_value(value).map_err(|e| {
                err(
                    &path,
                    format!("\"{value}\" is not a valid label value: it {e}; {no_pod}"),
                )
            })?;
        }
        let match_labels = spec
            .selector
            .as_ref()
            .map(|s| {
                s.match_labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();

        for (section, patch) in [
            ("all", &spec.all),
            ("driver", &spec.driver),
            ("executor", &spec.executor),
        ] {
            if let Some(p) = patch {
                check_patch(p, section, &err)?;
            }
        }
        let rules = match &spec.validate {
            None => None,
            Some(r) => Some(compile_rules(r, &err)?),
        };

        let canonical = serde_json::to_vec(&policy).map_err(|e| err("", e.to_string()))?;
        let digest = Sha256::digest(&canonical);
        let hash: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
        let canonical: std::sync::Arc<str> = String::from_utf8_lossy(&canonical).into();
        // The sections move out of the policy rather than being copied: with thousands of
        // policies loaded, a second copy of every one was a third of the server's memory.
        let SparkPodPolicy { metadata, spec, .. } = policy;
        let section = |patch: Option<PodPatch>, name: &str| {
            patch
                .map(|p| compile_patch(p, &format!("/spec/{name}"), &err))
                .transpose()
        };
        let all = section(spec.all, "all")?;
        let driver = section(spec.driver, "driver")?;
        let executor = section(spec.executor, "executor")?;
        let name = metadata.name;
        Ok(Self {
            tag: format!("{name}@{hash}"),
            canonical,
            name,
            origin,
            hash,
            priority: spec.priority,
            namespaces: spec.namespaces,
            namespace_globs,
            drivers,
            executors,
            app_name,
            match_labels,
            all,
            driver,
            executor,
            rules,
        })
    }

    /// The patch sections that apply to a role, in application order.
    pub fn patches_for(&self, role: SparkRole) -> impl Iterator<Item = &CompiledPatch> {
        let specific = match role {
            SparkRole::Driver => self.driver.as_ref(),
            SparkRole::Executor => self.executor.as_ref(),
        };
        self.all.iter().chain(specific)
    }

    pub fn applies_to_role(&self, role: SparkRole) -> bool {
        match role {
            SparkRole::Driver => self.drivers,
            SparkRole::Executor => self.executors,
        }
    }
}

fn check_patch(
    p: &PodPatch,
    section: &str,
    err: &impl Fn(&str, String) -> PolicyError,
) -> Result<(), PolicyError> {
    let at = &format!("/spec/{section}");
    check_spark_conf(p, section, err)?;
    check_memory_on_oom(p, section, err)?;
    if let Some(r) = &p.resources {
        for (kind, values) in [("defaults", &r.defaults), ("force", &r.force)] {
            if let Some(v) = values {
                check_quantities(v, &format!("{at}/resources/{kind}"), err)?;
            }
        }
    }
    check_kube_names(p, at, err)?;
    for key in p.labels.keys() {
        if SPARK_LABELS.contains(&key.as_str()) {
            return Err(err(
                &format!("{at}/labels/{}", escape_pointer(key)),
                format!("label \"{key}\" is set by Spark itself and identifies its pods; a policy may not change it"),
            ));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (i, d) in p.dependencies.iter().enumerate() {
        if !seen.insert(d.name.as_str()) {
            return Err(err(
                &format!("{at}/dependencies/{i}/name"),
                format!("dependency \"{}\" is listed twice", d.name),
            ));
        }
        if !d.jars && !d.python {
            return Err(err(
                &format!("{at}/dependencies/{i}"),
                "set jars or python (or both): otherwise the dependency is mounted but never used"
                    .into(),
            ));
        }
        if let DependencySource::Download(download) = &d.source {
            check_download(
                download,
                &format!("{at}/dependencies/{i}/source/download"),
                err,
            )?;
        }
    }
    for (i, v) in p.volumes.iter().enumerate() {
        if v.volume.name.is_empty() {
            return Err(err(
                &format!("{at}/volumes/{i}/volume/name"),
                "a volume needs a name".into(),
            ));
        }
    }
    for (list, containers) in [
        ("initContainers", &p.init_containers),
        ("sidecars", &p.sidecars),
    ] {
        for (i, c) in containers.iter().enumerate() {
            if c.name.is_empty() {
                return Err(err(
                    &format!("{at}/{list}/{i}/name"),
                    "a container needs a name".into(),
                ));
            }
        }
    }
    Ok(())
}

/// What the API server checks of the names and labels a patch writes (see `kube_names`):
/// a policy breaking it would have every pod it patches refused.
fn check_kube_names(
    p: &PodPatch,
    at: &str,
    err: &impl Fn(&str, String) -> PolicyError,
) -> Result<(), PolicyError> {
    const REFUSED: &str = "the API server would refuse every pod this policy patches";
    for (field, map) in [
        ("labels", &p.labels),
        ("annotations", &p.annotations),
        ("nodeSelector", &p.node_selector),
    ] {
        for (key, value) in map {
            let path = format!("{at}/{field}/{}", escape_pointer(key));
            // Annotation keys are checked lower-cased, as the API server does.
            let checked = match field {
                "annotations" => kube_names::qualified_name(&key.to_lowercase()),
                _ => kube_names::qualified_name(key),
            };
            checked
                .map_err(|e| err(&path, format!("key \"{key}\" is not valid: {e}; {REFUSED}")))?;
            // A label value with variables is only known per pod; nodeSelector has none.
            let literal = match field {
                "labels" => match template::parse(value) {
                    Ok(Parsed::Literal(text)) => Some(text),
                    _ => None,
                },
                "nodeSelector" => Some(value.clone()),
                _ => None,
            };
            if let Some(text) = literal {
                kube_names::label_value(&text).map_err(|e| {
                    err(
                        &path,
                        format!("\"{text}\" is not a valid label value: it {e}; {REFUSED}"),
                    )
                })?;
            }
        }
    }
    // Names of objects, which cannot exist with another syntax. (A scheduler is not an
    // object: the API server takes any schedulerName, tests/e2e/names.rs.)
    for (field, value) in [
        ("priorityClassName", &p.priority_class_name),
        ("runtimeClassName", &p.runtime_class_name),
    ] {
        if let Some(v) = value {
            kube_names::dns_subdomain(v).map_err(|e| {
                err(
                    &format!("{at}/{field}"),
                    format!("\"{v}\" is not a valid name: it {e}; {REFUSED}"),
                )
            })?;
        }
    }
    for (i, v) in p.volumes.iter().enumerate() {
        let name = &v.volume.name;
        if !name.is_empty() {
            kube_names::dns_label(name).map_err(|e| {
                err(
                    &format!("{at}/volumes/{i}/volume/name"),
                    format!("volume name \"{name}\" is not valid: it {e}; {REFUSED}"),
                )
            })?;
        }
    }
    for (list, containers) in [
        ("initContainers", &p.init_containers),
        ("sidecars", &p.sidecars),
    ] {
        for (i, c) in containers.iter().enumerate() {
            if !c.name.is_empty() {
                kube_names::dns_label(&c.name).map_err(|e| {
                    err(
                        &format!("{at}/{list}/{i}/name"),
                        format!(
                            "container name \"{}\" is not valid: it {e}; {REFUSED}",
                            c.name
                        ),
                    )
                })?;
            }
        }
    }
    for (i, t) in p.tolerations.iter().enumerate() {
        check_toleration(t)
            .map_err(|e| err(&format!("{at}/tolerations/{i}"), format!("{e}; {REFUSED}")))?;
    }
    Ok(())
}

/// The API server's rules for a toleration (`ValidateTolerations`).
fn check_toleration(t: &Toleration) -> Result<(), String> {
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() {
        kube_names::qualified_name(key).map_err(|e| format!("key \"{key}\" is not valid: {e}"))?;
    }
    // An empty operator means Equal.
    match t
        .operator
        .as_deref()
        .filter(|o| !o.is_empty())
        .unwrap_or("Equal")
    {
        "Equal" if key.is_empty() => {
            return Err("a toleration without a key must have operator Exists".to_owned())
        }
        "Equal" => {
            kube_names::label_value(t.value.as_deref().unwrap_or("")).map_err(|e| {
                format!(
                    "value \"{}\" is not valid: it {e}",
                    t.value.as_deref().unwrap_or("")
                )
            })?;
        }
        "Exists" if !t.value.as_deref().unwrap_or("").is_empty() => {
            return Err("a toleration with operator Exists must have no value".to_owned())
        }
        "Exists" => {}
        other => return Err(format!("operator \"{other}\" is not one of Equal, Exists")),
    }
    let effect = t.effect.as_deref().unwrap_or("");
    if !matches!(effect, "" | "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(format!(
            "effect \"{effect}\" is not one of NoSchedule, PreferNoSchedule, NoExecute"
        ));
    }
    if t.toleration_seconds.is_some() && effect != "NoExecute" {
        return Err("tolerationSeconds needs effect NoExecute".to_owned());
    }
    Ok(())
}

/// Every URL needs a file name of its own in the emptyDir: the init container checks each
/// one, and a second URL saved under the same name would replace the first unnoticed.
fn check_download(
    d: &DownloadSource,
    at: &str,
    err: &impl Fn(&str, String) -> PolicyError,
) -> Result<(), PolicyError> {
    let mut names: std::collections::HashMap<&str, usize> = Default::default();
    for (j, u) in d.urls.iter().enumerate() {
        let path = match u {
            DownloadUrl::Plain(_) => format!("{at}/urls/{j}"),
            DownloadUrl::Checked(_) => format!("{at}/urls/{j}/url"),
        };
        let Some(name) = u.file_name() else {
            return Err(err(
                &path,
                format!(
                    "\"{}\" has no file name: the file is saved under the last segment of the URL's path (before any ? or #), which must not be empty, . or ..",
                    u.url()
                ),
            ));
        };
        if let Some(first) = names.insert(name, j) {
            return Err(err(
                &path,
                format!(
                    "\"{}\" would be saved as \"{name}\", like urls/{first}: each URL of a dependency needs its own file name (use two dependencies for two files of the same name)",
                    u.url()
                ),
            ));
        }
    }
    Ok(())
}

fn check_memory_on_oom(
    p: &PodPatch,
    section: &str,
    err: &impl Fn(&str, String) -> PolicyError,
) -> Result<(), PolicyError> {
    let Some(m) = &p.memory_on_oom else {
        return Ok(());
    };
    if section == "all" {
        return Err(err(
            "/spec/all/memoryOnOOM",
            "memoryOnOOM is set per role: move it to `driver` or `executor` (each may have its own step and max)".into(),
        ));
    }
    crate::memory_on_oom::OomSettings::compile(m)
        .map(drop)
        .map_err(|e| {
            err(
                &format!("/spec/{section}/memoryOnOOM/{}", e.field),
                e.message,
            )
        })
}

fn check_spark_conf(
    p: &PodPatch,
    section: &str,
    err: &impl Fn(&str, String) -> PolicyError,
) -> Result<(), PolicyError> {
    if section == "executor" && !p.spark_conf.is_empty() {
        return Err(err(
            "/spec/executor/sparkConf",
            "sparkConf cannot be applied to executor pods: executors receive their whole Spark configuration from their driver, so it only works on the driver; move it to `driver` (or `all`) and use spark.executor.* keys for executor settings".into(),
        ));
    }
    for (key, value) in &p.spark_conf {
        let at = format!("/spec/{section}/sparkConf/{}", escape_pointer(key));
        if !key.starts_with("spark.") || key.len() == "spark.".len() {
            return Err(err(
                &at,
                format!("\"{key}\" is not a Spark configuration key: keys start with \"spark.\" (Hadoop settings are spark.hadoop.*)"),
            ));
        }
        // Spark's launcher splits SPARK_SUBMIT_OPTS on whitespace and cannot carry these
        // bytes through (a key is never quoted by Spark users either).
        if key
            .chars()
            .any(|c| c.is_whitespace() || c == '=' || c.is_control())
        {
            return Err(err(
                &at,
                format!("\"{key}\" contains whitespace, '=' or a control character, which a Spark configuration key cannot carry"),
            ));
        }
        if let Some(bad) = value.chars().find(|c| *c == '\0' || u32::from(*c) > 0xFFFF) {
            // The launcher reads SPARK_SUBMIT_OPTS one UTF-16 unit at a time and would
            // corrupt characters outside the Basic Multilingual Plane; NUL ends an env value.
            return Err(err(
                &at,
                format!("the value contains {bad:?} (U+{:04X}), which cannot reach Spark intact through SPARK_SUBMIT_OPTS", u32::from(bad)),
            ));
        }
    }
    Ok(())
}

/// Parses the variables of every value that may hold them. Values without variables are
/// stored unescaped; the others become [`Templated`] sites.
fn compile_patch(
    mut p: PodPatch,
    at: &str,
    err: &impl Fn(&str, String) -> PolicyError,
) -> Result<CompiledPatch, PolicyError> {
    let mut templated = Vec::new();
    let mut one = |value: &mut String, path: String, site: Site| -> Result<(), PolicyError> {
        match template::parse(value).map_err(|e| err(&path, e.to_string()))? {
            Parsed::Literal(text) => *value = text,
            Parsed::Template(template) => templated.push(Templated { site, template }),
        }
        Ok(())
    };
    for (field, map) in [
        ("labels", &mut p.labels),
        ("annotations", &mut p.annotations),
        ("sparkConf", &mut p.spark_conf),
    ] {
        for (key, value) in map.iter_mut() {
            let site = match field {
                "labels" => Site::Label(key.clone()),
                "annotations" => Site::Annotation(key.clone()),
                _ => Site::SparkConf(key.clone()),
            };
            one(value, format!("{at}/{field}/{}", escape_pointer(key)), site)?;
        }
    }
    for (i, var) in p.env.iter_mut().enumerate() {
        if let Some(value) = var.value.as_mut() {
            one(value, format!("{at}/env/{i}/value"), Site::Env(i))?;
        }
    }
    for (i, v) in p.volumes.iter_mut().enumerate() {
        let vol = &mut v.volume;
        if let Some(s) = vol.persistent_volume_claim.as_mut() {
            let path = format!("{at}/volumes/{i}/volume/persistentVolumeClaim/claimName");
            one(&mut s.claim_name, path, Site::ClaimName(i))?;
        }
        if let Some(name) = vol.config_map.as_mut().map(|s| &mut s.name) {
            let path = format!("{at}/volumes/{i}/volume/configMap/name");
            one(name, path, Site::ConfigMapName(i))?;
        }
        if let Some(name) = vol.secret.as_mut().and_then(|s| s.secret_name.as_mut()) {
            let path = format!("{at}/volumes/{i}/volume/secret/secretName");
            one(name, path, Site::SecretName(i))?;
        }
        if let Some(sub) = v.mount.as_mut().and_then(|m| m.sub_path.as_mut()) {
            one(
                sub,
                format!("{at}/volumes/{i}/mount/subPath"),
                Site::SubPath(i),
            )?;
        }
    }
    for (i, d) in p.dependencies.iter_mut().enumerate() {
        let base = format!("{at}/dependencies/{i}/source");
        let site = Site::DependencySource(i);
        match &mut d.source {
            DependencySource::PersistentVolumeClaim(s) => one(
                &mut s.claim_name,
                format!("{base}/persistentVolumeClaim/claimName"),
                site,
            )?,
            DependencySource::ConfigMap(s) => {
                one(&mut s.name, format!("{base}/configMap/name"), site)?
            }
            DependencySource::Secret(s) => {
                if let Some(name) = s.secret_name.as_mut() {
                    one(name, format!("{base}/secret/secretName"), site)?
                }
            }
            DependencySource::Image(_) | DependencySource::Download(_) => {}
        }
    }
    // Checked by check_patch before; a failure here cannot happen and then means "off".
    let oom = p
        .memory_on_oom
        .as_ref()
        .and_then(|m| crate::memory_on_oom::OomSettings::compile(m).ok());
    Ok(CompiledPatch {
        patch: p,
        templated,
        oom,
    })
}

fn check_quantities(
    v: &ResourceValues,
    at: &str,
    err: &impl Fn(&str, String) -> PolicyError,
) -> Result<(), PolicyError> {
    for (kind, map) in [("requests", &v.requests), ("limits", &v.limits)] {
        for (name, q) in map {
            if quantity::parse(&q.0).is_none_or(|x| x < 0.0) {
                return Err(err(
                    &format!("{at}/{kind}/{}", escape_pointer(name)),
                    format!(
                        "\"{}\" is not a Kubernetes quantity (examples: 500m, 2, 4Gi)",
                        q.0
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn compile_rules(
    r: &Rules,
    err: &impl Fn(&str, String) -> PolicyError,
) -> Result<CompiledRules, PolicyError> {
    let globs =
        |list: &Option<Vec<String>>, field: &str| -> Result<Option<Vec<Pattern>>, PolicyError> {
            list.as_ref()
                .map(|l| {
                    l.iter()
                        .enumerate()
                        .map(|(i, g)| {
                            Pattern::glob(g).map_err(|e| {
                                err(
                                    &format!("/spec/validate/{field}/{i}"),
                                    format!("not a valid glob: {e}"),
                                )
                            })
                        })
                        .collect()
                })
                .transpose()
        };
    if let Some(max) = &r.max_resources {
        for (role, v) in [("driver", &max.driver), ("executor", &max.executor)] {
            if let Some(v) = v {
                check_quantities(v, &format!("/spec/validate/maxResources/{role}"), err)?;
            }
        }
    }
    Ok(CompiledRules {
        rules: r.clone(),
        allowed_images: globs(&r.allowed_images, "allowedImages")?,
        allowed_service_accounts: globs(&r.allowed_service_accounts, "allowedServiceAccounts")?,
    })
}

fn escape_pointer(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

fn last_line(s: &str) -> &str {
    s.lines().last().unwrap_or(s)
}
