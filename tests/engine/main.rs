//! The engine's tests, one binary: the merge rules (`merge`), the golden fixtures
//! (`golden`), properties over generated policies × the real pods (`props`), every input
//! the fuzzers ever found (`fuzz_regressions`), the policy format and its schema
//! (`policy_schema`). They need no server and no cluster.

mod engine_support;
mod fuzz_regressions;
mod golden;
mod memory_on_oom;
mod merge;
mod pin_props;
mod policy_schema;
mod props;
mod resource_props;

// The fuzz targets' own checks, replayed here without cargo-fuzz.
#[path = "../../fuzz/fuzz_targets/common.rs"]
mod fuzz_common;
