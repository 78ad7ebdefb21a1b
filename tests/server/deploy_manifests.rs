//! `deploy/` against the types and the server it installs:
//!
//! - every YAML document under `deploy/` deserialises into its k8s-openapi type (or, for
//!   kustomize and cert-manager, a strict local type), and serialising it back keeps every
//!   field: a typo or a field in the wrong place fails here, not at `kubectl apply`;
//! - the webhook configurations, Service, Deployment, probes and RBAC agree with the
//!   router's paths, the `serve` flags the Deployment passes and the labels the code uses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use clap::Parser;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, RuleWithOperations, ValidatingWebhookConfiguration,
    WebhookClientConfig,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PodSpec, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tower::ServiceExt;

use spark_admission::admission::review::JUDGED_SUBRESOURCES;
use spark_admission::admission::{
    webhook_router, AppState, Limits, PolicySourceConfig, MUTATE_PATH, VALIDATE_PATH,
    VALIDATE_POLICY_PATH,
};
use spark_admission::cli::{Cli, Command, ServeArgs};
use spark_admission::engine::Engine;
use spark_admission::matching::PolicySet;
use spark_admission::metrics::Metrics;
use spark_admission::source::configmap::{is_policy_key, POLICY_LABEL, POLICY_LABEL_VALUE};
use spark_admission::source::PolicyStore;
use spark_admission::spark::{ContainerNames, ROLE_LABEL};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(p);
        }
    }
}

/// Every document of every YAML file under `dir`, with where it came from.
fn documents(dir: &Path) -> Vec<(String, Value)> {
    let mut files = Vec::new();
    yaml_files(dir, &mut files);
    assert!(!files.is_empty(), "no YAML under {}", dir.display());
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("{}: not YAML: {e}", f.display()));
        let rel = f.strip_prefix(deploy_dir()).unwrap().display().to_string();
        for (i, d) in docs.into_iter().enumerate().filter(|(_, d)| !d.is_null()) {
            out.push((format!("{rel}#{}", i + 1), d));
        }
    }
    out
}

/// Every field of `original` must come back from the typed object with the same value:
/// a field the type does not know is dropped on the way, and shows up here.
fn assert_kept(origin: &str, path: &str, original: &Value, back: &Value) {
    match (original, back) {
        (Value::Object(o), Value::Object(b)) => {
            for (k, v) in o {
                let p = format!("{path}/{k}");
                match b.get(k) {
                    Some(bv) => assert_kept(origin, &p, v, bv),
                    None => panic!("{origin}: {p}: unknown field (dropped by the typed object)"),
                }
            }
        }
        (Value::Array(o), Value::Array(b)) => {
            assert_eq!(o.len(), b.len(), "{origin}: {path}: list length changed");
            for (i, (ov, bv)) in o.iter().zip(b).enumerate() {
                assert_kept(origin, &format!("{path}/{i}"), ov, bv);
            }
        }
        _ => assert_eq!(original, back, "{origin}: {path}: value changed"),
    }
}

fn roundtrip<T: DeserializeOwned + Serialize>(origin: &str, doc: &Value) -> T {
    let typed: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{origin}: does not deserialise: {e}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_kept(origin, "", doc, &back);
    typed
}

// Strict local types for what k8s-openapi does not have.

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Kustomization {
    api_version: String,
    kind: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    secret_generator: Vec<SecretGenerator>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    replacements: Vec<Replacement>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    patches: Vec<KustomizePatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    config_map_generator: Vec<ConfigMapGenerator>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ConfigMapGenerator {
    name: String,
    namespace: String,
    files: Vec<String>,
    options: GeneratorOptions,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SecretGenerator {
    name: String,
    namespace: String,
    #[serde(rename = "type")]
    type_: String,
    files: Vec<String>,
    options: GeneratorOptions,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct GeneratorOptions {
    disable_name_suffix_hash: bool,
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Replacement {
    source: ReplacementSource,
    targets: Vec<ReplacementTarget>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ReplacementSource {
    kind: String,
    name: String,
    field_path: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ReplacementTarget {
    select: Selected,
    field_paths: Vec<String>,
    options: TargetOptions,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Selected {
    kind: String,
    name: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetOptions {
    create: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KustomizePatch {
    patch: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CertManagerObject<S> {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    spec: S,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct IssuerSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    self_signed: Option<BTreeMap<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ca: Option<CaIssuer>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CaIssuer {
    secret_name: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CertificateSpec {
    secret_name: String,
    #[serde(default, rename = "isCA", skip_serializing_if = "Option::is_none")]
    is_ca: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    common_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    dns_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    renew_before: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    private_key: Option<PrivateKey>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    usages: Vec<String>,
    issuer_ref: IssuerRef,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PrivateKey {
    algorithm: String,
    size: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rotation_policy: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IssuerRef {
    name: String,
    kind: String,
    group: String,
}

type Issuer = CertManagerObject<IssuerSpec>;
type Certificate = CertManagerObject<CertificateSpec>;

// prometheus-operator (deploy/monitoring/): the fields used, strictly.

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ServiceMonitorSpec {
    selector: LabelSelector,
    namespace_selector: NamespaceSelector,
    endpoints: Vec<MonitorEndpoint>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NamespaceSelector {
    match_names: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct MonitorEndpoint {
    port: String,
    path: String,
    interval: String,
    scrape_timeout: String,
}

/// A PrometheusRule's spec, and a plain Prometheus rules file alike.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleGroups {
    groups: Vec<RuleGroup>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    name: String,
    rules: Vec<AlertRule>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertRule {
    alert: String,
    expr: String,
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    for_: Option<String>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

type ServiceMonitor = CertManagerObject<ServiceMonitorSpec>;
type PrometheusRule = CertManagerObject<RuleGroups>;

/// Everything under `deploy/`, typed.
#[derive(Default)]
struct Manifests {
    namespaces: Vec<Namespace>,
    service_accounts: Vec<ServiceAccount>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    deployments: Vec<Deployment>,
    pdbs: Vec<PodDisruptionBudget>,
    services: Vec<Service>,
    mutating: Vec<MutatingWebhookConfiguration>,
    validating: Vec<ValidatingWebhookConfiguration>,
    configmaps: Vec<(String, ConfigMap)>,
    kustomizations: Vec<(String, Kustomization)>,
    issuers: Vec<Issuer>,
    certificates: Vec<Certificate>,
    service_monitors: Vec<ServiceMonitor>,
    prometheus_rules: Vec<PrometheusRule>,
    /// Plain Prometheus rules files (no apiVersion: `groups:` at the top).
    rule_files: Vec<(String, RuleGroups)>,
}

/// Everything under `deploy/`, parsed and round-tripped once for all the tests here.
fn manifests() -> &'static Manifests {
    static LOADED: OnceLock<Manifests> = OnceLock::new();
    LOADED.get_or_init(load)
}

fn load() -> Manifests {
    let mut m = Manifests::default();
    for (origin, doc) in documents(&deploy_dir()) {
        let api_version = doc["apiVersion"].as_str().unwrap_or_default().to_owned();
        let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
        let o = origin.as_str();
        match (api_version.as_str(), kind.as_str()) {
            ("v1", "Namespace") => m.namespaces.push(roundtrip(o, &doc)),
            ("v1", "ServiceAccount") => m.service_accounts.push(roundtrip(o, &doc)),
            ("v1", "Service") => m.services.push(roundtrip(o, &doc)),
            ("v1", "ConfigMap") => m.configmaps.push((origin.clone(), roundtrip(o, &doc))),
            ("rbac.authorization.k8s.io/v1", "Role") => m.roles.push(roundtrip(o, &doc)),
            ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
                m.role_bindings.push(roundtrip(o, &doc))
            }
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                m.cluster_roles.push(roundtrip(o, &doc))
            }
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                m.cluster_role_bindings.push(roundtrip(o, &doc))
            }
            ("apps/v1", "Deployment") => m.deployments.push(roundtrip(o, &doc)),
            ("policy/v1", "PodDisruptionBudget") => m.pdbs.push(roundtrip(o, &doc)),
            ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration") => {
                m.mutating.push(roundtrip(o, &doc))
            }
            ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration") => {
                m.validating.push(roundtrip(o, &doc))
            }
            ("kustomize.config.k8s.io/v1beta1", "Kustomization") => {
                m.kustomizations.push((origin.clone(), roundtrip(o, &doc)))
            }
            ("cert-manager.io/v1", "Issuer") => m.issuers.push(roundtrip(o, &doc)),
            ("cert-manager.io/v1", "Certificate") => m.certificates.push(roundtrip(o, &doc)),
            ("monitoring.coreos.com/v1", "ServiceMonitor") => {
                m.service_monitors.push(roundtrip(o, &doc))
            }
            ("monitoring.coreos.com/v1", "PrometheusRule") => {
                m.prometheus_rules.push(roundtrip(o, &doc))
            }
            ("", "") if doc.get("groups").is_some() => {
                m.rule_files.push((origin.clone(), roundtrip(o, &doc)))
            }
            other => panic!("{origin}: no type known for {other:?}; add it to this test"),
        }
    }
    m
}

impl Manifests {
    /// The webhook's own namespace.
    fn namespace(&self) -> String {
        one(&self.namespaces, "Namespace")
            .metadata
            .name
            .clone()
            .unwrap()
    }

    fn service(&self) -> &Service {
        one(&self.services, "Service")
    }

    fn deployment(&self) -> &Deployment {
        one(&self.deployments, "Deployment")
    }

    /// The cert-manager Certificate of the serving pair (the other one is the CA's).
    fn serving_certificate(&self) -> &Certificate {
        let serving: Vec<&Certificate> = self
            .certificates
            .iter()
            .filter(|c| c.spec.is_ca != Some(true))
            .collect();
        one::<&Certificate>(&serving, "serving Certificate")
    }

    fn ca_certificate(&self) -> &Certificate {
        let ca: Vec<&Certificate> = self
            .certificates
            .iter()
            .filter(|c| c.spec.is_ca == Some(true))
            .collect();
        one::<&Certificate>(&ca, "CA Certificate")
    }
}

fn one<'a, T>(items: &'a [T], what: &str) -> &'a T {
    assert_eq!(items.len(), 1, "expected exactly one {what}");
    &items[0]
}

fn labels(selector: &LabelSelector) -> BTreeMap<String, String> {
    selector.match_labels.clone().unwrap_or_default()
}

fn pod_spec(d: &Deployment) -> &PodSpec {
    d.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

fn container(d: &Deployment) -> &Container {
    one(&pod_spec(d).containers, "container")
}

fn container_port(c: &Container, name: &str) -> i32 {
    c.ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no container port named {name}"))
        .container_port
}

fn resolve_port(c: &Container, port: &IntOrString) -> i32 {
    match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => container_port(c, name),
    }
}

/// The `serve` flags of the Deployment, parsed by the real CLI.
fn serve_args(c: &Container) -> ServeArgs {
    let args = c.args.clone().unwrap_or_default();
    let argv = std::iter::once("spark-admission".to_owned()).chain(args);
    match Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("Deployment args: {e}")) {
        Cli {
            command: Command::Serve(a),
        } => a,
        _ => panic!("the Deployment does not run `serve`"),
    }
}

fn env_field_ref(c: &Container, name: &str) -> Option<String> {
    c.env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.clone())
}

#[test]
fn every_yaml_under_deploy_parses_into_its_type_without_unknown_fields() {
    let m = manifests();
    assert_eq!(m.namespaces.len(), 1);
    assert_eq!(m.deployments.len(), 1);
    assert_eq!(m.mutating.len(), 1);
    assert_eq!(m.validating.len(), 1);
    assert_eq!(m.kustomizations.len(), 4);
    assert_eq!(m.service_monitors.len(), 1);
    assert_eq!(m.prometheus_rules.len(), 1);
    assert_eq!(m.rule_files.len(), 1);
    assert_eq!(m.certificates.len(), 2);
    assert_eq!(m.issuers.len(), 2);
    assert!(!m.configmaps.is_empty());
}

#[test]
fn the_assert_kept_check_catches_a_misplaced_field() {
    let doc: Value = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": 443, "targetport": 8443}]}
    });
    let caught = std::panic::catch_unwind(|| roundtrip::<Service>("test", &doc));
    assert!(caught.is_err(), "targetport (lower case) must be reported");
}

#[test]
fn kustomizations_name_files_that_exist_and_wire_the_tls_secret() {
    let m = manifests();
    for (origin, k) in &m.kustomizations {
        let dir = deploy_dir().join(
            Path::new(origin.split('#').next().unwrap())
                .parent()
                .unwrap(),
        );
        for r in &k.resources {
            assert!(dir.join(r).exists(), "{origin}: resource {r} not found");
        }
        for g in &k.config_map_generator {
            for f in &g.files {
                let file = f.split_once('=').map_or(f.as_str(), |(_, file)| file);
                assert!(dir.join(file).exists(), "{origin}: file {file} not found");
            }
        }
        for p in &k.patches {
            let patch: Value = serde_saphyr::from_str(&p.patch).unwrap();
            let annotation = &patch["metadata"]["annotations"]["cert-manager.io/inject-ca-from"];
            let cert = m.serving_certificate();
            let expected = format!(
                "{}/{}",
                cert.metadata.namespace.as_deref().unwrap(),
                cert.metadata.name.as_deref().unwrap()
            );
            assert_eq!(annotation.as_str(), Some(expected.as_str()), "{origin}");
            assert_eq!(patch["metadata"]["name"], "spark-admission");
        }
    }
    // The default install: the Secret from `spark-admission certs` output, its ca.crt as
    // the caBundle of every webhook.
    let (_, top) = m
        .kustomizations
        .iter()
        .find(|(o, _)| o == "kustomization.yaml#1")
        .unwrap();
    assert_eq!(top.resources, ["base"]);
    let gen = one(&top.secret_generator, "secretGenerator");
    let volume_secret = {
        let v = one(
            pod_spec(m.deployment()).volumes.as_deref().unwrap(),
            "volume",
        );
        v.secret.as_ref().unwrap().secret_name.clone().unwrap()
    };
    assert_eq!(gen.name, volume_secret);
    assert!(gen.options.disable_name_suffix_hash);
    let mut keys: Vec<&str> = gen
        .files
        .iter()
        .map(|f| f.split_once('=').unwrap().0)
        .collect();
    keys.sort();
    assert_eq!(keys, ["ca.crt", "tls.crt", "tls.key"]);
    let r = one(&top.replacements, "replacement");
    assert_eq!(r.source.name, gen.name);
    assert_eq!(r.source.field_path, "data.ca\\.crt");
    let mut kinds: Vec<&str> = r.targets.iter().map(|t| t.select.kind.as_str()).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration"
        ]
    );
    for t in &r.targets {
        assert_eq!(t.field_paths, ["webhooks.*.clientConfig.caBundle"]);
    }
    // cert-manager writes the same Secret the Deployment mounts.
    let serving = m.serving_certificate();
    assert_eq!(serving.spec.secret_name, volume_secret);
    let service = m.service();
    let svc_dns = format!(
        "{}.{}.svc",
        service.metadata.name.as_deref().unwrap(),
        service.metadata.namespace.as_deref().unwrap()
    );
    assert!(serving.spec.dns_names.contains(&svc_dns));
    // Each issuerRef names an Issuer of the overlay; the CA Issuer reads the CA's Secret.
    for c in &m.certificates {
        assert!(m
            .issuers
            .iter()
            .any(|i| i.metadata.name.as_ref() == Some(&c.spec.issuer_ref.name)));
    }
    let ca_cert = m.ca_certificate();
    let ca_issuer = m.issuers.iter().find(|i| i.spec.ca.is_some()).unwrap();
    assert_eq!(
        ca_issuer.spec.ca.as_ref().unwrap().secret_name,
        ca_cert.spec.secret_name
    );
    assert_eq!(
        serving.spec.issuer_ref.name,
        ca_issuer.metadata.name.clone().unwrap()
    );
}

#[test]
fn the_deployment_runs_serve_with_the_ports_probes_and_certificates_the_manifests_use() {
    let m = manifests();
    let ns = m.namespace();
    let d = m.deployment();
    let spec = d.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod_labels = spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    assert_eq!(labels(&spec.selector), pod_labels);
    let pod = pod_spec(d);
    let c = container(d);
    let args = serve_args(c);

    // The webhook port: Service 443 -> targetPort -> container port -> --listen.
    let service = m.service();
    let svc_spec = service.spec.as_ref().unwrap();
    assert_eq!(svc_spec.selector.clone().unwrap(), pod_labels);
    let webhook_port = svc_spec
        .ports
        .iter()
        .flatten()
        .find(|p| p.port == 443)
        .expect("Service port 443");
    let target = resolve_port(c, webhook_port.target_port.as_ref().unwrap());
    assert_eq!(target, i32::from(args.listen.port()));
    assert_eq!(target, container_port(c, "webhook"));

    // Probes on the admin port: /healthz and /readyz exist there.
    let admin_port = i32::from(args.admin_listen.port());
    let readiness = c
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(readiness.path.as_deref(), Some("/readyz"));
    assert_eq!(resolve_port(c, &readiness.port), admin_port);
    let liveness = c
        .liveness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(liveness.path.as_deref(), Some("/healthz"));
    assert_eq!(resolve_port(c, &liveness.port), admin_port);

    // Certificates: the Secret's directory, never generated per replica.
    assert!(
        !args.generate_certs,
        "replicas must not generate their own certificates"
    );
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|v| Path::new(&v.mount_path) == args.certs_dir)
        .expect("a volume mounted at --certs-dir");
    assert!(
        mount.sub_path.is_none(),
        "a subPath mount never sees renewals"
    );
    assert_eq!(mount.read_only, Some(true));
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .unwrap();
    assert!(volume.secret.is_some());

    // Policies: ConfigMaps of the pod's own namespace, through the downward API.
    assert_eq!(
        env_field_ref(c, spark_admission::admission::POD_NAMESPACE_ENV).as_deref(),
        Some("metadata.namespace")
    );
    assert_eq!(
        env_field_ref(c, spark_admission::admission::POD_NAME_ENV).as_deref(),
        Some("metadata.name")
    );
    assert_eq!(
        env_field_ref(c, spark_admission::admission::POD_UID_ENV).as_deref(),
        Some("metadata.uid")
    );

    // Why the webhook crashed reaches `kubectl describe pod`: its last log line.
    assert_eq!(
        c.termination_message_policy.as_deref(),
        Some("FallbackToLogsOnError")
    );
    assert_eq!(
        args.log_format,
        spark_admission::cli::LogFormat::Json,
        "the last line is JSON only with JSON logs"
    );
    // Both ports dual-stack: probes and the Service work on IPv6-only clusters too.
    for (flag, addr) in [
        ("--listen", args.listen),
        ("--admin-listen", args.admin_listen),
    ] {
        assert!(
            addr.is_ipv6() && addr.ip().is_unspecified(),
            "{flag}={addr}: use [::] (dual-stack); 0.0.0.0 is IPv4 only"
        );
    }
    let pod_ns = d.metadata.namespace.clone().unwrap();
    assert_eq!(pod_ns, ns);
    assert_eq!(
        args.to_config_in(Some(&pod_ns)).policy_source,
        PolicySourceConfig::ConfigMaps {
            namespace: ns.clone()
        }
    );

    // The drain fits in the grace period: preStop sleep, then --shutdown-grace.
    let pre_stop = c
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .and_then(|p| p.sleep.as_ref())
        .expect("a preStop sleep")
        .seconds;
    assert!(pre_stop > 0);
    let grace = pod.termination_grace_period_seconds.unwrap();
    assert!(
        grace as f64 > pre_stop as f64 + args.limits.shutdown_grace.as_secs_f64(),
        "terminationGracePeriodSeconds {grace} must exceed preStop {pre_stop}s + --shutdown-grace"
    );

    // Restricted pod security.
    let psc = pod.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(
        psc.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_owned()][..])
    );
    let resources = c.resources.as_ref().unwrap();
    assert!(resources.requests.is_some() && resources.limits.is_some());
    // The Dockerfile's user is the one the pod runs as.
    let dockerfile =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile")).unwrap();
    let uid = psc.run_as_user.unwrap();
    assert!(
        dockerfile.contains(&format!("USER {uid}:")),
        "Dockerfile USER {uid}"
    );
    let image = c.image.as_deref().unwrap();
    assert!(
        dockerfile.contains(&format!("docker build -t {image} .")),
        "the Dockerfile documents building {image}"
    );

    // Two replicas spread out, one always kept by the budget.
    assert!(pod.affinity.as_ref().unwrap().pod_anti_affinity.is_some());
    assert!(pod.topology_spread_constraints.is_some());
    let pdb = one(&m.pdbs, "PodDisruptionBudget").spec.as_ref().unwrap();
    assert_eq!(labels(pdb.selector.as_ref().unwrap()), pod_labels);
    assert_eq!(pdb.min_available, Some(IntOrString::Int(1)));
}

#[test]
fn rbac_grants_only_what_the_watcher_events_history_and_driver_cache_use() {
    let m = manifests();
    let ns = m.namespace();
    let role = one(&m.roles, "Role");
    assert_eq!(role.metadata.namespace.as_deref(), Some(ns.as_str()));
    let rules = role.rules.clone().unwrap();
    let grants: Vec<(Vec<String>, Vec<String>, Vec<String>)> = rules
        .into_iter()
        .map(|r| {
            (
                r.api_groups.unwrap_or_default(),
                r.resources.unwrap_or_default(),
                r.verbs,
            )
        })
        .collect();
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        grants,
        [
            (s(&[""]), s(&["configmaps"]), s(&["get", "list", "watch"])),
            (s(&[""]), s(&["configmaps"]), s(&["update"])),
            (s(&[""]), s(&["configmaps"]), s(&["update"])),
            (s(&[""]), s(&["configmaps"]), s(&["create"])),
            (s(&["events.k8s.io"]), s(&["events"]), s(&["create"])),
        ]
    );
    let binding = one(&m.role_bindings, "RoleBinding");
    assert_eq!(binding.role_ref.name, role.metadata.name.clone().unwrap());
    // Cluster-wide, only reading pods: the driver cache that verifies job pins (a watch
    // by label selector and a GET on a miss; src/source/drivers.rs).
    let named = |name: &str| {
        m.cluster_roles
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("ClusterRole {name}"))
    };
    assert_eq!(m.cluster_roles.len(), 2, "two ClusterRoles");
    let cluster_role = named("spark-admission-driver-reader");
    type Grant = (Vec<String>, Vec<String>, Vec<String>, Option<Vec<String>>);
    let cluster_grants: Vec<Grant> = cluster_role
        .rules
        .clone()
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.api_groups.unwrap_or_default(),
                r.resources.unwrap_or_default(),
                r.verbs,
                r.resource_names,
            )
        })
        .collect();
    assert_eq!(
        cluster_grants,
        [(s(&[""]), s(&["pods"]), s(&["get", "list", "watch"]), None)]
    );
    assert_eq!(
        spark_admission::source::drivers::DRIVER_SELECTOR,
        "spark-role=driver"
    );
    // The other one only creates Events (events.k8s.io), on raised pods (memoryOnOOM).
    let raise_events = named("spark-admission-raise-events");
    let event_grants: Vec<Grant> = raise_events
        .rules
        .clone()
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.api_groups.unwrap_or_default(),
                r.resources.unwrap_or_default(),
                r.verbs,
                r.resource_names,
            )
        })
        .collect();
    assert_eq!(
        event_grants,
        [(s(&["events.k8s.io"]), s(&["events"]), s(&["create"]), None)]
    );
    assert_eq!(m.cluster_role_bindings.len(), 2);
    for b in &m.cluster_role_bindings {
        let subject = one(b.subjects.as_deref().unwrap(), "ClusterRoleBinding subject");
        assert_eq!(subject.name, "spark-admission");
        assert_eq!(b.role_ref.name, b.metadata.name.clone().unwrap());
    }
    let cluster_binding = m
        .cluster_role_bindings
        .iter()
        .find(|b| b.role_ref.name == "spark-admission-driver-reader")
        .unwrap();
    assert_eq!(cluster_binding.role_ref.kind, "ClusterRole");
    assert_eq!(
        cluster_binding.role_ref.name,
        cluster_role.metadata.name.clone().unwrap()
    );
    let cluster_subject = one(
        cluster_binding.subjects.as_deref().unwrap(),
        "ClusterRoleBinding subject",
    );
    let sa = one(&m.service_accounts, "ServiceAccount");
    assert_eq!(cluster_subject.kind, "ServiceAccount");
    assert_eq!(cluster_subject.name, sa.metadata.name.clone().unwrap());
    assert_eq!(cluster_subject.namespace.as_deref(), Some(ns.as_str()));
    let subject = one(binding.subjects.as_deref().unwrap(), "subject");
    assert_eq!(subject.kind, "ServiceAccount");
    assert_eq!(subject.name, sa.metadata.name.clone().unwrap());
    assert_eq!(subject.namespace.as_deref(), Some(ns.as_str()));
    assert_eq!(
        pod_spec(m.deployment()).service_account_name,
        sa.metadata.name
    );
    // Every namespaced object lives in the webhook's namespace.
    for meta in m
        .roles
        .iter()
        .map(|r| &r.metadata)
        .chain(m.role_bindings.iter().map(|r| &r.metadata))
        .chain(m.services.iter().map(|r| &r.metadata))
        .chain(m.pdbs.iter().map(|r| &r.metadata))
        .chain(m.service_accounts.iter().map(|r| &r.metadata))
        .chain(m.configmaps.iter().map(|(_, r)| &r.metadata))
    {
        assert_eq!(
            meta.namespace.as_deref(),
            Some(ns.as_str()),
            "{:?}",
            meta.name
        );
    }
}

/// An UPDATE review of a Spark pod (or of its subresource `sub`) with no `oldObject`.
fn update_without_old_object(sub: Option<&str>) -> String {
    let sub = sub.map_or(String::new(), |s| format!(r#""subResource":"{s}","#));
    format!(
        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u","kind":{{"group":"","version":"v1","kind":"Pod"}},"resource":{{"group":"","version":"v1","resource":"pods"}},{sub}"namespace":"team-a","operation":"UPDATE","userInfo":{{}},"object":{{"metadata":{{"labels":{{"spark-role":"driver"}}}},"spec":{{"containers":[]}}}}}}}}"#
    )
}

fn router_status(path: &str) -> StatusCode {
    router_review_status(path, "{}")
}

fn router_review_status(path: &str, body: &str) -> StatusCode {
    let store = Arc::new(PolicyStore::new());
    store.install(PolicySet::default());
    let state = Arc::new(AppState::new(
        Engine::new(ContainerNames::default()),
        store,
        Arc::new(Metrics::new()),
        Limits::default(),
    ));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let req = Request::post(path)
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap();
        webhook_router(state).oneshot(req).await.unwrap().status()
    })
}

fn check_client(config: &WebhookClientConfig, service: &Service, path: &str) {
    let s = config.service.as_ref().expect("a Service reference");
    assert_eq!(Some(&s.name), service.metadata.name.as_ref());
    assert_eq!(Some(&s.namespace), service.metadata.namespace.as_ref());
    assert_eq!(s.port, Some(443));
    assert_eq!(s.path.as_deref(), Some(path));
    assert!(config.url.is_none());
    // The path is served by the router: a body that is not a review gets 400, not 404.
    assert_eq!(router_status(path), StatusCode::BAD_REQUEST, "{path}");
}

fn check_rules(rules: &Option<Vec<RuleWithOperations>>, resources: &[&str], ops: &[&str]) {
    let rule = one(rules.as_deref().unwrap(), "rule");
    assert_eq!(rule.api_groups.as_deref(), Some(&["".to_owned()][..]));
    assert_eq!(rule.api_versions.as_deref(), Some(&["v1".to_owned()][..]));
    let resources: Vec<String> = resources.iter().map(|r| (*r).to_owned()).collect();
    assert_eq!(rule.resources.as_deref(), Some(&resources[..]));
    let ops: Vec<String> = ops.iter().map(|o| (*o).to_owned()).collect();
    assert_eq!(rule.operations.as_deref(), Some(&ops[..]));
    assert_eq!(rule.scope.as_deref(), Some("Namespaced"));
}

fn spark_pod_selectors(object: &LabelSelector, namespace: &LabelSelector, own_ns: &str) {
    let e = one(
        object.match_expressions.as_deref().unwrap(),
        "objectSelector term",
    );
    assert_eq!(e.key, ROLE_LABEL);
    assert_eq!(e.operator, "In");
    assert_eq!(
        e.values.as_deref(),
        Some(&["driver".to_owned(), "executor".to_owned()][..])
    );
    let n = one(
        namespace.match_expressions.as_deref().unwrap(),
        "namespaceSelector term",
    );
    assert_eq!(n.key, "kubernetes.io/metadata.name");
    assert_eq!(n.operator, "NotIn");
    let values = n.values.clone().unwrap();
    assert!(values.contains(&"kube-system".to_owned()));
    assert!(
        values.contains(&own_ns.to_owned()),
        "the webhook must never gate its own pods"
    );
}

/// What the mutating and the validating pod webhook must both say. A macro because their
/// k8s-openapi types differ while these fields are the same.
macro_rules! check_pod_webhook {
    ($w:expr, $service:expr, $path:expr, $own_ns:expr, $resources:expr, $ops:expr) => {{
        let w = $w;
        assert_eq!(w.admission_review_versions, ["v1"], "{}", $path);
        assert_eq!(w.side_effects, "None", "{}", $path);
        assert_eq!(w.timeout_seconds, Some(5), "{}", $path);
        assert_eq!(w.failure_policy.as_deref(), Some("Fail"), "{}", $path);
        assert_eq!(w.match_policy.as_deref(), Some("Equivalent"), "{}", $path);
        check_client(&w.client_config, $service, $path);
        check_rules(&w.rules, $resources, $ops);
        spark_pod_selectors(
            w.object_selector.as_ref().unwrap(),
            w.namespace_selector.as_ref().unwrap(),
            $own_ns,
        );
    }};
}

#[test]
fn webhook_configurations_match_the_router_the_service_and_the_labels() {
    let m = manifests();
    let ns = m.namespace();
    let service = m.service();
    // The API server's timeout leaves the server a deadline inside it (80%).
    let five = std::time::Duration::from_secs(5);
    assert!(Limits::default().budget(Some("timeout=5s")) < five);

    let mutating = one(
        one(&m.mutating, "mutating").webhooks.as_deref().unwrap(),
        "webhook",
    );
    // Mutation is CREATE-only: a running pod is never patched.
    check_pod_webhook!(mutating, service, MUTATE_PATH, &ns, &["pods"], &["CREATE"]);
    assert_eq!(mutating.reinvocation_policy.as_deref(), Some("IfNeeded"));

    let validating = one(&m.validating, "validating")
        .webhooks
        .as_deref()
        .unwrap();
    assert_eq!(validating.len(), 3);
    let for_operation = |op: &str| {
        let found: Vec<_> = validating
            .iter()
            .filter(|w| {
                w.rules
                    .iter()
                    .flatten()
                    .any(|r| r.operations.iter().flatten().any(|o| o == op))
                    && w.client_config.service.as_ref().unwrap().path.as_deref()
                        == Some(VALIDATE_PATH)
            })
            .collect();
        *one(&found, op)
    };
    check_pod_webhook!(
        for_operation("CREATE"),
        service,
        VALIDATE_PATH,
        &ns,
        &["pods"],
        &["CREATE"]
    );
    // Every UPDATE that can change what a Spark pod runs, and exactly the subresources the
    // review path judges (the rest of a pod's subresources, status first, are not sent).
    let mut judged = vec!["pods".to_owned()];
    judged.extend(JUDGED_SUBRESOURCES.iter().map(|s| format!("pods/{s}")));
    let judged: Vec<&str> = judged.iter().map(String::as_str).collect();
    let updates = for_operation("UPDATE");
    check_pod_webhook!(updates, service, VALIDATE_PATH, &ns, &judged, &["UPDATE"]);
    // Each resource of the rule is judged by the router: an UPDATE of it without
    // oldObject is refused as malformed (a pass-through would be allowed).
    for resource in &judged {
        let sub = resource.strip_prefix("pods/");
        assert_eq!(
            router_review_status(VALIDATE_PATH, &update_without_old_object(sub)),
            StatusCode::BAD_REQUEST,
            "{resource}"
        );
    }
    assert_eq!(
        router_review_status(VALIDATE_PATH, &update_without_old_object(Some("status"))),
        StatusCode::OK,
        "pods/status is passed through"
    );

    let policies = validating
        .iter()
        .find(|w| {
            w.client_config.service.as_ref().unwrap().path.as_deref() == Some(VALIDATE_POLICY_PATH)
        })
        .expect("a validating webhook for policy ConfigMaps");
    assert_eq!(policies.admission_review_versions, ["v1"]);
    assert_eq!(policies.side_effects, "None");
    // Ignore: a fix must be appliable while every replica is unready.
    assert_eq!(policies.failure_policy.as_deref(), Some("Ignore"));
    check_client(&policies.client_config, service, VALIDATE_POLICY_PATH);
    check_rules(&policies.rules, &["configmaps"], &["CREATE", "UPDATE"]);
    assert_eq!(
        labels(policies.object_selector.as_ref().unwrap()),
        BTreeMap::from([(POLICY_LABEL.to_owned(), POLICY_LABEL_VALUE.to_owned())])
    );
    assert_eq!(
        labels(policies.namespace_selector.as_ref().unwrap()),
        BTreeMap::from([("kubernetes.io/metadata.name".to_owned(), ns.clone())])
    );
    // Webhook names are unique, fully qualified.
    let mut names: Vec<&str> = validating.iter().map(|w| w.name.as_str()).collect();
    names.push(mutating.name.as_str());
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 4);
    assert!(names.iter().all(|n| n.ends_with(".spark-admission.io")));
}

#[test]
fn the_example_policy_configmap_is_labelled_and_every_key_is_a_valid_policy() {
    let m = manifests();
    let ns = m.namespace();
    let (origin, cm) = m
        .configmaps
        .iter()
        .find(|(o, _)| o.starts_with("examples/"))
        .expect("an example policy ConfigMap");
    assert!(
        spark_admission::source::configmap::has_policy_label(cm),
        "{origin}"
    );
    assert_eq!(cm.metadata.namespace.as_deref(), Some(ns.as_str()));
    let data = cm.data.clone().unwrap();
    assert!(data.keys().all(|k| is_policy_key(k)));
    let name = cm.metadata.name.clone().unwrap();
    let checked =
        spark_admission::admission::policy_review::check(cm, &ns, &name, &PolicySet::default());
    assert!(checked.errors.is_empty(), "{origin}: {:?}", checked.errors);
    assert!(
        checked.warnings.is_empty(),
        "{origin}: {:?}",
        checked.warnings
    );
    assert_eq!(checked.policies.len(), data.len());
}

#[test]
fn monitoring_scrapes_the_admin_port_and_selects_the_job_the_rules_and_dashboard_use() {
    let m = manifests();
    let ns = m.namespace();
    let service = m.service();
    let sm = one(&m.service_monitors, "ServiceMonitor");
    assert_eq!(sm.metadata.namespace.as_deref(), Some(ns.as_str()));
    assert_eq!(
        sm.spec.namespace_selector.match_names,
        std::slice::from_ref(&ns)
    );
    let svc_labels = service.metadata.labels.clone().unwrap();
    for (k, v) in labels(&sm.spec.selector) {
        assert_eq!(
            svc_labels.get(&k),
            Some(&v),
            "the ServiceMonitor selects the Service"
        );
    }
    // The endpoint is the Service port that reaches --admin-listen, where /metrics is.
    let endpoint = one(&sm.spec.endpoints, "ServiceMonitor endpoint");
    assert_eq!(endpoint.path, "/metrics");
    let c = container(m.deployment());
    let port = service
        .spec
        .as_ref()
        .unwrap()
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(endpoint.port.as_str()))
        .expect("a Service port named as the ServiceMonitor's");
    assert_eq!(
        resolve_port(c, port.target_port.as_ref().unwrap()),
        i32::from(serve_args(c).admin_listen.port())
    );
    // prometheus-operator names the job after the Service; every alert selects that job.
    let job = format!("job=\"{}\"", service.metadata.name.as_deref().unwrap());
    let (_, plain) = one(&m.rule_files, "rules file");
    for group in &plain.groups {
        for rule in &group.rules {
            assert!(rule.expr.contains(&job), "{}: selects {job}", rule.alert);
        }
    }
    let dashboard =
        std::fs::read_to_string(deploy_dir().join("monitoring/grafana-dashboard.json")).unwrap();
    assert!(dashboard.contains(&job.replace('"', "\\\"")));
    // The PrometheusRule is the plain file, rule for rule.
    let rule = one(&m.prometheus_rules, "PrometheusRule");
    assert_eq!(
        serde_json::to_value(&rule.spec).unwrap(),
        serde_json::to_value(plain).unwrap()
    );
    // The dashboard ConfigMap is labelled for the Grafana sidecar.
    let (_, k) = m
        .kustomizations
        .iter()
        .find(|(o, _)| o == "monitoring/kustomization.yaml#1")
        .unwrap();
    let g = one(&k.config_map_generator, "configMapGenerator");
    assert_eq!(
        g.options
            .labels
            .get("grafana_dashboard")
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(g.namespace, ns);
}

#[test]
fn the_role_lets_the_webhook_update_every_memory_state_shard() {
    let m = manifests();
    // The memory state ConfigMaps the Role lets the webhook update: every shard the
    // default configuration writes.
    let role = one(&m.roles, "Role");
    let names: Vec<String> = role
        .rules
        .clone()
        .unwrap()
        .into_iter()
        .flat_map(|r| r.resource_names.unwrap_or_default())
        .collect();
    for i in 0..spark_admission::memory::MemoryConfig::default().shards {
        let shard = spark_admission::memory::MemoryState::shard_name(i);
        assert!(names.contains(&shard), "{shard} missing from the Role");
    }
    // And every ConfigMap of the policy version history, as spread by default.
    for i in 0..spark_admission::source::history::DEFAULT_CONFIGMAPS {
        let part = spark_admission::source::history::shard_name(i);
        assert!(names.contains(&part), "{part} missing from the Role");
    }
}
