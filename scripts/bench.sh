#!/usr/bin/env bash
# Every benchmark, then BENCHMARKS.md: the criterion engine benches (BENCH_RUNS times), the
# server suite (no-op baseline vs real server over h1 and h2, then a 10,000-policy reload
# under load), and the report. About 20 minutes on 2 cores.
#
#   scripts/bench.sh                 # everything
#   BENCH_RUNS=1 scripts/bench.sh    # one run of each (quicker, noisier)
#
# Measurements wait (at most BENCH_WAIT_SECONDS) for the 1-minute load average to fall
# below BENCH_MAX_LOAD, since other builds on the machine skew them; the load at each step
# is recorded in the report either way.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${BENCH_RUNS:-3}
OUT=${BENCH_OUT:-target/bench}
MAX_LOAD=${BENCH_MAX_LOAD:-0.5}
WAIT=${BENCH_WAIT_SECONDS:-300}
TARGET=${CARGO_TARGET_DIR:-target}
export CARGO_TARGET_DIR=$TARGET

rm -rf "$OUT"
mkdir -p "$OUT"
: > "$OUT/loads.txt"

wait_quiet() {
  local label=$1 deadline=$((SECONDS + WAIT))
  while awk -v max="$MAX_LOAD" '{ exit !($1 >= max) }' /proc/loadavg && ((SECONDS < deadline)); do
    sleep 5
  done
  echo "$label: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/loads.txt"
}

echo "== build (release)"
cargo build --release --bins
cargo bench --no-run

for i in $(seq 1 "$RUNS"); do
  wait_quiet "engine benches, run $i of $RUNS"
  echo "== cargo bench --bench engine (run $i of $RUNS)"
  CRITERION_HOME="$OUT/criterion-$i" cargo bench --bench engine
done

wait_quiet "server suite"
echo "== loadgen suite"
"$TARGET/release/loadgen" suite --runs "$RUNS" --out "$OUT/server.json"
echo "after the suite: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/loads.txt"

criterion_dirs=()
for i in $(seq 1 "$RUNS"); do criterion_dirs+=(--criterion "$OUT/criterion-$i"); done
"$TARGET/release/loadgen" report "${criterion_dirs[@]}" \
  --server "$OUT/server.json" --loads "$OUT/loads.txt" \
  --command "scripts/bench.sh (BENCH_RUNS=$RUNS)" --out BENCHMARKS.md
