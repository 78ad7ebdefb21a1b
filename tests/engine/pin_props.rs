//! Properties of job pins (issue 23): a pin that is not verified never yields a different
//! patch than no pin at all, whatever it says — random text, commas, tags of current and
//! of older versions, of policies of other namespaces — and a driver never keeps a pin
//! token it brought itself. `PROPTEST_CASES=2000 cargo test --test engine pin_props`
//! searches longer.

use std::sync::Arc;

use crate::engine_support::*;
use proptest::prelude::*;
use serde_json::{json, Value};
use spark_admission::engine::{submit_opts_tokens, Engine, MutateRequest, SUBMIT_OPTS_VAR};
use spark_admission::matching::PolicySet;
use spark_admission::pinning::{
    claim_of, Claim, PinCheck, Resolution, Unverified, DRIVER_POLICIES_ANNOTATION,
    PIN_SPARK_CONF_KEY,
};
use spark_admission::policy::CompiledPolicy;

const NAMESPACES: &[&str] = &["spark-jobs", "team-ml", "elsewhere"];

/// An older version of a policy touching executors, kept in the "history".
fn older() -> Arc<CompiledPolicy> {
    let set = policies(
        "apiVersion: spark-admission.io/v1alpha1\nkind: SparkPodPolicy\nmetadata: {name: team-defaults}\nspec:\n  namespaces: [\"*\"]\n  executor:\n    labels: {old: \"yes\"}\n    nodeSelector: {pool: old}\n",
    );
    Arc::clone(&set.policies()[0])
}

fn current() -> PolicySet {
    example_policies()
}

/// Pin values: random text, commas and blanks, and lists of real tags (current ones, the
/// older version, made-up hashes).
fn pin_value() -> impl Strategy<Value = String> {
    let set = current();
    let mut tags: Vec<String> = set.policies().iter().map(|p| p.tag.clone()).collect();
    tags.push(older().tag.clone());
    tags.push("team-defaults@0000000000".to_owned());
    tags.push("nonexistent@deadbeef".to_owned());
    let tags: &'static [String] = Box::leak(tags.into_boxed_slice());
    prop_oneof![
        "[ -~]{0,40}",
        "[, ]{0,5}",
        proptest::collection::vec(proptest::sample::select(tags), 0..5).prop_map(|t| t.join(",")),
    ]
}

fn reason() -> impl Strategy<Value = Unverified> {
    prop_oneof![
        Just(Unverified::NoCluster),
        Just(Unverified::PinningOff),
        Just(Unverified::NoOwner),
        "[a-z-]{1,12}".prop_map(|driver| Unverified::NoSuchDriver { driver }),
        "[a-z-]{1,12}".prop_map(|driver| Unverified::LookupFailed {
            driver,
            error: "timeout".into()
        }),
        ("[a-z-]{1,12}", proptest::option::of("[ -~]{0,20}"))
            .prop_map(|(driver, driver_pin)| Unverified::Contradicts { driver, driver_pin }),
    ]
}

fn executors() -> Vec<(String, Value)> {
    all_fixture_pods()
        .into_iter()
        .filter(|(_, p)| p["metadata"]["labels"]["spark-role"] == "executor")
        .collect()
}

fn engine() -> Engine {
    Engine::default().with_job_pinning(true)
}

proptest! {
    #[test]
    fn an_unverified_pin_never_changes_the_patch(
        pin in pin_value(),
        why in reason(),
        pick in any::<prop::sample::Index>(),
        ns in proptest::sample::select(NAMESPACES),
    ) {
        let pods = executors();
        let (name, pod) = &pods[pick.index(pods.len())];
        let mut pinned = pod.clone();
        pinned["metadata"]["annotations"][DRIVER_POLICIES_ANNOTATION] = json!(pin);
        let pinned = typed(&pinned);
        let set = current();
        let old = older();
        let history = |tag: &str| (tag == old.tag).then(|| Arc::clone(&old));
        let claim = claim_of(&pinned);
        let resolution = Resolution::of(&set, &claim, PinCheck::Unverified(why), history);
        prop_assert!(resolution.pinned().is_none());
        let got = engine()
            .mutate(MutateRequest::new(&set, &pinned, ns).resolved(&resolution))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let plain = engine()
            .mutate(MutateRequest::new(&set, &pinned, ns))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&got.patch, &plain.patch, "{} in {} with pin {:?}", name, ns, pin);
        prop_assert_eq!(&got.applied, &plain.applied);
        // Every pin claim is answered with a warning; none without one.
        prop_assert_eq!(
            got.warnings.len(),
            plain.warnings.len() + usize::from(!matches!(claim, Claim::None))
        );
    }

    #[test]
    fn a_driver_keeps_no_pin_token_of_its_own(
        theirs in pin_value(),
        before in proptest::sample::select(&["", "-Dfoo.bar=x", "-XX:+UseG1GC '-Dspark.b=x y'", "$(SPARK_USER) -Dx=$$y"][..]),
        after in proptest::sample::select(&["", "-Dspark.a=1", "\"-Dq=a b\""][..]),
        pinning_on in any::<bool>(),
    ) {
        let token = format!("'-D{PIN_SPARK_CONF_KEY}={}'", theirs.replace('\'', ""));
        let opts = format!("{before} {token} {after}");
        let mut driver = spark_pod("driver-rich");
        let container = driver["spec"]["containers"]
            .as_array_mut()
            .and_then(|cs| cs.iter_mut().find(|c| c["name"] == "spark-kubernetes-driver"))
            .ok_or_else(|| TestCaseError::fail("no driver container"))?;
        let env = container["env"].as_array_mut().ok_or_else(|| TestCaseError::fail("no env"))?;
        env.retain(|e| e["name"] != SUBMIT_OPTS_VAR);
        env.push(json!({"name": SUBMIT_OPTS_VAR, "value": opts}));
        let set = current();
        let engine = Engine::default().with_job_pinning(pinning_on);
        let pod = typed(&driver);
        let m = engine
            .mutate(MutateRequest::new(&set, &pod, "spark-jobs"))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut once = driver.clone();
        json_patch::patch(&mut once, &m.patch).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let value = env_value(spark_container(&once, "spark-kubernetes-driver"), SUBMIT_OPTS_VAR)
            .unwrap_or_default();
        let tokens = submit_opts_tokens(&value).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let pins: Vec<&String> = tokens
            .iter()
            .filter(|t| t.starts_with(&format!("-D{PIN_SPARK_CONF_KEY}")))
            .collect();
        let ours = spark_admission::pinning::executor_tags(&set, "spark-jobs").join(",");
        if pinning_on && !ours.is_empty() {
            let want = format!("-D{PIN_SPARK_CONF_KEY}={ours}");
            prop_assert_eq!(pins, vec![&want], "{}", value);
        } else {
            prop_assert!(pins.is_empty(), "{}", value);
        }
        // Everything else the submitter wrote is still there, in order.
        let kept: Vec<String> = submit_opts_tokens(&format!("{before} {after}"))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        for k in &kept {
            prop_assert!(tokens.contains(k), "{} lost from {}", k, value);
        }
        // And a second pass changes nothing.
        let again = engine
            .mutate(MutateRequest::new(&set, &typed(&once), "spark-jobs"))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(again.patch.0.is_empty(), "{:?}", again.patch);
    }
}
