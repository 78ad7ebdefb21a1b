//! The common start of a scenario: its turn on the cluster, a client, its namespaces (and
//! the PriorityClass the example policies give drivers), the example policies plus its own,
//! and the webhook serving them, registered as shipped and seen called.

use std::path::PathBuf;

use kube::Client;

use crate::cluster::{self, Cluster, Env};
use crate::expect;
use crate::webhook::{self, Policies, Webhook};

pub struct Scenario {
    pub env: Env,
    pub client: Client,
    pub policies: PathBuf,
    pub hook: Webhook,
}

impl Scenario {
    pub async fn start(
        test: &'static str,
        namespaces: &[&str],
        extra_policies: &[(&str, &str)],
    ) -> Scenario {
        let env = cluster::env(test);
        let c = env.cluster;
        let client = c.client().await;
        for ns in namespaces {
            c.namespace(&client, ns, &[]).await;
        }
        // team-defaults gives drivers `priorityClassName: spark-driver`.
        crate::fixtures::priority_class(&client, "spark-driver", 1000).await;
        let policies = expect::policy_folder(&env.dir, extra_policies);
        let hook = Webhook::start(c, &env.dir, Policies::Folder(&policies));
        let probe_ns = namespaces.first().copied().unwrap_or("default");
        webhook::register(&client, &hook, probe_ns, true).await;
        Scenario {
            env,
            client,
            policies,
            hook,
        }
    }

    pub fn cluster(&self) -> &'static Cluster {
        self.env.cluster
    }
}
