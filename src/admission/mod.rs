//! The HTTPS admission webhook: `POST /mutate` and `POST /validate` over TLS (h2 and
//! HTTP/1.1), `POST /validate-policy` for policy ConfigMaps, an admin port with health
//! probes and metrics, certificate and policy hot reload, and a graceful shutdown.
//!
//! `spark-admission serve` with no flags serves `./policies` with certificates from
//! `./certs` (generated on first start) on `[::]:8443`, admin on `[::]:8080`, both
//! dual-stack (IPv6 and IPv4). With `--policy-namespace NS`, or `POD_NAMESPACE` set (in a
//! cluster), policies come from the ConfigMaps of that namespace labelled
//! `spark-admission.io/policy: "true"` instead. The flags live with the CLI
//! (`crate::cli::ServeArgs`), which maps them onto a [`ServerConfig`].
//!
//! A review travels `handlers` (HTTP in and out) → `body` (read within its deadline) →
//! `schedule` (a slot; inline, or on the blocking pool when large) → `service` (decode →
//! recognise → plan or judge → answer), which hands a pod's CREATE to `pods` (with `pins`)
//! and its UPDATE to `update`. A review is refused in one way, a `refusal::Refusal`;
//! what an answered one leads to is its `decision::Decision`. The `server` starts in
//! stages (certificates → policy sources → bind → serve).

mod admin;
pub mod answer;
mod body;
mod decision;
mod handlers;
mod pins;
mod pods;
mod policies;
pub mod policy_review;
pub mod prescan;
mod refusal;
pub mod review;
mod schedule;
mod server;
mod service;
mod state;
pub mod tls;
mod update;
mod warnings;

pub use crate::shutdown::ShutdownHandle;
pub use admin::{admin_router, Health};
pub use handlers::{webhook_router, MUTATE_PATH, VALIDATE_PATH, VALIDATE_POLICY_PATH};
pub use policies::PolicyWatcher;
pub use server::{
    BindError, PolicySourceConfig, PolicyStartError, ServeError, Server, ServerConfig, SpawnError,
    TlsStartError, POD_NAMESPACE_ENV, POD_NAME_ENV, POD_UID_ENV,
};
pub use state::{AppState, Limits};
