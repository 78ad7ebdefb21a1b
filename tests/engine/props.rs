//! Property tests: generated policies x the real Spark fixtures (with random changes).
//! For every combination the patch applies to the JSON as received, the result is a Pod,
//! a second pass is empty, and pods without a spark-role label are never touched.
//! `PROPTEST_CASES=2000 cargo test --test engine props` runs a longer search.

use crate::engine_support;

use engine_support::*;
use proptest::prelude::*;
use serde_json::{json, Value};
use spark_admission::engine::{submit_opts_tokens, Engine, MutateRequest, SUBMIT_OPTS_VAR};

fn pick<T: Clone + std::fmt::Debug + 'static>(items: &'static [T]) -> impl Strategy<Value = T> {
    proptest::sample::select(items)
}

// Pools chosen to collide with what the real fixtures already carry.
const LABEL_KEYS: &[&str] = &["team", "cost-center", "from-template", "example.com/a.b"];
const VALUES: &[&str] = &["x", "data-eng", "y-1"];
/// For fields that take variables: plain, each variable, the escape.
const TEMPLATED: &[&str] = &[
    "x",
    "data-eng",
    "${namespace}",
    "${app.name}",
    "${app.id}",
    "run-${role}",
    "$${x}",
];
const SPARK_KEYS: &[&str] = &[
    "spark.eventLog.dir",
    "spark.a",
    "spark.kubernetes.executor.annotation.example.com/x",
    "spark.hadoop.fs.s3a.endpoint",
];
/// Values Spark's launcher must get back byte for byte, with and without variables.
const SPARK_VALUES: &[&str] = &[
    "x",
    "mine",
    "it's \"q\" $HOME \\ a  b",
    "s3a://events/${namespace}/${app.id}",
    "${app.name}-${role}",
    "$${env:X}",
    "$$ and $(SPARK_USER)",
];
/// What a submitter may already have in SPARK_SUBMIT_OPTS.
const SUBMIT_OPTS: &[&str] = &[
    "-Dfoo.bar=x",
    "-Dspark.a=mine '-Dspark.b=x y'",
    "-XX:+UseG1GC ",
];
const ENV_NAMES: &[&str] = &[
    "MY_DRIVER_ENV",
    "SPARK_USER",
    "TZ",
    "SPARK_EXTRA_CLASSPATH",
    "PYTHONPATH",
    "SPARK_SUBMIT_OPTS",
];
const VOLUME_NAMES: &[&str] = &[
    "data",
    "scratch",
    "spark-local-dir-1",
    "cache",
    "spark-deps-aws",
];
const MOUNT_PATHS: &[&str] = &["/data", "/scratch", "/cache", "/opt/spark/conf", "/opt/x"];
const QUANTITIES: &[&str] = &["500m", "1", "4", "1Gi", "64Gi"];
const RESOURCES: &[&str] = &["cpu", "memory", "ephemeral-storage", "nvidia.com/gpu"];
const NODE_KEYS: &[&str] = &["zone", "arch", "pool"];
const FIXTURES: &[&str] = &[
    "admission/mutate-driver-rich",
    "admission/mutate-driver-pyspark-pi",
    "admission/mutate-executor-rich-1",
    "admission/mutate-executor-client-extra",
    "spark/driver-scala-sparkpi",
    "spark/executor-client-1",
];

/// Annotations: any value. Labels: values a label can have once rendered (not the escape,
/// whose literal `${x}` is no label value and refused at load).
fn string_map(labels: bool) -> impl Strategy<Value = Value> {
    let values = pick(TEMPLATED).prop_filter("a label value", move |v| !labels || *v != "$${x}");
    proptest::collection::btree_map(pick(LABEL_KEYS), values, 0..3).prop_map(|m| json!(m))
}

fn spark_conf() -> impl Strategy<Value = Value> {
    proptest::collection::btree_map(pick(SPARK_KEYS), pick(SPARK_VALUES), 0..4)
        .prop_map(|m| json!(m))
}

fn ports() -> impl Strategy<Value = Value> {
    proptest::collection::vec(
        pick(&[
            ("spark-ui", 4040),
            ("jmx", 9404),
            ("metrics", 7078),
            ("jmx", 9405),
        ]),
        0..3,
    )
    .prop_map(|ps| {
        json!(ps
            .into_iter()
            .map(|(n, p)| json!({"name": n, "containerPort": p}))
            .collect::<Vec<_>>())
    })
}

fn toleration() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(
            json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300})
        ),
        Just(json!({"key": "spot", "operator": "Exists", "effect": "NoSchedule"})),
        pick(VALUES).prop_map(
            |v| json!({"key": "dedicated", "operator": "Equal", "value": v, "effect": "NoSchedule"})
        ),
    ]
}

fn volume() -> impl Strategy<Value = Value> {
    (
        pick(VOLUME_NAMES),
        any::<bool>(),
        proptest::option::of(pick(MOUNT_PATHS)),
        any::<bool>(),
    )
        .prop_map(|(name, empty_dir, mount, all)| {
            let mut v =
                json!({"volume": {"name": name}, "containers": if all { "all" } else { "spark" }});
            v["volume"][if empty_dir { "emptyDir" } else { "configMap" }] = if empty_dir {
                json!({})
            } else {
                json!({"name": format!("{name}-${{app.name}}")})
            };
            if let Some(p) = mount {
                v["mount"] = json!({"mountPath": p});
            }
            v
        })
}

fn dependency() -> impl Strategy<Value = Value> {
    (pick(&["aws", "py", "jdbc"]), 0..3u8, any::<bool>(), any::<bool>()).prop_map(|(name, kind, jars, python)| {
        let source = match kind {
            0 => json!({"persistentVolumeClaim": {"claimName": "jars"}}),
            1 => json!({"download": {"urls": [format!("https://repo.example.com/{name}/lib.jar")]}}),
            _ => json!({"configMap": {"name": name}}),
        };
        json!({"name": name, "source": source, "jars": jars || !python, "python": python})
    })
}

fn resources() -> impl Strategy<Value = Value> {
    let values = || {
        (
            proptest::collection::btree_map(pick(RESOURCES), pick(QUANTITIES), 0..3),
            proptest::collection::btree_map(pick(RESOURCES), pick(QUANTITIES), 0..3),
        )
            .prop_map(|(r, l)| json!({"requests": r, "limits": l}))
    };
    (
        proptest::option::of(values()),
        proptest::option::of(values()),
    )
        .prop_map(|(d, f)| {
            let mut v = json!({});
            if let Some(d) = d {
                v["defaults"] = d;
            }
            if let Some(f) = f {
                v["force"] = f;
            }
            v
        })
}

fn node_term() -> impl Strategy<Value = Value> {
    proptest::collection::vec((pick(NODE_KEYS), pick(VALUES)), 1..3).prop_map(|exprs| {
        json!({"matchExpressions": exprs.into_iter().map(|(k, v)| json!({"key": k, "operator": "In", "values": [v]})).collect::<Vec<_>>()})
    })
}

fn pod_patch() -> impl Strategy<Value = Value> {
    (
        (any::<bool>(), string_map(true), string_map(false), proptest::collection::btree_map(pick(NODE_KEYS), pick(VALUES), 0..2)),
        (proptest::collection::vec(toleration(), 0..3), proptest::collection::vec(volume(), 0..3), proptest::collection::vec(dependency(), 0..2)),
        (
            proptest::collection::vec((pick(ENV_NAMES), pick(TEMPLATED)), 0..3),
            proptest::option::of(resources()),
            proptest::option::of(pick(&["spark-high", "spark-low"])),
            proptest::option::of(proptest::collection::vec(node_term(), 1..3)),
        ),
        (any::<bool>(), any::<bool>(), any::<bool>(), spark_conf(), ports()),
    )
        .prop_map(|((overwrite, labels, annotations, node_selector), (tolerations, volumes, deps), (env, res, prio, terms), (sidecar, rewrite, secctx, spark_conf, ports))| {
            let mut deps_unique: Vec<Value> = Vec::new();
            for d in deps {
                if !deps_unique.iter().any(|e| e["name"] == d["name"]) {
                    deps_unique.push(d);
                }
            }
            let mut p = json!({
                "overwrite": overwrite,
                "labels": labels,
                "annotations": annotations,
                "nodeSelector": node_selector,
                "tolerations": tolerations,
                "volumes": volumes,
                "dependencies": deps_unique,
                "env": env.into_iter().map(|(n, v)| json!({"name": n, "value": v})).collect::<Vec<_>>(),
                "imagePullSecrets": ["regcred", "corp"],
                "sparkConf": spark_conf,
                "ports": ports,
            });
            if let Some(r) = res {
                p["resources"] = r;
            }
            if let Some(c) = prio {
                p["priorityClassName"] = json!(c);
            }
            if let Some(t) = terms {
                p["affinity"] = json!({"nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": t},
                    "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 5, "preference": {"matchExpressions": [{"key": "ssd", "operator": "Exists"}]}}]
                }});
            }
            if sidecar {
                p["sidecars"] = json!([{"name": "vector", "image": "apache/vector:1"}]);
                p["initContainers"] = json!([{"name": "init-wait", "image": "busybox:1"}]);
            }
            if rewrite {
                p["image"] = json!({"rewrite": [{"from": "apache/", "to": "mirror.example.com/apache/"}], "pullPolicy": "Always"});
            }
            if secctx {
                p["securityContext"] = json!({"allowPrivilegeEscalation": false, "runAsNonRoot": true});
                p["podSecurityContext"] = json!({"fsGroup": 185});
            }
            p
        })
}

fn policy_yaml() -> impl Strategy<Value = String> {
    proptest::collection::vec((0..5i32, proptest::option::of(pod_patch()), proptest::option::of(pod_patch())), 1..4).prop_map(|ps| {
        ps.into_iter()
            .enumerate()
            .map(|(i, (priority, all, role))| {
                let mut spec = json!({"priority": priority, "namespaces": ["*"]});
                if let Some(a) = all {
                    spec["all"] = a;
                }
                if let Some(mut r) = role {
                    let section = if i % 2 == 0 { "driver" } else { "executor" };
                    if section == "executor" {
                        // Refused at load there (executors get their conf from the driver).
                        r.as_object_mut().unwrap().remove("sparkConf");
                    }
                    spec[section] = r;
                }
                let doc = json!({"apiVersion": "spark-admission.io/v1alpha1", "kind": "SparkPodPolicy", "metadata": {"name": format!("p{i}")}, "spec": spec});
                // JSON is YAML: the documents go through the same loader as files do.
                serde_json::to_string(&doc).unwrap()
            })
            .collect::<Vec<_>>()
            .join("\n---\n")
    })
}

/// Random changes to a real pod: a sidecar in front of the Spark container, optional
/// fields dropped, a clashing env var.
fn pod() -> impl Strategy<Value = Value> {
    (pick(FIXTURES), any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), proptest::option::of(pick(SUBMIT_OPTS))).prop_map(|(name, sidecar, drop_tolerations, drop_env, extra_classpath, drop_app_name, submit_opts)| {
        let (dir, file) = name.split_once('/').unwrap();
        let mut p = if dir == "spark" { spark_pod(file) } else { review_pod(file) };
        if sidecar {
            p["spec"]["containers"].as_array_mut().unwrap().insert(0, json!({"name": "istio-proxy", "image": "istio/proxyv2:1.22", "env": [{"name": "TZ", "value": "Europe/Paris"}]}));
        }
        if drop_tolerations {
            p["spec"].as_object_mut().unwrap().remove("tolerations");
        }
        let spark = p["spec"]["containers"].as_array().unwrap().len() - 1;
        if drop_env {
            p["spec"]["containers"][spark].as_object_mut().unwrap().remove("env");
        }
        if extra_classpath {
            let c = p["spec"]["containers"][spark].as_object_mut().unwrap();
            let env = c.entry("env").or_insert(json!([]));
            env.as_array_mut().unwrap().push(json!({"name": "SPARK_EXTRA_CLASSPATH", "value": "/opt/custom/*"}));
        }
        if let Some(opts) = submit_opts {
            let c = p["spec"]["containers"][spark].as_object_mut().unwrap();
            let env = c.entry("env").or_insert(json!([]));
            env.as_array_mut().unwrap().push(json!({"name": "SPARK_SUBMIT_OPTS", "value": opts}));
        }
        // ${app.name} then has no value: items using it are skipped.
        if drop_app_name {
            p["metadata"]["labels"].as_object_mut().unwrap().remove("spark-app-name");
        }
        p
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn patches_apply_and_are_idempotent(yaml in policy_yaml(), pod in pod()) {
        let set = policies(&yaml);
        let (_, out) = mutate_checked(&set, &pod, "spark-jobs");
        // A sidecar placed before the Spark container is never edited by container rules.
        if pod["spec"]["containers"][0]["name"] == "istio-proxy" {
            let before = &pod["spec"]["containers"][0];
            let after = &out["spec"]["containers"][0];
            prop_assert_eq!(&before["env"], &after["env"]);
            prop_assert_eq!(&before["resources"], &after["resources"]);
        }
        // Nothing outside the policies' reach changes, and only the priority fields are removed.
        const REACH: &[&str] = &[
            "/metadata/labels", "/metadata/annotations", "/spec/nodeSelector", "/spec/affinity",
            "/spec/tolerations", "/spec/imagePullSecrets", "/spec/volumes", "/spec/containers",
            "/spec/initContainers", "/spec/priorityClassName", "/spec/priority", "/spec/preemptionPolicy",
            "/spec/schedulerName", "/spec/runtimeClassName", "/spec/securityContext",
            "/spec/terminationGracePeriodSeconds", "/spec/topologySpreadConstraints", "/spec/dnsConfig", "/spec/hostAliases",
        ];
        let m = Engine::default().mutate(MutateRequest::new(&set, &typed(&pod), "spark-jobs")).expect("the engine plans the pod");
        for op in serde_json::to_value(&m.patch).unwrap().as_array().unwrap() {
            let path = op["path"].as_str().unwrap();
            prop_assert!(REACH.iter().any(|r| path == *r || path.starts_with(&format!("{r}/"))), "out of reach: {}", path);
            if op["op"] == "remove" {
                prop_assert!(path == "/spec/priority" || path == "/spec/preemptionPolicy", "removes {}", path);
            }
        }
        // Containers other than Spark's keep every field but the ones policies may set on
        // all containers (mounts for `containers: all`, image rewrites and pull policy).
        let spark_name = format!("spark-kubernetes-{}", pod["metadata"]["labels"]["spark-role"].as_str().unwrap());
        for before in pod["spec"]["containers"].as_array().unwrap().iter().filter(|c| c["name"] != spark_name.as_str()) {
            let after = out["spec"]["containers"].as_array().unwrap().iter().find(|c| c["name"] == before["name"]).unwrap();
            for (k, v) in before.as_object().unwrap() {
                if !["volumeMounts", "image", "imagePullPolicy"].contains(&k.as_str()) {
                    prop_assert_eq!(v, &after[k], "field {} of {}", k, before["name"]);
                }
            }
            for m in before["volumeMounts"].as_array().into_iter().flatten() {
                prop_assert!(after["volumeMounts"].as_array().unwrap().contains(m), "mount kept");
            }
        }
        // SPARK_SUBMIT_OPTS stays readable by Spark's launcher and keeps what it had first.
        let submit_opts = |pod: &Value| -> Option<String> {
            let c = pod["spec"]["containers"].as_array()?.iter().find(|c| c["name"] == spark_name.as_str())?;
            env_value(c, SUBMIT_OPTS_VAR)
        };
        if let Some(after) = submit_opts(&out) {
            let after = submit_opts_tokens(&after);
            prop_assert!(after.is_ok(), "{:?}", after);
            // (unless a policy's own `env` replaces the variable with overwrite: true)
            if !yaml.contains("\"name\":\"SPARK_SUBMIT_OPTS\"") {
                let before = submit_opts_tokens(&submit_opts(&pod).unwrap_or_default()).unwrap();
                prop_assert_eq!(&after.unwrap()[..before.len()], before.as_slice());
            }
        }
        // Spark's identity never changes.
        for k in ["spark-role", "spark-app-selector", "spark-app-name"] {
            prop_assert_eq!(&pod["metadata"]["labels"][k], &out["metadata"]["labels"][k]);
        }
    }

    #[test]
    fn pods_without_spark_role_are_never_touched(yaml in policy_yaml(), pod in pod()) {
        let set = policies(&yaml);
        let mut pod = pod;
        pod["metadata"]["labels"].as_object_mut().unwrap().remove("spark-role");
        let m = Engine::default().mutate(MutateRequest::new(&set, &typed(&pod), "spark-jobs")).expect("the engine plans the pod");
        prop_assert!(m.patch.0.is_empty());
        prop_assert!(m.warnings.is_empty());
    }
}
