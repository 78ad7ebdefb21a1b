//! OOM-aware memory in the engine: what an OOMKilled pod teaches (`raise_after_oom`) and
//! how a remembered raise lands on the next pod (`mutate_remembering`), on the captured
//! Spark pods.

use serde_json::{json, Value};
use spark_admission::engine::{Engine, MutateRequest};
use spark_admission::matching::PolicySet;
use spark_admission::memory_on_oom::{
    memory_key, raise_after_oom, RememberedMemory, RAISED_ANNOTATION,
};
use spark_admission::policy::{parse_documents, PolicySource};
use spark_admission::spark::{ContainerNames, SparkPod};

use crate::engine_support::{assert_same_decision, policies, spark_container, spark_pod, typed};

const MI: u64 = 1024 * 1024;
const NOW: i64 = 1_780_000_000;

fn policy(executor: &str, driver: &str, validate: &str) -> PolicySet {
    policies(&format!(
        r#"
apiVersion: spark-admission.io/v1alpha1
kind: SparkPodPolicy
metadata: {{name: oom}}
spec:
  namespaces: [team-a]
  {executor}
  {driver}
  {validate}
"#
    ))
}

fn executor_oom() -> PolicySet {
    policy(
        "executor: {memoryOnOOM: {step: 25%, minStep: 512Mi, max: 16Gi, remember: 14d}}",
        "",
        "",
    )
}

/// The pod as the API server shows it once the kubelet recorded its Spark container's end.
fn ended(mut pod: Value, reason: &str) -> Value {
    let container = if pod["metadata"]["labels"]["spark-role"] == "driver" {
        "spark-kubernetes-driver"
    } else {
        "spark-kubernetes-executor"
    };
    pod["status"] = json!({
        "phase": "Failed",
        "containerStatuses": [{
            "name": container, "image": "apache/spark:3.5.9", "imageID": "", "ready": false,
            "restartCount": 0,
            "state": {"terminated": {"exitCode": 137, "reason": reason,
                                     "finishedAt": "2026-06-01T10:00:00Z"}}
        }]
    });
    pod
}

fn learn(set: &PolicySet, pod: &Value) -> Option<spark_admission::memory_on_oom::OomRaise> {
    raise_after_oom(set, &typed(pod), "team-a", &ContainerNames::default(), NOW)
}

/// Mutates with the raise, checks explain's path decides the same, applies the patch and
/// checks a second pass (the API server's reinvocation) changes nothing.
fn mutate(
    set: &PolicySet,
    pod: &Value,
    remembered: &RememberedMemory,
) -> (spark_admission::engine::Mutation, Value) {
    let engine = Engine::default();
    let m = engine
        .mutate(MutateRequest::new(set, &typed(pod), "team-a").remembering(Some(remembered)))
        .unwrap();
    let described = engine
        .mutate(
            MutateRequest::new(set, &typed(pod), "team-a")
                .remembering(Some(remembered))
                .described(true),
        )
        .unwrap();
    assert_same_decision(&described, &m);
    let mut out = pod.clone();
    json_patch::patch(&mut out, &m.patch).unwrap();
    let again = engine
        .mutate(MutateRequest::new(set, &typed(&out), "team-a").remembering(Some(remembered)))
        .unwrap();
    assert!(again.patch.0.is_empty(), "second pass: {:?}", again.patch);
    (m, out)
}

fn memory(pod: &Value, kind: &str) -> Value {
    let role = pod["metadata"]["labels"]["spark-role"].as_str().unwrap();
    spark_container(pod, &format!("spark-kubernetes-{role}"))["resources"][kind]["memory"].clone()
}

#[test]
fn an_oomkilled_executor_gives_the_next_executor_of_its_app_one_step_more() {
    let set = executor_oom();
    let raise = learn(&set, &ended(spark_pod("executor-rich-1"), "OOMKilled")).unwrap();
    // 3456Mi + 25% = 4320Mi (above the 512Mi minStep).
    assert_eq!(raise.remembered.memory, 4320 * MI);
    assert_eq!(raise.remembered.from, 3456 * MI);
    assert_eq!(
        raise.remembered.oom_pod,
        "spark-pi-rich-c42f07a1fef4587b-exec-1"
    );
    assert_eq!(raise.key, "team-a/executor/name:spark-pi-rich");
    assert_eq!(raise.policy, "oom");
    let finished = 1_780_308_000; // 2026-06-01T10:00:00Z
    assert_eq!(raise.remembered.oom_at, finished);
    assert_eq!(raise.remembered.expires, finished + 14 * 86400);

    let (m, out) = mutate(&set, &spark_pod("executor-rich-2"), &raise.remembered);
    assert_eq!(memory(&out, "limits"), "4320Mi");
    assert_eq!(memory(&out, "requests"), "4320Mi");
    let note = out["metadata"]["annotations"][RAISED_ANNOTATION]
        .as_str()
        .unwrap();
    assert!(
        note.contains("3456Mi -> 4320Mi")
            && note.contains("spark-pi-rich-c42f07a1fef4587b-exec-1")
            && note.contains("2026-06-01T10:00:00Z"),
        "{note}"
    );
    assert_eq!(m.applied.len(), 1, "the enabling policy is listed");
    assert!(m
        .warnings
        .iter()
        .any(|w| w.contains("raised from 3456Mi to 4320Mi")));
    // CPU is untouched.
    let c = spark_container(&out, "spark-kubernetes-executor");
    assert_eq!(c["resources"]["limits"]["cpu"], "2");

    // That executor is OOMKilled too: the next one gets another step, from 4320Mi.
    let again = learn(&set, &ended(out, "OOMKilled")).unwrap();
    assert_eq!(again.remembered.memory, 5400 * MI);
}

#[test]
fn only_an_oomkilled_spark_container_counts_and_apps_are_kept_apart() {
    let set = executor_oom();
    assert!(learn(&set, &ended(spark_pod("executor-rich-1"), "Error")).is_none());
    assert!(
        learn(&set, &spark_pod("executor-rich-1")).is_none(),
        "no status"
    );
    // Another application (client-pi) has its own key.
    let other = learn(&set, &ended(spark_pod("executor-client-1"), "OOMKilled")).unwrap();
    assert_eq!(other.key, "team-a/executor/name:client-pi");
    // Without a spark-app-name label: keyed by the application id.
    let mut nameless = spark_pod("executor-rich-1");
    nameless["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("spark-app-name");
    let pod = typed(&nameless);
    let names = ContainerNames::default();
    let spark = SparkPod::recognise(&pod, &names).unwrap();
    assert_eq!(
        memory_key("team-a", &spark).unwrap(),
        "team-a/executor/id:spark-ff5dc99425cc42f7bf273899ea37f789"
    );
    // Namespaces are part of the key: a policy that does not cover the namespace learns nothing.
    assert!(raise_after_oom(
        &set,
        &typed(&ended(spark_pod("executor-rich-1"), "OOMKilled")),
        "team-b",
        &names,
        NOW
    )
    .is_none());
}

#[test]
fn min_step_and_a_fixed_step() {
    let set = policy(
        "executor: {memoryOnOOM: {step: 10%, minStep: 1Gi, max: 16Gi}}",
        "",
        "",
    );
    // 10% of 1408Mi is 141Mi, below minStep: 1408Mi + 1Gi.
    let raise = learn(&set, &ended(spark_pod("executor-client-1"), "OOMKilled")).unwrap();
    assert_eq!(raise.remembered.memory, 2432 * MI);
    let set = policy("executor: {memoryOnOOM: {step: 2Gi, max: 16Gi}}", "", "");
    let raise = learn(&set, &ended(spark_pod("executor-client-1"), "OOMKilled")).unwrap();
    assert_eq!(raise.remembered.memory, 3456 * MI);
}

#[test]
fn never_above_max_even_when_more_was_remembered() {
    let set = policy("executor: {memoryOnOOM: {step: 100%, max: 5Gi}}", "", "");
    let raise = learn(&set, &ended(spark_pod("executor-rich-1"), "OOMKilled")).unwrap();
    assert_eq!(
        raise.remembered.memory,
        5 * 1024 * MI,
        "3456Mi doubled, capped at max"
    );
    // Remembered under an older, larger max: the current max still holds.
    let mut big = raise.remembered.clone();
    big.memory = 20 * 1024 * MI;
    let (_, out) = mutate(&set, &spark_pod("executor-rich-2"), &big);
    assert_eq!(memory(&out, "limits"), "5Gi");
    // At max already: an OOM teaches nothing more.
    let mut at_max = spark_pod("executor-rich-1");
    let c = &mut at_max["spec"]["containers"][0]["resources"];
    c["limits"]["memory"] = json!("5Gi");
    c["requests"]["memory"] = json!("5Gi");
    assert!(learn(&set, &ended(at_max, "OOMKilled")).is_none());
}

#[test]
fn an_enforced_max_resources_rule_caps_the_raise_and_says_so() {
    let set = policy(
        "executor: {memoryOnOOM: {step: 50%, max: 16Gi}}",
        "",
        "validate: {mode: enforce, maxResources: {executor: {limits: {memory: 4Gi}}}}",
    );
    let raise = learn(&set, &ended(spark_pod("executor-rich-1"), "OOMKilled")).unwrap();
    assert_eq!(raise.remembered.memory, 5184 * MI);
    let (m, out) = mutate(&set, &spark_pod("executor-rich-2"), &raise.remembered);
    assert_eq!(memory(&out, "limits"), "4Gi");
    assert_eq!(memory(&out, "requests"), "4Gi");
    assert!(
        m.warnings
            .iter()
            .any(|w| w.contains("policy \"oom\" (maxResources, enforce) allows at most 4Gi")),
        "{:?}",
        m.warnings
    );
    // Validation of the raised pod passes: the raise never makes a pod validation denies.
    let v = Engine::default().validate(&set, &typed(&out), "team-a");
    assert!(!v.denied(), "{:?}", v.findings);

    // A warn-mode rule does not cap.
    let warn = policy(
        "executor: {memoryOnOOM: {step: 50%, max: 16Gi}}",
        "",
        "validate: {mode: warn, maxResources: {executor: {limits: {memory: 4Gi}}}}",
    );
    let (_, out) = mutate(&warn, &spark_pod("executor-rich-2"), &raise.remembered);
    assert_eq!(memory(&out, "limits"), "5184Mi");
}

#[test]
fn never_below_what_the_submitter_asked() {
    let set = executor_oom();
    let raise = learn(&set, &ended(spark_pod("executor-rich-1"), "OOMKilled")).unwrap();
    let mut bigger = spark_pod("executor-rich-2");
    let c = &mut bigger["spec"]["containers"][0]["resources"];
    c["limits"]["memory"] = json!("8Gi");
    c["requests"]["memory"] = json!("8Gi");
    let m = Engine::default()
        .mutate(
            MutateRequest::new(&set, &typed(&bigger), "team-a")
                .remembering(Some(&raise.remembered)),
        )
        .unwrap();
    assert!(m.patch.0.is_empty(), "{:?}", m.patch);
    assert!(m.warnings.is_empty());
}

#[test]
fn drivers_have_their_own_setting() {
    let set = policy(
        "executor: {memoryOnOOM: {step: 25%, max: 16Gi}}",
        "driver: {memoryOnOOM: {step: 50%, max: 2Gi, remember: 36h}}",
        "",
    );
    let driver = spark_pod("driver-scala-sparkpi");
    let raise = learn(&set, &ended(driver.clone(), "OOMKilled")).unwrap();
    // 1408Mi + 50% = 2112Mi, above the driver's max of 2Gi.
    assert_eq!(raise.remembered.memory, 2048 * MI);
    assert_eq!(raise.key, "team-a/driver/name:spark-pi");
    assert_eq!(
        raise.remembered.expires - raise.remembered.oom_at,
        36 * 3600
    );
    let (_, out) = mutate(&set, &driver, &raise.remembered);
    assert_eq!(memory(&out, "limits"), "2Gi");
    assert_eq!(memory(&out, "requests"), "2Gi");

    // A policy enabling it for executors only does not raise drivers.
    let executors_only = executor_oom();
    assert!(learn(&executors_only, &ended(driver.clone(), "OOMKilled")).is_none());
    let m = Engine::default()
        .mutate(
            MutateRequest::new(&executors_only, &typed(&driver), "team-a")
                .remembering(Some(&raise.remembered)),
        )
        .unwrap();
    assert!(m.patch.0.is_empty());
}

#[test]
fn settings_are_checked_when_the_policy_loads() {
    let load = |spec: &str| {
        parse_documents(
            &PolicySource("p.yaml".into()),
            &format!(
                "apiVersion: spark-admission.io/v1alpha1\nkind: SparkPodPolicy\nmetadata: {{name: p}}\nspec:\n  namespaces: [a]\n  {spec}\n"
            ),
        )
        .map(drop)
        .unwrap_err()
        .iter()
        .map(|e| format!("{}: {}", e.path, e.message))
        .collect::<Vec<_>>()
        .join("\n")
    };
    let e = load("all: {memoryOnOOM: {max: 8Gi}}");
    assert!(
        e.contains("/spec/all/memoryOnOOM") && e.contains("`driver` or `executor`"),
        "{e}"
    );
    let e = load("executor: {memoryOnOOM: {step: 0%, max: 8Gi}}");
    assert!(e.contains("/spec/executor/memoryOnOOM/step"), "{e}");
    let e = load("executor: {memoryOnOOM: {step: 25%}}");
    assert!(e.contains("max"), "max is required: {e}");
    let e = load("executor: {memoryOnOOM: {max: 8Gi, remember: 2w}}");
    assert!(e.contains("/spec/executor/memoryOnOOM/remember"), "{e}");
    let e = load("executor: {memoryOnOOM: {max: lots}}");
    assert!(e.contains("/spec/executor/memoryOnOOM/max"), "{e}");
}

#[test]
fn a_pinned_executor_is_capped_by_the_rules_validation_will_use() {
    // The pin holds only policies that change executors; a validation-only guardrail is
    // not in it, yet validation applies it: the raise must stop below it all the same.
    let pinned = executor_oom();
    let current = policies(
        r#"
apiVersion: spark-admission.io/v1alpha1
kind: SparkPodPolicy
metadata: {name: oom}
spec:
  namespaces: [team-a]
  executor:
    memoryOnOOM: {step: 25%, minStep: 512Mi, max: 16Gi, remember: 14d}
---
apiVersion: spark-admission.io/v1alpha1
kind: SparkPodPolicy
metadata: {name: guardrails}
spec:
  namespaces: ["*"]
  validate:
    maxResources: {executor: {requests: {memory: 4000Mi}}}
"#,
    );
    let raise = learn(&pinned, &ended(spark_pod("executor-rich-1"), "OOMKilled")).unwrap();
    let pod = spark_pod("executor-rich-2");
    let m = Engine::default()
        .mutate(
            MutateRequest::new(&current, &typed(&pod), "team-a")
                .pinned(&pinned, &[])
                .remembering(Some(&raise.remembered)),
        )
        .unwrap();
    let mut out = pod.clone();
    json_patch::patch(&mut out, &m.patch).unwrap();
    assert_eq!(memory(&out, "limits"), "4000Mi");
    assert!(
        m.warnings
            .iter()
            .any(|w| w.contains("policy \"guardrails\"")),
        "{:?}",
        m.warnings
    );
    assert!(!Engine::default()
        .validate(&current, &typed(&out), "team-a")
        .denied());
}

#[test]
fn an_oom_at_max_teaches_no_raise_and_is_told_apart() {
    use spark_admission::memory_on_oom::oom_at_max;
    let names = ContainerNames::default();
    // executor-client-1 asks for 1408Mi: below max, a raise; at or over max, none.
    let below = policy("executor: {memoryOnOOM: {step: 25%, max: 16Gi}}", "", "");
    let pod = typed(&ended(spark_pod("executor-client-1"), "OOMKilled"));
    assert!(learn(&below, &ended(spark_pod("executor-client-1"), "OOMKilled")).is_some());
    assert!(oom_at_max(&below, &pod, "team-a", &names).is_none());
    for max in ["1408Mi", "1Gi"] {
        let at = policy(
            &format!("executor: {{memoryOnOOM: {{step: 25%, max: {max}}}}}"),
            "",
            "",
        );
        assert!(
            learn(&at, &ended(spark_pod("executor-client-1"), "OOMKilled")).is_none(),
            "max {max}: no raise"
        );
        let (role, policy_name) = oom_at_max(&at, &pod, "team-a", &names).unwrap();
        assert_eq!(role.as_str(), "executor");
        assert!(!policy_name.is_empty());
        // Not OOMKilled, or a namespace the policy does not cover: not at max either.
        let error = typed(&ended(spark_pod("executor-client-1"), "Error"));
        assert!(oom_at_max(&at, &error, "team-a", &names).is_none());
        assert!(oom_at_max(&at, &pod, "team-b", &names).is_none());
    }
}
