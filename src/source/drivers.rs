//! The stored driver pods, for verifying job pins (see `spark_admission_core::pinning`).
//!
//! A pin on an executor is honoured only when the executor's own stored driver carries it,
//! so the source of truth is what the API server stored, never what a review says. Drivers
//! come from a watch-fed cache of pods labelled `spark-role=driver` (cluster-wide, by label
//! selector: never every pod), trimmed to what verification reads; a miss (a driver the
//! watch has not delivered yet, or another pod under the same name) is one GET, bounded in
//! time. Nothing is written: a review only reads.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};

use crate::engine::SUBMIT_OPTS_VAR;
use crate::pinning::{self, Claim, DriverRef, PinCheck, Unverified};
use crate::spark::{ContainerNames, ROLE_LABEL};

/// The label selector of the watch: driver pods only.
pub const DRIVER_SELECTOR: &str = "spark-role=driver";
/// Longest wait for a GET of a driver the cache does not hold; past it the pin is not
/// verified (the executor gets the current policies), well inside the review's deadline.
pub const GET_TIMEOUT: Duration = Duration::from_secs(1);

/// Where pins are checked: the cluster's stored drivers, or nowhere (the folder source).
#[derive(Clone, Default)]
pub enum Drivers {
    /// No cluster: every pin is unverified.
    #[default]
    None,
    Cluster(Arc<DriverCache>),
}

impl std::fmt::Debug for Drivers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Drivers::None => "Drivers::None",
            Drivers::Cluster(_) => "Drivers::Cluster",
        })
    }
}

impl Drivers {
    /// Checks the pin `claim` of an executor being created in `namespace`.
    pub async fn check(&self, claim: &Claim<'_>, pod: &Pod, namespace: &str) -> PinCheck {
        let Claim::Pin { value, .. } = claim else {
            // Nothing to verify; the resolution ignores the check.
            return PinCheck::Unverified(Unverified::NoOwner);
        };
        let cache = match self {
            Drivers::None => return PinCheck::Unverified(Unverified::NoCluster),
            Drivers::Cluster(c) => c,
        };
        let Some(owner) = pinning::driver_ref(pod) else {
            return PinCheck::Unverified(Unverified::NoOwner);
        };
        match cache.driver(namespace, &owner).await {
            Ok(stored) => pinning::check(value, &owner, stored.as_deref(), &cache.names),
            Err(error) => PinCheck::Unverified(Unverified::LookupFailed {
                driver: owner.name.to_owned(),
                error,
            }),
        }
    }
}

/// Driver pods as the API server stored them, kept by a watch.
pub struct DriverCache {
    client: Client,
    store: Store<Pod>,
    names: ContainerNames,
}

impl DriverCache {
    /// The cache, and the watch that fills it (run it until shutdown).
    pub fn new(
        client: Client,
        names: ContainerNames,
    ) -> (Arc<Self>, impl std::future::Future<Output = ()> + Send) {
        let (store, writer) = reflector::store();
        let api: Api<Pod> = Api::all(client.clone());
        let config = watcher::Config::default().labels(DRIVER_SELECTOR);
        let keep = names.clone();
        let stream = reflector::reflector(
            writer,
            watcher(api, config)
                .default_backoff()
                .modify(move |pod| trim(pod, &keep)),
        );
        let run = async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                if let Err(e) = event {
                    // The watcher retries with backoff; meanwhile a miss is a GET.
                    tracing::warn!(error = %e, "driver pod watch failed; retrying with backoff, pins are checked with a GET meanwhile");
                }
            }
        };
        let cache = Arc::new(Self {
            client,
            store,
            names,
        });
        (cache, run)
    }

    /// The stored pod `owner` names in `namespace`: from the cache when it holds that pod
    /// (same uid), else one GET. `Ok(None)`: no such pod.
    async fn driver(
        &self,
        namespace: &str,
        owner: &DriverRef<'_>,
    ) -> Result<Option<Arc<Pod>>, String> {
        let key = ObjectRef::new(owner.name).within(namespace);
        if let Some(pod) = self.store.get(&key) {
            if pod.metadata.uid.as_deref() == Some(owner.uid) {
                return Ok(Some(pod));
            }
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        match tokio::time::timeout(GET_TIMEOUT, api.get_opt(owner.name)).await {
            Ok(Ok(pod)) => Ok(pod.map(|mut p| {
                trim(&mut p, &self.names);
                Arc::new(p)
            })),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {GET_TIMEOUT:?}")),
        }
    }
}

/// Keeps what verification reads: name, namespace, uid, the role label, and the driver
/// container's `SPARK_SUBMIT_OPTS` entries (a cluster's drivers stay small in memory).
fn trim(pod: &mut Pod, names: &ContainerNames) {
    let role = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(ROLE_LABEL))
        .cloned();
    pod.metadata = ObjectMeta {
        name: pod.metadata.name.take(),
        namespace: pod.metadata.namespace.take(),
        uid: pod.metadata.uid.take(),
        resource_version: pod.metadata.resource_version.take(),
        labels: role.map(|r| [(ROLE_LABEL.to_owned(), r)].into()),
        ..ObjectMeta::default()
    };
    let containers = pod
        .spec
        .take()
        .map(|s| s.containers)
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.name == names.driver)
        .map(|c| Container {
            env: c.env.map(|env| {
                env.into_iter()
                    .filter(|e| e.name == SUBMIT_OPTS_VAR)
                    .collect::<Vec<EnvVar>>()
            }),
            name: c.name,
            ..Container::default()
        })
        .collect();
    pod.spec = Some(PodSpec {
        containers,
        ..PodSpec::default()
    });
    pod.status = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_keeps_what_verification_reads() {
        let names = ContainerNames::default();
        let pin = format!("-D{}=team@0123456789", pinning::PIN_SPARK_CONF_KEY);
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "d", "namespace": "ns", "uid": "u", "labels": {"spark-role": "driver", "big": "x"},
                         "annotations": {"a": "b"}},
            "spec": {"containers": [
                {"name": "sidecar", "env": [{"name": "SPARK_SUBMIT_OPTS", "value": "-Dx=1"}]},
                {"name": "spark-kubernetes-driver", "image": "spark", "env": [
                    {"name": "OTHER", "value": "1"}, {"name": "SPARK_SUBMIT_OPTS", "value": pin}]}
            ]}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let full = pod.clone();
        trim(&mut pod, &names);
        assert!(pod.metadata.annotations.is_none());
        let spec = pod.spec.as_ref().unwrap_or_else(|| panic!("no spec"));
        assert_eq!(spec.containers.len(), 1);
        assert_eq!(spec.containers[0].env.as_ref().map(Vec::len), Some(1));
        let owner = DriverRef {
            name: "d",
            uid: "u",
        };
        assert_eq!(
            pinning::check("team@0123456789", &owner, Some(&pod), &names),
            pinning::check("team@0123456789", &owner, Some(&full), &names)
        );
        assert_eq!(
            pinning::check("team@0123456789", &owner, Some(&pod), &names),
            PinCheck::Verified
        );
    }
}
