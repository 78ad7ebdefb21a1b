//! The benchmark policy set, shared by `benches/engine.rs` and the load
//! generator: `total` policies spread over 10,000 namespaces, of which (at most) 10 match
//! the namespace of the real fixtures, `spark-jobs`.
//!
//! The 10 matching policies are written like the examples in `policies/` (team defaults,
//! GPU and spot executors, dependency jars, security, image mirror, sidecars, guardrails),
//! so every merge concern of the engine runs. The others are the same ten templates bound
//! to other namespaces: they cost the same to compile and hold in memory as real ones.
//! Plain text only (no crate types), so this file compiles in any target that includes it.

/// The namespace of every real fixture (`request.namespace` of the AdmissionReviews).
pub const MATCHING_NAMESPACE: &str = "spark-jobs";
/// How many namespaces the non-matching policies are spread over.
pub const NAMESPACES: usize = 10_000;
/// How many policies match the fixtures' namespace when at least that many are loaded.
pub const MATCHING: usize = 10;

/// One YAML document per policy: the first `min(total, 10)` match `spark-jobs`.
pub fn documents(total: usize) -> Vec<String> {
    (0..total)
        .map(|i| {
            if i < MATCHING {
                let namespaces = match i {
                    // Exact names, globs and "*": the three lookups of the namespace index.
                    0..=5 => format!("[{MATCHING_NAMESPACE}]"),
                    6..=8 => "[\"spark-*\"]".to_owned(),
                    _ => "[\"*\"]".to_owned(),
                };
                template(i, &format!("bench-{i:05}"), &namespaces)
            } else {
                // Spread over ns-00000..ns-09999 by a stride coprime with 10,000; one in
                // ten is a glob covering ten namespaces, none of which is spark-jobs.
                let ns = (i * 7919) % NAMESPACES;
                let namespaces = if i % 10 == 0 {
                    format!("[\"ns-{:04}*\"]", ns / 10)
                } else {
                    format!("[ns-{ns:05}]")
                };
                template(i % MATCHING, &format!("bench-{i:05}"), &namespaces)
            }
        })
        .collect()
}

/// The policies as files of at most `per_file` documents each: `(file name, text)`.
pub fn files(total: usize, per_file: usize) -> Vec<(String, String)> {
    documents(total)
        .chunks(per_file.max(1))
        .enumerate()
        .map(|(i, docs)| (format!("bench-{i:04}.yaml"), docs.join("---\n")))
        .collect()
}

fn template(kind: usize, name: &str, namespaces: &str) -> String {
    let head = format!(
        "apiVersion: spark-admission.io/v1alpha1\nkind: SparkPodPolicy\nmetadata:\n  name: {name}\nspec:\n  namespaces: {namespaces}\n"
    );
    let body = match kind {
        0 => TEAM_DEFAULTS,
        1 => GPU_EXECUTORS,
        2 => DEPENDENCIES,
        3 => SPOT_EXECUTORS,
        4 => SECURITY,
        5 => IMAGE_MIRROR,
        6 => SIDECARS,
        7 => SCHEDULING,
        8 => COST_LABELS,
        _ => GUARDRAILS,
    };
    head + body
}

const TEAM_DEFAULTS: &str = r##"  priority: 10
  all:
    labels: {cost-center: data-platform}
    annotations: {example.com/support: "#data-platform"}
    imagePullSecrets: [corp-registry]
    nodeSelector: {node-pool: spark}
    env:
      - {name: TZ, value: UTC}
    volumes:
      - volume: {name: spark-scratch, emptyDir: {sizeLimit: 20Gi}}
        mount: {mountPath: /scratch/spark}
        containers: spark
  driver:
    priorityClassName: spark-driver
    resources:
      defaults:
        limits: {cpu: "2"}
"##;

const GPU_EXECUTORS: &str = r##"  priority: 50
  selector:
    roles: [executor]
    appName: "^(spark|client|pyspark)"
  executor:
    resources:
      force:
        limits: {nvidia.com/gpu: "1"}
    tolerations:
      - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}
    affinity:
      nodeAffinity:
        requiredDuringSchedulingIgnoredDuringExecution:
          nodeSelectorTerms:
            - matchExpressions:
                - {key: nvidia.com/gpu.present, operator: In, values: ["true"]}
    runtimeClassName: nvidia
"##;

const DEPENDENCIES: &str = r##"  priority: 40
  all:
    dependencies:
      - name: hadoop-aws
        source:
          download:
            urls:
              - https://repo1.maven.org/maven2/org/apache/hadoop/hadoop-aws/3.3.4/hadoop-aws-3.3.4.jar
              - https://repo1.maven.org/maven2/com/amazonaws/aws-java-sdk-bundle/1.12.262/aws-java-sdk-bundle-1.12.262.jar
      - name: team-python
        source:
          configMap: {name: team-python-helpers}
        mountPath: /opt/spark/deps/python
        jars: false
        python: true
    env:
      - {name: AWS_REGION, value: eu-west-1}
"##;

const SPOT_EXECUTORS: &str = r##"  priority: 30
  executor:
    tolerations:
      - {key: cloud.example.com/spot, operator: Equal, value: "true", effect: NoSchedule}
    affinity:
      nodeAffinity:
        preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            preference:
              matchExpressions:
                - {key: cloud.example.com/capacity-type, operator: In, values: [spot]}
  driver:
    affinity:
      nodeAffinity:
        requiredDuringSchedulingIgnoredDuringExecution:
          nodeSelectorTerms:
            - matchExpressions:
                - {key: cloud.example.com/capacity-type, operator: In, values: [on-demand]}
"##;

const SECURITY: &str = r##"  priority: 20
  all:
    podSecurityContext: {runAsNonRoot: true, runAsUser: 185, fsGroup: 185}
    securityContext:
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL]}
  validate:
    mode: enforce
    forbidPrivileged: true
    forbidHostNamespaces: true
    forbiddenVolumeTypes: [hostPath]
"##;

const IMAGE_MIRROR: &str = r##"  priority: 15
  all:
    image:
      rewrite:
        - {from: "apache/", to: "registry.example.com/mirror/apache/"}
      pullPolicy: IfNotPresent
"##;

const SIDECARS: &str = r##"  priority: 5
  selector:
    matchLabels: {spark-role: driver}
  driver:
    initContainers:
      - name: wait-for-metastore
        image: curlimages/curl:8.11.1
        args: ["--retry", "10", "--retry-connrefused", "http://metastore:9083"]
    sidecars:
      - name: log-shipper
        image: fluent/fluent-bit:3.1
        resources:
          requests: {cpu: 50m, memory: 64Mi}
          limits: {memory: 128Mi}
"##;

const SCHEDULING: &str = r##"  priority: 25
  all:
    terminationGracePeriodSeconds: 60
    topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: topology.kubernetes.io/zone
        whenUnsatisfiable: ScheduleAnyway
        labelSelector:
          matchLabels: {spark-role: executor}
    dnsConfig:
      options:
        - {name: ndots, value: "2"}
    hostAliases:
      - ip: 10.0.0.10
        hostnames: [metastore.internal]
    resources:
      defaults:
        requests: {ephemeral-storage: 1Gi}
        limits: {ephemeral-storage: 10Gi}
"##;

const COST_LABELS: &str = r##"  priority: 35
  selector:
    appName: "."
  all:
    labels: {platform.example.com/managed: "true", team: data}
    annotations: {platform.example.com/owner: data-platform}
    envFrom:
      - configMapRef: {name: spark-defaults-env}
"##;

const GUARDRAILS: &str = r##"  validate:
    mode: warn
    allowedImages: ["apache/spark:*", "registry.example.com/*", "curlimages/curl:*", "fluent/*"]
    maxResources:
      driver:
        requests: {cpu: "8", memory: 32Gi}
      executor:
        requests: {cpu: "16", memory: 128Gi}
  all:
    annotations: {platform.example.com/checked: "true"}
"##;
