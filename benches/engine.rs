//! Engine benchmarks on the real fixtures (`cargo bench --bench engine`).
//!
//! - `mutate/<fixture>/<N>`: `Engine::mutate` on an already-decoded Pod, N policies loaded
//!   (1 … 10,000, spread over 10,000 namespaces, at most 10 matching `spark-jobs`).
//! - `review/<fixture>/<N>`: what the server does per `/mutate` body: decode the
//!   AdmissionReview, mutate, build and encode the response (metrics and logging excluded).
//! - `decode/<fixture>`: the decode step alone, to split the review cost.
//! - `decode-indented/<fixture>`: the same on the fixture file as saved, indented, which is
//!   what the figures before 3 December 2026 measured. `review/*` and `decode/*` take the
//!   body as the API server sends it (`fixtures::as_sent`: no whitespace between tokens).
//! - `json-floor/<fixture>`: the body read as JSON and thrown away (`IgnoredAny`): what
//!   checking that the body is JSON at all costs, below which no decode that refuses a
//!   malformed body can go.
//! - `validate/<fixture>/<N>`: `Engine::validate` on the same pods.
//! - `update/<fixture>/{create,annotation,image}`: decode + validate of an UPDATE body that
//!   changes an annotation (not judged) or the image (judged), against the CREATE body.
//! - `compile/<N>`: the reload cost: `parse_documents` (YAML, schema check, compile) on the
//!   policy files plus `PolicySet::new`.
//! - `reload/<N>`: a full scan of a policy folder of N policies (read, parse the files over
//!   the machine's cores, compile) and the new set: startup, or a rewrite of every file.
//! - `runtime/*`: the cost of handing a review to tokio's blocking pool, as the server does.
//!
//! Timing defaults are short so the whole matrix runs in minutes on 2 cores; override them
//! with criterion's own flags (`-- --measurement-time 5 --sample-size 100`).

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use k8s_openapi::api::core::v1::Pod;
use spark_admission::admission::answer::Answer;
use spark_admission::admission::review::{self, Review, AUDIT_APPLIED};
use spark_admission::engine::{Deadline, Engine, MutateRequest};
use spark_admission::matching::PolicySet;
use spark_admission::policy::{parse_documents, PolicySource};
use spark_admission::source::FolderSource;

use spark_admission_testkit::bench_policies as policies;
use spark_admission_testkit::fixtures::as_sent;

// The server binary's allocator (src/main.rs), so the figures are the server's.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const POLICY_COUNTS: [usize; 5] = [1, 10, 100, 1_000, 10_000];
/// Documents per policy file when compiling: 10,000 policies are 100 files.
const PER_FILE: usize = 100;

struct Fixture {
    name: String,
    pod: Pod,
    /// The AdmissionReview body as the API server sent it (admission fixtures only).
    body: Option<Vec<u8>>,
    /// The fixture file as saved (indented).
    indented: Option<Vec<u8>>,
}

fn fixtures() -> Vec<Fixture> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out = Vec::new();
    for (dir, prefix) in [("spark", ""), ("admission", "mutate-")] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(dir))
            .expect("fixture folder")
            .map(|e| e.expect("fixture entry").path())
            .filter(|p| {
                let name = p.file_name().unwrap_or_default().to_string_lossy();
                name.ends_with(".json") && name.starts_with(prefix)
            })
            .collect();
        files.sort();
        for path in files {
            let bytes = std::fs::read(&path).expect("fixture");
            let stem = path.file_stem().unwrap_or_default().to_string_lossy();
            let (pod, body, indented) = if dir == "admission" {
                let v: serde_json::Value = serde_json::from_slice(&bytes).expect("review JSON");
                let pod = serde_json::from_value(v["request"]["object"].clone()).expect("pod");
                (pod, Some(as_sent(&bytes)), Some(bytes))
            } else {
                (
                    serde_json::from_slice(&bytes).expect("pod JSON"),
                    None,
                    None,
                )
            };
            out.push(Fixture {
                name: format!("{dir}/{stem}"),
                pod,
                body,
                indented,
            });
        }
    }
    out
}

fn policy_set(total: usize) -> PolicySet {
    let mut all = Vec::with_capacity(total);
    for (name, text) in policies::files(total, PER_FILE) {
        let parsed = parse_documents(&PolicySource(name), &text).expect("bench policies load");
        all.extend(parsed.into_iter().map(Arc::new));
    }
    PolicySet::new(all)
}

/// One `/mutate` review as the router answers it, minus metrics and the log line.
fn review_once(engine: &Engine, set: &PolicySet, body: &[u8]) -> Vec<u8> {
    let Ok(review) = review::decode(body) else {
        panic!("fixture does not decode");
    };
    let answer = match &review {
        // The mutating webhook never changes an UPDATE.
        Review::PassThrough { uid, .. } => Answer::allow(uid.as_str()),
        Review::PodUpdate(update) => Answer::allow(update.new.uid.as_str()),
        Review::PodCreate(create) => {
            let mutation = engine
                .mutate(MutateRequest::new(set, &create.pod, &create.namespace))
                .expect("the engine plans the pod");
            let mut answer = Answer::allow(create.uid.as_str());
            answer.set_patch(&mutation.patch).expect("patch encodes");
            if !mutation.applied.is_empty() {
                answer
                    .audit_annotations
                    .insert(AUDIT_APPLIED.to_owned(), mutation.applied.join(","));
            }
            answer.warnings = mutation.warnings;
            answer
        }
    };
    answer.to_review_json().expect("answer encodes")
}

fn configure() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30)
        .configure_from_args()
}

/// `cargo bench` passes `--bench`; without it (`cargo test --benches`, CI) criterion runs
/// each benchmark once as a test, and the largest sets are left out to keep that quick.
fn counts() -> Vec<usize> {
    if std::env::args().any(|a| a == "--bench") {
        POLICY_COUNTS.to_vec()
    } else {
        vec![1, 10, 100]
    }
}

fn bench_engine(c: &mut Criterion) {
    let engine = Engine::default();
    let fixtures = fixtures();
    let sets: Vec<(usize, PolicySet)> = counts().into_iter().map(|n| (n, policy_set(n))).collect();
    let ns = policies::MATCHING_NAMESPACE;

    // Sanity: the benchmark measures real work (10 policies apply to a driver).
    if let (Some(f), Some((_, set))) = (fixtures.first(), sets.last()) {
        let m = engine
            .mutate(MutateRequest::new(set, &f.pod, ns))
            .expect("the engine plans the pod");
        assert!(!m.patch.0.is_empty() && m.applied.len() >= 8, "{m:?}");
    }

    for f in &fixtures {
        let mut g = c.benchmark_group(format!("mutate/{}", f.name));
        for (n, set) in &sets {
            g.bench_with_input(BenchmarkId::from_parameter(n), set, |b, set| {
                b.iter(|| engine.mutate(MutateRequest::new(black_box(set), black_box(&f.pod), ns)))
            });
        }
        g.finish();
    }
    for f in &fixtures {
        let Some(body) = &f.body else { continue };
        let mut g = c.benchmark_group(format!("review/{}", f.name));
        for (n, set) in &sets {
            g.bench_with_input(BenchmarkId::from_parameter(n), set, |b, set| {
                b.iter(|| review_once(&engine, black_box(set), black_box(body)))
            });
        }
        g.finish();
    }
    for f in &fixtures {
        let Some(body) = &f.body else { continue };
        c.bench_function(&format!("decode/{}", f.name), |b| {
            b.iter(|| review::decode(black_box(body)).is_ok())
        });
    }
    for f in &fixtures {
        let Some(body) = &f.indented else { continue };
        c.bench_function(&format!("decode-indented/{}", f.name), |b| {
            b.iter(|| review::decode(black_box(body)).is_ok())
        });
    }
    for f in &fixtures {
        let Some(body) = &f.body else { continue };
        c.bench_function(&format!("json-floor/{}", f.name), |b| {
            b.iter(|| serde_json::from_slice::<serde::de::IgnoredAny>(black_box(body)).is_ok())
        });
    }
    for f in fixtures.iter().filter(|f| f.body.is_some()) {
        let mut g = c.benchmark_group(format!("validate/{}", f.name));
        for (n, set) in sets.iter().filter(|(n, _)| [10, 10_000].contains(n)) {
            g.bench_with_input(BenchmarkId::from_parameter(n), set, |b, set| {
                b.iter(|| engine.validate(black_box(set), black_box(&f.pod), ns))
            });
        }
        g.finish();
    }
}

/// An UPDATE body of the fixture's pod, as the API server sends it: oldObject the pod,
/// object the pod after `change`.
fn update_body(body: &[u8], change: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(body).expect("fixture is JSON");
    let r = &mut v["request"];
    r["operation"] = serde_json::json!("UPDATE");
    r["oldObject"] = r["object"].clone();
    change(&mut r["object"]);
    serde_json::to_vec(&v).expect("JSON")
}

/// `update/<fixture>/{annotation,image}`: what `/validate` does per UPDATE body (decode,
/// then `Engine::validate_update`) with 10 policies: an annotation (not judged) and a new
/// image (the pod judged); `create` is the CREATE review of the same pod, for scale.
fn bench_updates(c: &mut Criterion) {
    let engine = Engine::default();
    let set = policy_set(10);
    for f in fixtures().iter() {
        let Some(body) = &f.body else { continue };
        let annotation = update_body(body, |o| {
            o["metadata"]["annotations"] = serde_json::json!({"example.com/note": "x"})
        });
        let image = update_body(body, |o| {
            o["spec"]["containers"][0]["image"] = serde_json::json!("apache/spark:3.5.4")
        });
        let mut g = c.benchmark_group(format!("update/{}", f.name));
        for (what, body) in [
            ("create", body),
            ("annotation", &annotation),
            ("image", &image),
        ] {
            g.bench_function(what, |b| {
                b.iter(|| match review::decode(black_box(body)) {
                    Ok(Review::PodUpdate(u)) => engine
                        .validate_update(
                            &set,
                            &u.old,
                            &u.new.pod,
                            &u.new.namespace,
                            Deadline::none(),
                        )
                        .map_or(0, |v| v.map_or(0, |v| v.findings.len())),
                    Ok(Review::PodCreate(p)) => {
                        engine.validate(&set, &p.pod, &p.namespace).findings.len()
                    }
                    _ => panic!("not a pod review"),
                })
            });
        }
        g.finish();
    }
}

fn bench_compile(c: &mut Criterion) {
    let mut g = c.benchmark_group("compile");
    // Seconds per iteration at 10,000: a few samples are enough for a stable median.
    g.sample_size(10);
    let largest = counts().last().copied().unwrap_or(1);
    for n in [1_000usize, 10_000]
        .into_iter()
        .filter(|n| *n <= largest * 10)
    {
        let files = policies::files(n, PER_FILE);
        g.bench_with_input(BenchmarkId::from_parameter(n), &files, |b, files| {
            b.iter(|| {
                let mut all = Vec::with_capacity(n);
                for (name, text) in files {
                    let parsed = parse_documents(&PolicySource(name.clone()), text)
                        .expect("bench policies load");
                    all.extend(parsed.into_iter().map(Arc::new));
                }
                PolicySet::new(all)
            })
        });
    }
    g.finish();

    // What the server does on startup or when every file changed: a scan of the policy
    // folder (read, parse the changed files over the machine's cores, compile) and the
    // new set.
    let mut g = c.benchmark_group("reload");
    g.sample_size(10);
    for n in [1_000usize, 10_000]
        .into_iter()
        .filter(|n| *n <= largest * 10)
    {
        let dir = tempfile::tempdir().expect("scratch folder");
        for (name, text) in policies::files(n, PER_FILE) {
            std::fs::write(dir.path().join(name), text).expect("policy file");
        }
        g.bench_with_input(BenchmarkId::from_parameter(n), dir.path(), |b, dir| {
            b.iter(|| {
                let mut source = FolderSource::new(dir);
                let report = source.scan().expect("scan");
                assert!(report.errors.is_empty(), "{:?}", report.errors);
                source.policy_set()
            })
        });
    }
    g.finish();
}

fn bench_runtime(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut g = c.benchmark_group("runtime");
    // Timed inside a runtime task, as the router's handler runs.
    g.bench_function("inline", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async move {
                tokio::spawn(async move {
                    let start = Instant::now();
                    for i in 0..iters {
                        black_box(i);
                    }
                    start.elapsed()
                })
                .await
                .expect("task")
            })
        })
    });
    g.bench_function("spawn_blocking", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async move {
                tokio::spawn(async move {
                    let start = Instant::now();
                    for i in 0..iters {
                        let _ = tokio::task::spawn_blocking(move || black_box(i)).await;
                    }
                    start.elapsed()
                })
                .await
                .expect("task")
            })
        })
    });
    g.finish();
}

fn main() {
    let mut c = configure();
    bench_engine(&mut c);
    bench_updates(&mut c);
    bench_compile(&mut c);
    bench_runtime(&mut c);
    c.final_summary();
}
