//! Replays the fuzz seeds and every input a fuzzer ever found (fuzz/regressions/) through
//! the fuzz targets' own checks, so a fixed finding stays fixed without cargo-fuzz.

use crate::fuzz_common as common;

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut count = 0;
    for dir in [
        root.join("seeds").join(target),
        root.join("regressions").join(target),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(outcome.is_ok(), "{target}: {} fails", path.display());
            count += 1;
        }
    }
    assert!(count > 0, "no inputs for {target}");
}

#[test]
fn review_inputs() {
    replay("review", common::review);
}

#[test]
fn planner_inputs() {
    replay("planner", common::planner);
}

#[test]
fn policy_inputs() {
    replay("policy", common::policy);
}

#[test]
fn decoder_inputs() {
    replay("decoder", common::decoder);
}
