#!/usr/bin/env bash
# Reads the output of `cargo test` (and of the extra CI steps) and prints the table of test
# tiers: each test target, how many tests ran, how many were skipped and why, then the
# totals as one closing line. Usage: scripts/tiers.sh LOG [EXTRA_ROW ...]
# An EXTRA_ROW is "name|ran|skipped|note", for steps that are not cargo test targets.
set -euo pipefail
log=$1; shift
awk -v extra="$(printf '%s\n' "$@")" '
  function flush_target() { target = "" }
  # "Running tests/e2e/main.rs (target/debug/deps/e2e-0123abcd)" or "Running unittests src/lib.rs (…/spark_admission_core-…)"
  /^ *Running / {
    bin = $NF; gsub(/[()]/, "", bin); sub(/.*\//, "", bin); sub(/-[0-9a-f]+$/, "", bin)
    # An integration test path is relative to its package: name the package when it is not
    # the webhook (cargo runs the unit tests of a package before its integration tests).
    if ($2 == "unittests") { target = "unit " bin; pkg = bin }
    else if (pkg != "" && pkg != "spark_admission") target = pkg " " $2
    else target = $2
    next
  }
  /^ *Doc-tests / { target = "doctests " $2; next }
  # One line per skipped tier, printed by crates/testkit/src/tier.rs.
  /^tier .*: skipped [0-9]+ test\(s\): / {
    why = $0; sub(/^tier /, "", why); sub(/: skipped [0-9]+ test\(s\): /, ": ", why); sub(/; to run them: .*/, "", why)
    note[target] = (note[target] == "" ? why : note[target] "; " why)
    next
  }
  /^test result: / {
    passed = $4; failed = $6; ignored = $8
    sub(/;/, "", passed); sub(/;/, "", failed); sub(/;/, "", ignored)
    rows[++n] = target; ran[target] += passed + failed; skip[target] += ignored; bad[target] += failed
    next
  }
  END {
    printf "%-44s %6s %8s  %s\n", "tier (test target)", "ran", "skipped", "note"
    for (i = 1; i <= n; i++) {
      t = rows[i]; if (seen[t]++) continue
      why = note[t]
      if (why == "" && skip[t] > 0) why = "#[ignore]"
      if (bad[t] > 0) why = bad[t] " FAILED" (why == "" ? "" : "; " why)
      printf "%-44s %6d %8d  %s\n", t, ran[t], skip[t], why
      total_ran += ran[t]; total_skip += skip[t]; total_bad += bad[t]
    }
    m = split(extra, ex, "\n")
    for (i = 1; i <= m; i++) {
      if (ex[i] == "") continue
      split(ex[i], f, "|")
      printf "%-44s %6s %8s  %s\n", f[1], f[2], f[3], f[4]
    }
    printf "tiers: %d passed, %d failed, %d skipped\n", total_ran - total_bad, total_bad, total_skip
  }
' "$log"
