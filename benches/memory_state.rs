//! OOM-aware memory: what a review pays for the remembered raises
//! (`cargo bench --bench memory_state`).
//!
//! - `memory/lookup/<N>`: `MemoryState::lookup` for an executor whose application is
//!   remembered, with N applications remembered (the per-review cost of the state).
//! - `memory/mutate/<N>`: lookup plus `Engine::mutate_remembering` with the example policies
//!   (the raise applies), N remembered; `memory/mutate/none` is `Engine::mutate` without
//!   the feature, for comparison.
//!
//! It also prints the state's size for N = 10,000 under the default bounds.

use std::hint::black_box;
use std::path::Path;

use criterion::{BenchmarkId, Criterion};
use k8s_openapi::api::core::v1::Pod;
use spark_admission::engine::{Engine, MutateRequest};
use spark_admission::matching::PolicySet;
use spark_admission::memory::{MemoryConfig, MemoryState, Shard};
use spark_admission::memory_on_oom::{OomRaise, RememberedMemory};
use spark_admission::spark::{ContainerNames, SparkRole};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NS: &str = "spark-etl";

fn raise(ns: &str, app: &str, i: i64, now: i64) -> OomRaise {
    OomRaise {
        key: format!("{ns}/executor/name:{app}"),
        role: SparkRole::Executor,
        policy: "memory-on-oom".into(),
        remembered: RememberedMemory {
            memory: 4320 << 20,
            from: 3456 << 20,
            oom_pod: format!("{app}-0123456789abcdef-exec-{}", i % 50),
            oom_at: now - 86_400 + i,
            expires: now + 13 * 86_400 + i,
        },
    }
}

/// A state holding `n` applications (the fixture's own among them) over 100 namespaces
/// (a namespace holds at most 2,000), filled the way the writer fills it: merged per
/// shard under the default bounds.
fn state(n: usize) -> MemoryState {
    let state = MemoryState::new(MemoryConfig::default(), ContainerNames::default(), None);
    let now = spark_admission::memory::now();
    let mut by_shard: Vec<Vec<OomRaise>> = vec![Vec::new(); state.config().shards];
    for i in 0..n {
        let (ns, app) = if i == 0 {
            (NS.to_owned(), "spark-pi-rich".to_owned())
        } else {
            (
                format!("team-{:03}", i % 100),
                format!("nightly-etl-job-{i:05}"),
            )
        };
        let r = raise(&ns, &app, i as i64, now);
        by_shard[state.shard_of(&r.key)].push(r);
    }
    for (index, raises) in by_shard.iter().enumerate() {
        if let Some(entries) = state.merged(&Shard::default(), raises, now) {
            let text = spark_admission::memory::encode(&entries);
            state.install(
                index,
                Shard {
                    resource_version: Some("1".into()),
                    entries: entries.into_iter().collect(),
                    bytes: text.len(),
                },
            );
        }
    }
    state
}

fn bench(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("tests/fixtures/spark/executor-rich-1.json"))
        .expect("fixture");
    let pod: Pod = serde_json::from_str(&text).expect("a pod");
    let (policies, errors) = spark_admission::source::load_paths(&[root.join("policies")]);
    assert!(errors.is_empty(), "{errors:?}");
    let set = PolicySet::new(policies);
    let engine = Engine::default();
    let now = spark_admission::memory::now();

    let big = state(10_000);
    let (entries, bytes) = big.size();
    let largest = (0..big.config().shards)
        .map(|i| big.shard(i).bytes)
        .max()
        .unwrap_or(0);
    eprintln!(
        "10,000 remembered apps: {entries} entries kept, {bytes} bytes in {} ConfigMaps (largest {largest} bytes, bound {})",
        big.config().shards,
        big.config().max_shard_bytes
    );
    assert_eq!(entries, 10_000);
    assert!(largest <= big.config().max_shard_bytes);

    let states: Vec<(usize, MemoryState)> =
        [1, 10_000].into_iter().map(|n| (n, state(n))).collect();
    // Sanity: the raise applies (the benchmark measures the real work).
    for (_, s) in &states {
        let r = s.lookup(NS, &pod, now).expect("remembered");
        let m = engine
            .mutate(MutateRequest::new(&set, &pod, NS).remembering(Some(&r)))
            .expect("planned");
        assert!(m.memory_raised);
    }

    let mut g = c.benchmark_group("memory/lookup");
    for (n, s) in &states {
        g.bench_with_input(BenchmarkId::from_parameter(n), s, |b, s| {
            b.iter(|| s.lookup(NS, black_box(&pod), now))
        });
    }
    g.finish();
    let mut g = c.benchmark_group("memory/mutate");
    g.bench_function("none", |b| {
        b.iter(|| engine.mutate(MutateRequest::new(&set, black_box(&pod), NS)))
    });
    for (n, s) in &states {
        g.bench_with_input(BenchmarkId::from_parameter(n), s, |b, s| {
            b.iter(|| {
                let r = s.lookup(NS, black_box(&pod), now);
                engine.mutate(MutateRequest::new(&set, black_box(&pod), NS).remembering(r.as_ref()))
            })
        });
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
        .configure_from_args();
    bench(&mut c);
    c.final_summary();
}
