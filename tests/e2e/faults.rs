//! Scenario 6: what the cluster sees when the webhook is down, and when its serving
//! certificate is renewed under load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};

use crate::scenario::Scenario;
use crate::webhook::{driver_pod, metric_sum};

pub async fn a_spark_pod_is_refused_while_the_webhook_is_down_and_accepted_once_it_is_back() {
    let ns = "team-faults";
    let Scenario {
        env,
        client,
        mut hook,
        ..
    } = Scenario::start("webhook_down", &[ns], &[]).await;
    let c = env.cluster;
    hook.stop();

    let out = c.kubectl(
        &["create", "-n", ns, "-f", "-"],
        Some(&serde_json::to_string(&driver_pod("while-down-driver")).expect("JSON")),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "failurePolicy Fail let a pod through unpolicied"
    );
    assert!(
        stderr.contains("failed calling webhook \"mutate.spark-admission.io\"")
            && stderr.contains("connection refused"),
        "the refusal does not say the webhook is unreachable:\n{stderr}"
    );

    hook.restart();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    // The API server may hold a connection to the old process for a moment: retry briefly.
    let mut stored = None;
    for _ in 0..50 {
        match pods
            .create(&PostParams::default(), &driver_pod("after-restart-driver"))
            .await
        {
            Ok(p) => {
                stored = Some(p);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let stored = stored.expect("the pod was not accepted after the webhook came back");
    let annotations = stored.metadata.annotations.unwrap_or_default();
    assert!(
        annotations
            .get(spark_admission::engine::APPLIED_ANNOTATION)
            .is_some_and(|a| a.contains("team-defaults@")),
        "the pod accepted after the restart lacks its policies: {annotations:?}"
    );
}

pub async fn renewing_the_serving_certificate_from_the_same_ca_fails_no_pod_create() {
    let ns = "team-certs";
    let Scenario {
        env: _turn,
        client,
        hook,
        ..
    } = Scenario::start("cert_renewal", &[ns], &[]).await;

    let done = Arc::new(AtomicBool::new(false));
    let renewer = {
        let done = done.clone();
        let certs = hook.certs.clone();
        std::thread::spawn(move || {
            let mut renewals = 0;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(700));
                let out = std::process::Command::new(env!("CARGO_BIN_EXE_spark-admission"))
                    .args(["certs", "--renew", "--out"])
                    .arg(&certs)
                    .output()
                    .expect("spark-admission certs --renew");
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                renewals += 1;
            }
            renewals
        })
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut failures = Vec::new();
    for i in 0..40 {
        if let Err(e) = pods
            .create(
                &PostParams::default(),
                &driver_pod(&format!("renewal-{i}-driver")),
            )
            .await
        {
            failures.push(e.to_string());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done.store(true, Ordering::Relaxed);
    let renewals = renewer.join().expect("renewer");
    let reloaded = metric_sum(
        &hook.metrics(),
        "spark_admission_certificate_reloads_total",
        "result=\"ok\"",
    );
    assert!(
        failures.is_empty(),
        "{} of 40 creates failed during renewals: {failures:?}",
        failures.len()
    );
    assert!(renewals >= 3, "only {renewals} renewals happened");
    assert!(
        reloaded >= 2.0,
        "the webhook picked up {reloaded} of {renewals} renewals"
    );
    eprintln!("cert_renewal: 40 creates, 0 failed, {renewals} renewals, {reloaded} reloads");
}
