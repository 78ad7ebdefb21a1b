//! The end-to-end suite: the webhook against a real kube-apiserver (v1.32) and Apache
//! Spark's own `spark-submit`. See `tests/e2e/assets.rs` for how it finds them, and the
//! README ("The API-server tier") for how to run it. Without them every test is reported
//! ignored, with one line saying what is missing; `SPARK_ADMISSION_E2E=required` makes a
//! missing asset fail instead.

mod assets;
mod cluster;
mod configmaps;
mod expect;
mod faults;
mod fixtures;
mod install;
mod job_pinning;
mod memory_on_oom;
mod names;
mod process;
mod record;
mod scenario;
mod sidecar;
mod spark_submit;
mod validation;
mod walkarounds;
mod webhook;

use std::future::Future;

use spark_admission_testkit::tier::{self, Asset, Suite};

/// Each test on its own runtime, as `#[tokio::test(flavor = "multi_thread")]` gave it.
fn block_on<F: Future<Output = ()>>(f: F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio runtime: {e}"))
        .block_on(f)
}

macro_rules! e2e {
    ($asset:expr, $($module:ident :: $test:ident),+ $(,)?) => {
        vec![$($asset.test(
            concat!(stringify!($module), "::", stringify!($test)),
            |_| block_on($module::$test()),
        )),+]
    };
}

fn main() {
    let cluster = Asset {
        tier: "e2e (kube-apiserver)",
        found: assets::find(),
        required: tier::required("SPARK_ADMISSION_E2E"),
        fill: "setup-envtest use 1.32.x (or KUBEBUILDER_ASSETS=<folder with kube-apiserver, etcd, kubectl>), \
               then eval \"$(bash scripts/e2e-assets.sh)\" && cargo test --test e2e",
    };
    Suite::new()
        .with(&cluster, |a| {
            e2e![
                a,
                configmaps::policy_configmaps_are_watched_and_a_broken_one_keeps_the_last_good_version,
                faults::a_spark_pod_is_refused_while_the_webhook_is_down_and_accepted_once_it_is_back,
                faults::renewing_the_serving_certificate_from_the_same_ca_fails_no_pod_create,
                fixtures::every_captured_spark_pod_is_stored_with_exactly_the_policies_changes_once,
                fixtures::the_api_server_defaults_what_the_patch_adds_and_a_second_pass_changes_nothing,
                install::the_deploy_kustomization_and_the_cert_manager_overlay_pass_a_server_dry_run,
                job_pinning::executors_get_their_drivers_policy_versions_across_changes_restarts_and_replicas,
                job_pinning::spark_itself_gives_the_pin_to_the_executors_of_a_driver_replayed_in_client_mode,
                memory_on_oom::an_oomkilled_executor_makes_the_next_one_bigger_across_restarts_and_replicas,
                names::the_api_server_and_the_policy_loader_refuse_the_same_names_and_labels,
                spark_submit::spark_submit_meets_the_webhook_in_cluster_and_client_mode,
                validation::kubectl_shows_the_guardrail_refusal_and_the_warning_in_the_submitters_words,
                validation::kubectl_shows_whole_warnings_and_how_many_more_when_there_are_too_many,
                walkarounds::a_stored_spark_pod_cannot_be_changed_past_the_rules,
            ]
        })
        .run()
}
