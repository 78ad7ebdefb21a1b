//! Prometheus metrics: one registry, named series, OpenMetrics text for the admin port.
//!
//! Label values are `&'static str` wherever the set is closed, so recording a request
//! allocates nothing; only the per-policy series carry an owned policy name.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::engine::Validation;
use crate::policy::model::RuleMode;
use crate::spark::SparkRole;

/// Every series name starts with this.
pub const PREFIX: &str = "spark_admission";

/// The webhook endpoint a review came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Mutate,
    Validate,
    /// Policy ConfigMaps checked at apply time.
    ValidatePolicy,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Mutate => "mutate",
            Endpoint::Validate => "validate",
            Endpoint::ValidatePolicy => "validate_policy",
        }
    }
}

/// What the webhook answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Allowed with a non-empty patch.
    Patched,
    /// Allowed as is (not a Spark pod, not a CREATE, or nothing to change).
    Unchanged,
    /// Refused by an enforced rule.
    Denied,
    /// Allowed with warnings for the submitter.
    Warned,
    /// The body was not a usable v1 AdmissionReview (HTTP 4xx).
    BadRequest,
    /// The webhook could not answer (timeout, not ready, internal failure).
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Patched => "patched",
            Outcome::Unchanged => "unchanged",
            Outcome::Denied => "denied",
            Outcome::Warned => "warned",
            Outcome::BadRequest => "bad_request",
            Outcome::Error => "error",
        }
    }
}

/// The `role` label: the Spark role, or `none` for everything else.
pub fn role_label(role: Option<SparkRole>) -> &'static str {
    role.map_or("none", SparkRole::as_str)
}

/// A rule's mode as its label: the name policies write it with.
fn mode_label(mode: RuleMode) -> &'static str {
    match mode {
        RuleMode::Enforce => "enforce",
        RuleMode::Warn => "warn",
        RuleMode::Audit => "audit",
    }
}

/// Why a slow client was cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowClient {
    /// The request headers did not arrive within `--header-read-timeout` (HTTP/1.1), or
    /// an h2 connection sent no request in that time.
    Header,
    /// No body bytes for `--body-read-timeout`.
    BodyIdle,
    /// The body arrived slower than `--min-body-rate`.
    BodyRate,
}

impl SlowClient {
    pub fn as_str(self) -> &'static str {
        match self {
            SlowClient::Header => "header",
            SlowClient::BodyIdle => "body_idle",
            SlowClient::BodyRate => "body_rate",
        }
    }
}

/// What one policy reload (a folder scan, a ConfigMap change) led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    /// A new policy set was installed and every file (ConfigMap key) is good.
    Applied,
    /// A new set was installed; some files were rejected and keep their last good version.
    Partial,
    /// Files changed but were rejected; nothing new was installed.
    Rejected,
    /// The folder could not be read, or the ConfigMap list/watch failed.
    Failed,
}

impl ReloadResult {
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Applied => "applied",
            ReloadResult::Partial => "partial",
            ReloadResult::Rejected => "rejected",
            ReloadResult::Failed => "failed",
        }
    }
}

/// What became of a Kubernetes Event about a policy ConfigMap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventResult {
    /// Created by the API server.
    Sent,
    /// Refused or not answered by the API server.
    Failed,
    /// Not sent: too many Events were waiting.
    Dropped,
}

impl EventResult {
    pub fn as_str(self) -> &'static str {
        match self {
            EventResult::Sent => "sent",
            EventResult::Failed => "failed",
            EventResult::Dropped => "dropped",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EventLabels {
    reason: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    role: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PolicyLabels {
    policy: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FindingLabels {
    policy: String,
    rule: &'static str,
    mode: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RoleLabels {
    role: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 0.5 ms .. ~8 s: reviews take well under a millisecond; the tail shows trouble, up to
    // the default --request-timeout (8 s) and past the API server's timeoutSeconds (5 s in
    // deploy/), so a p99 alert near that timeout can see it.
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

/// Every series the server exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily<EndpointLabels>,
    policy_changes: Family<PolicyLabels, Counter>,
    rule_findings: Family<FindingLabels, Counter>,
    patch_operations: Family<RoleLabels, Counter>,
    policy_reloads: Family<ResultLabels, Counter>,
    policies_loaded: Gauge,
    policy_errors: Gauge,
    policy_watch_errors: Counter,
    policy_events: Family<EventLabels, Counter>,
    cert_not_after: Gauge,
    cert_reloads: Family<ResultLabels, Counter>,
    in_flight: Gauge,
    handler_panics: Counter,
    slow_clients: Family<ReasonLabels, Counter>,
    pinned_executors: Family<ResultLabels, Counter>,
    history_versions: Gauge,
    history_writes: Family<ResultLabels, Counter>,
    ready: Gauge,
    policy_set_installed: Gauge,
    policy_change_seen: Gauge,
    slot_waits: Family<SlotLabels, Counter>,
    memory: MemoryMetrics,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SlotLabels {
    slot: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Admission reviews answered, by endpoint, Spark role and outcome",
            requests.clone(),
        );
        let duration: HistogramFamily<EndpointLabels> =
            Family::new_with_constructor(duration_histogram);
        registry.register(
            "request_duration_seconds",
            "Time from receiving a review to having its answer ready",
            duration.clone(),
        );
        let policy_changes = Family::<PolicyLabels, Counter>::default();
        registry.register(
            "policy_changes",
            "Field changes made to pods, by the policy that made them",
            policy_changes.clone(),
        );
        let rule_findings = Family::<FindingLabels, Counter>::default();
        registry.register(
            "rule_findings",
            "Pods judged against a policy's rule and found to break it, by policy, rule and mode (enforce: denied; warn, audit: admitted with a warning or an audit annotation)",
            rule_findings.clone(),
        );
        let patch_operations = Family::<RoleLabels, Counter>::default();
        registry.register(
            "patch_operations",
            "JSON Patch operations sent to the API server, by Spark role",
            patch_operations.clone(),
        );
        let policy_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "policy_reloads",
            "Policy reloads (folder scans or ConfigMap changes that found changes), by result",
            policy_reloads.clone(),
        );
        let policies_loaded = Gauge::default();
        registry.register(
            "policies_loaded",
            "Policies in the set currently serving",
            policies_loaded.clone(),
        );
        let policy_errors = Gauge::default();
        registry.register(
            "policy_errors",
            "Errors in the policy files or ConfigMaps right now (their last good version keeps serving)",
            policy_errors.clone(),
        );
        let policy_watch_errors = Counter::default();
        registry.register(
            "policy_watch_errors",
            "Failed lists and watches of the policy ConfigMaps (retried with backoff)",
            policy_watch_errors.clone(),
        );
        let policy_events = Family::<EventLabels, Counter>::default();
        registry.register(
            "policy_events",
            "Kubernetes Events about policy ConfigMaps, by reason and result",
            policy_events.clone(),
        );
        let cert_not_after = Gauge::default();
        registry.register(
            "certificate_not_after_timestamp_seconds",
            "Expiry of the serving certificate, as a unix timestamp",
            cert_not_after.clone(),
        );
        let cert_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "certificate_reloads",
            "Serving certificate reloads after the files changed, by result",
            cert_reloads.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "in_flight_requests",
            "Reviews being processed now",
            in_flight.clone(),
        );
        let handler_panics = Counter::default();
        registry.register(
            "handler_panics",
            "Panics caught in a webhook handler (each answered 500; a bug to report)",
            handler_panics.clone(),
        );
        let slow_clients = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "slow_clients",
            "Connections or requests cut off for sending headers or a body too slowly, by reason",
            slow_clients.clone(),
        );
        let pinned_executors = Family::<ResultLabels, Counter>::default();
        registry.register(
            "pinned_executors",
            "Executors carrying a policy pin, by result (pinned: verified against the executor's stored driver, every pinned version found; missing: verified, some versions no longer known; forged: contradicts the driver's own pin; unverified: no driver to check against; malformed: not a pin). Only pinned and missing use pinned versions",
            pinned_executors.clone(),
        );
        let history_versions = Gauge::default();
        registry.register(
            "policy_history_versions",
            "Policy versions kept in the version history (current and retired)",
            history_versions.clone(),
        );
        let history_writes = Family::<ResultLabels, Counter>::default();
        registry.register(
            "policy_history_writes",
            "Writes of the version history ConfigMap, by result (ok, conflict: retried, error)",
            history_writes.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 when this replica answers /readyz with 200 (policies loaded, not shutting down), else 0",
            ready.clone(),
        );
        let policy_set_installed = Gauge::default();
        registry.register(
            "policy_set_installed_timestamp_seconds",
            "When the policy set serving now was installed, as a unix timestamp (0: none yet)",
            policy_set_installed.clone(),
        );
        let policy_change_seen = Gauge::default();
        registry.register(
            "policy_change_seen_timestamp_seconds",
            "When the policy source (folder or ConfigMaps) last showed a change of its good policies (new, edited or removed), as a unix timestamp",
            policy_change_seen.clone(),
        );
        let slot_waits = Family::<SlotLabels, Counter>::default();
        registry.register(
            "slot_waits",
            "Reviews that found every evaluation slot taken and had to wait (--max-concurrent-requests), by slot",
            slot_waits.clone(),
        );
        registry.register_collector(Box::new(process::ProcessCollector));
        // Closed label sets start at 0: a series that first appears at 1 is invisible to
        // increase() and rate(), so the first slow client, missing pin or failed reload
        // would not alert; and dashboards show 0 rather than "no data".
        for reason in [
            SlowClient::Header,
            SlowClient::BodyIdle,
            SlowClient::BodyRate,
        ] {
            slow_clients
                .get_or_create(&ReasonLabels {
                    reason: reason.as_str(),
                })
                .inc_by(0);
        }
        for result in [
            ReloadResult::Applied,
            ReloadResult::Partial,
            ReloadResult::Rejected,
            ReloadResult::Failed,
        ] {
            policy_reloads
                .get_or_create(&ResultLabels {
                    result: result.as_str(),
                })
                .inc_by(0);
        }
        for (family, results) in [
            (
                &pinned_executors,
                &["pinned", "missing", "forged", "unverified", "malformed"][..],
            ),
            (&cert_reloads, &["ok", "error"][..]),
            (&history_writes, &["ok", "conflict", "error"][..]),
        ] {
            for &result in results {
                family.get_or_create(&ResultLabels { result }).inc_by(0);
            }
        }
        for slot in ["review", "large_review", "heavy_review", "large_read"] {
            slot_waits.get_or_create(&SlotLabels { slot }).inc_by(0);
        }
        let memory = MemoryMetrics::register(&mut registry);
        Self {
            registry,
            requests,
            duration,
            policy_changes,
            rule_findings,
            patch_operations,
            policy_reloads,
            policies_loaded,
            policy_errors,
            policy_watch_errors,
            policy_events,
            cert_not_after,
            cert_reloads,
            in_flight,
            handler_panics,
            slow_clients,
            pinned_executors,
            history_versions,
            history_writes,
            ready,
            policy_set_installed,
            policy_change_seen,
            slot_waits,
            memory,
        }
    }

    /// One answered review.
    pub fn record_request(
        &self,
        endpoint: Endpoint,
        role: Option<SparkRole>,
        outcome: Outcome,
        seconds: f64,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.as_str(),
                role: role_label(role),
                outcome: outcome.as_str(),
            })
            .inc();
        self.duration
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.as_str(),
            })
            .observe(seconds);
    }

    /// The changes one mutation made, counted per policy.
    pub fn record_changes(&self, by_policy: &[(String, u32)]) {
        for (policy, n) in by_policy {
            self.add_changes(policy, u64::from(*n));
        }
    }

    /// The rules one judged pod broke: each (policy, rule, mode) counted once per pod,
    /// however many of its containers or volumes broke it.
    pub fn record_findings(&self, validation: &Validation) {
        let mut counted: Vec<(&str, &str, RuleMode)> = Vec::new();
        for f in &validation.findings {
            let key = (f.policy.as_str(), f.rule, f.mode);
            if counted.contains(&key) {
                continue;
            }
            counted.push(key);
            self.rule_findings
                .get_or_create(&FindingLabels {
                    policy: f.policy.clone(),
                    rule: f.rule,
                    mode: mode_label(f.mode),
                })
                .inc();
        }
    }

    fn add_changes(&self, policy: &str, n: u64) {
        self.policy_changes
            .get_or_create(&PolicyLabels {
                policy: policy.to_owned(),
            })
            .inc_by(n);
    }

    pub fn record_patch_operations(&self, role: Option<SparkRole>, ops: usize) {
        if ops > 0 {
            self.patch_operations
                .get_or_create(&RoleLabels {
                    role: role_label(role),
                })
                .inc_by(ops as u64);
        }
    }

    pub fn record_policy_reload(&self, result: ReloadResult) {
        self.policy_reloads
            .get_or_create(&ResultLabels {
                result: result.as_str(),
            })
            .inc();
    }

    pub fn set_policies_loaded(&self, n: usize) {
        self.policies_loaded
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn set_policy_errors(&self, n: usize) {
        self.policy_errors.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn record_policy_watch_error(&self) {
        self.policy_watch_errors.inc();
    }

    /// Starts the Event counters of these reasons at 0 (the ConfigMap source sends Events;
    /// the folder source none, and exports no such series).
    pub fn init_policy_events(&self, reasons: &[&'static str]) {
        for &reason in reasons {
            for result in [EventResult::Sent, EventResult::Failed, EventResult::Dropped] {
                self.policy_events
                    .get_or_create(&EventLabels {
                        reason,
                        result: result.as_str(),
                    })
                    .inc_by(0);
            }
        }
    }

    pub fn record_policy_event(&self, reason: &'static str, result: EventResult) {
        self.policy_events
            .get_or_create(&EventLabels {
                reason,
                result: result.as_str(),
            })
            .inc();
    }

    pub fn set_certificate_not_after(&self, unix_seconds: i64) {
        self.cert_not_after.set(unix_seconds);
    }

    pub fn record_certificate_reload(&self, ok: bool) {
        self.cert_reloads
            .get_or_create(&ResultLabels {
                result: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    /// A client cut off for being too slow.
    pub fn record_slow_client(&self, reason: SlowClient) {
        self.slow_clients
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// An executor carrying a pin, by how it resolved (`pinning::Resolution::result`):
    /// pinned, missing, forged, unverified or malformed.
    pub fn record_pinned_executor(&self, result: &'static str) {
        self.pinned_executors
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn set_history_versions(&self, n: usize) {
        self.history_versions.set(n as i64);
    }

    /// One write attempt of the history ConfigMap: `ok`, `conflict` or `error`.
    pub fn record_history_write(&self, result: &'static str) {
        self.history_writes
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Whether this replica is ready, as `/readyz` says (set before each scrape).
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// A new policy set went live at `unix_seconds`.
    pub fn set_policy_set_installed(&self, unix_seconds: i64) {
        self.policy_set_installed.set(unix_seconds);
    }

    /// The policy source showed new content at `unix_seconds`.
    pub fn set_policy_change_seen(&self, unix_seconds: i64) {
        self.policy_change_seen.set(unix_seconds);
    }

    /// A review waited for a slot: `review` (every review), `heavy_review` (bodies evaluated
    /// off the async workers) or `large_review` (the largest bodies).
    pub fn record_slot_wait(&self, slot: &'static str) {
        self.slot_waits.get_or_create(&SlotLabels { slot }).inc();
    }

    /// A panic caught in a webhook handler.
    pub fn record_handler_panic(&self) {
        self.handler_panics.inc();
    }

    /// Counts a review as in flight until the guard is dropped.
    pub fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(&self.in_flight)
    }

    /// OpenMetrics text exposition of every series.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(4096);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Decrements the in-flight gauge when the review is done, whichever way it ends.
#[derive(Debug)]
pub struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Content type of [`Metrics::encode`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Resident memory and CPU time of this process, read from `/proc` at each scrape, so a
/// dashboard shows them without a node exporter or cAdvisor (and the same on a laptop).
mod process {
    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
    use prometheus_client::metrics::counter::ConstCounter;
    use prometheus_client::metrics::gauge::ConstGauge;

    #[derive(Debug)]
    pub(super) struct ProcessCollector;

    impl Collector for ProcessCollector {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            // Elsewhere than Linux, or /proc not mounted: the series are simply absent.
            let Some(sample) = read() else {
                return Ok(());
            };
            let rss = ConstGauge::new(sample.resident_bytes);
            rss.encode(encoder.encode_descriptor(
                "process_resident_memory_bytes",
                "Resident memory of the webhook process (RSS)",
                None,
                rss.metric_type(),
            )?)?;
            let cpu = ConstCounter::new(sample.cpu_seconds);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "CPU time used by the webhook process (user + system)",
                None,
                cpu.metric_type(),
            )?)?;
            Ok(())
        }
    }

    struct Sample {
        resident_bytes: i64,
        cpu_seconds: f64,
    }

    #[cfg(target_os = "linux")]
    fn read() -> Option<Sample> {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        let page = i64::try_from(rustix::param::page_size()).ok()?;
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name (field 2) may hold spaces and parentheses: count from its end.
        let rest = &stat[stat.rfind(')')? + 1..];
        let mut fields = rest.split_whitespace();
        // After the name: state is field 3, utime 14 and stime 15 (proc(5)).
        let utime: u64 = fields.nth(11)?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        let ticks = rustix::param::clock_ticks_per_second().max(1);
        Some(Sample {
            resident_bytes: pages.saturating_mul(page),
            cpu_seconds: (utime + stime) as f64 / ticks as f64,
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn read() -> Option<Sample> {
        None
    }

    #[cfg(all(test, target_os = "linux"))]
    mod tests {
        #[test]
        fn this_process_has_resident_memory_and_has_used_cpu() {
            // Burn a little CPU so that at least one clock tick is counted.
            let start = std::time::Instant::now();
            let mut x = 0u64;
            while start.elapsed() < std::time::Duration::from_millis(50) {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            let s = super::read().expect("a /proc sample");
            assert!(s.resident_bytes > 1024 * 1024, "{}", s.resident_bytes);
            assert!(s.cpu_seconds > 0.0);
        }
    }
}
/// OOM-aware memory: raises made at admission and the size of the remembered state.
#[derive(Debug)]
struct MemoryMetrics {
    raises: Family<RoleLabels, Counter>,
    ooms: Family<OomLabels, Counter>,
    entries: Gauge,
    bytes: Gauge,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OomLabels {
    role: &'static str,
    result: &'static str,
}

/// What followed an OOMKilled Spark pod where `memoryOnOOM` applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OomResult {
    /// A new raise was remembered for its application.
    Raised,
    /// It already had the policy's `max`: no further raise; the job may keep failing.
    AtMax,
}

impl OomResult {
    pub fn as_str(self) -> &'static str {
        match self {
            OomResult::Raised => "raised",
            OomResult::AtMax => "at_max",
        }
    }
}

impl MemoryMetrics {
    fn register(registry: &mut Registry) -> Self {
        let raises = Family::<RoleLabels, Counter>::default();
        registry.register(
            "memory_raises",
            "Spark pods admitted with more memory after an OOMKilled pod of their application, by role",
            raises.clone(),
        );
        let ooms = Family::<OomLabels, Counter>::default();
        registry.register(
            "memory_ooms",
            "OOMKilled Spark pods this replica saw where memoryOnOOM applies, by role and result: raised (a raise remembered) or at_max (already at the policy's max)",
            ooms.clone(),
        );
        // From 0, so that increase() sees the first one (and dashboards find the series).
        for role in [SparkRole::Driver, SparkRole::Executor] {
            raises
                .get_or_create(&RoleLabels {
                    role: role.as_str(),
                })
                .inc_by(0);
            for result in [OomResult::Raised, OomResult::AtMax] {
                ooms.get_or_create(&OomLabels {
                    role: role.as_str(),
                    result: result.as_str(),
                })
                .inc_by(0);
            }
        }
        let entries = Gauge::default();
        registry.register(
            "memory_state_entries",
            "Memory raises remembered after OOMKilled pods (all state ConfigMaps)",
            entries.clone(),
        );
        let bytes = Gauge::default();
        registry.register(
            "memory_state_bytes",
            "Bytes of the remembered memory raises in the state ConfigMaps",
            bytes.clone(),
        );
        Self {
            raises,
            ooms,
            entries,
            bytes,
        }
    }
}

impl Metrics {
    /// A pod admitted with its memory raised after an OOM.
    pub fn record_memory_raise(&self, role: Option<SparkRole>) {
        self.memory
            .raises
            .get_or_create(&RoleLabels {
                role: role_label(role),
            })
            .inc();
    }

    /// An OOMKilled Spark pod seen by the pod watch, where memoryOnOOM applies.
    pub fn record_memory_oom(&self, role: SparkRole, result: OomResult) {
        self.memory
            .ooms
            .get_or_create(&OomLabels {
                role: role.as_str(),
                result: result.as_str(),
            })
            .inc();
    }

    pub fn set_memory_state(&self, entries: usize, bytes: usize) {
        self.memory.entries.set(entries as i64);
        self.memory.bytes.set(bytes as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Finding;

    fn finding(policy: &str, rule: &'static str, mode: RuleMode) -> Finding {
        Finding {
            policy: policy.to_owned(),
            rule,
            mode,
            message: String::new(),
        }
    }

    /// A rule reported for two volumes of one pod counts the pod once; another rule,
    /// policy or mode is its own series; the next pod counts again.
    #[test]
    fn each_broken_rule_counts_a_pod_once() {
        let m = Metrics::new();
        let pod = Validation {
            findings: vec![
                finding("team", "forbiddenVolumeTypes", RuleMode::Enforce),
                finding("team", "forbiddenVolumeTypes", RuleMode::Enforce),
                finding("team", "allowedImages", RuleMode::Enforce),
                finding("audit", "forbiddenVolumeTypes", RuleMode::Audit),
            ],
            checked: Vec::new(),
        };
        m.record_findings(&pod);
        m.record_findings(&pod);
        m.record_findings(&Validation::default());
        let text = m.encode().unwrap();
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("spark_admission_rule_findings_total{"))
            .collect();
        assert_eq!(series.len(), 3, "{text}");
        for line in [
            r#"spark_admission_rule_findings_total{policy="team",rule="forbiddenVolumeTypes",mode="enforce"} 2"#,
            r#"spark_admission_rule_findings_total{policy="team",rule="allowedImages",mode="enforce"} 2"#,
            r#"spark_admission_rule_findings_total{policy="audit",rule="forbiddenVolumeTypes",mode="audit"} 2"#,
        ] {
            assert!(series.contains(&line), "missing {line:?} in\n{text}");
        }
    }
}
