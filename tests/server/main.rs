//! The webhook server's tests, one binary: the router in-process (`router`), real TLS on
//! loopback over HTTP/1.1 and h2 (`tls`, `lifecycle`, `validate_policy`), bad input and
//! slow clients (`bad_input`), memory after bad input on the real process (`memory`), the
//! ConfigMap source against a stand-in API server for what a real one will not do on demand
//! (`policy_configmaps`), the policy version history and job pinning over the real fixtures
//! (`policy_history`), pods crafted to be expensive and the review deadline (`costly_pods`),
//! `deploy/` against the code (`deploy_manifests`), and what a real kube-apiserver did,
//! replayed from recordings (`apiserver_recordings`).

mod common;
mod fake_apiserver;

mod apiserver_recordings;
mod bad_input;
mod costly_pods;
mod deploy_manifests;
mod lifecycle;
mod memory;
mod memory_on_oom;
mod pin_verification;
mod policy_configmaps;
mod policy_history;
mod router;
mod shared_history;
mod tls;
mod validate_policy;
mod walkarounds;
