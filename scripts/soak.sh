#!/usr/bin/env bash
# Soak: the load generator drives a real server over TLS while the policies are rewritten
# every second (every fifth version broken) and the serving certificate is renewed from the
# same CA every SOAK_CERT_EVERY seconds. Passes with zero failed requests, the server still
# the same process, and its RSS at the end within 2x (+16 MiB) of the start.
# Loopback only and bounded: SOAK_SECONDS (default 600).
#
#   scripts/soak.sh                                   # 10 minutes, release build
#   SOAK_SECONDS=45 SOAK_PROFILE=debug scripts/soak.sh   # the short version CI runs
set -euo pipefail
cd "$(dirname "$0")/.."

total=${SOAK_SECONDS:-600}
cert_every=${SOAK_CERT_EVERY:-30}
profile=${SOAK_PROFILE:-release}
if [ "$profile" = release ]; then
  cargo build --release --bin spark-admission --bin loadgen
else
  cargo build --bin spark-admission --bin loadgen
fi
target_dir=${CARGO_TARGET_DIR:-target}
bin="$target_dir/$profile/spark-admission"
loadgen="$target_dir/$profile/loadgen"

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

mkdir -p "$work/policies"
cp policies/*.yaml "$work/policies/"
"$bin" certs --out "$work/certs" >/dev/null 2>&1
port=$(free_port)
admin=$(free_port)
"$bin" serve --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
  --policies "$work/policies" --certs-dir "$work/certs" --generate-certs=false \
  --policy-poll-interval 500ms --cert-poll-interval 1s \
  --log-format text --log-level warn >"$work/server.log" 2>&1 &
server=$!
pids+=("$server")

for _ in $(seq 1 100); do
  if python3 -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:$admin/readyz', timeout=1).status == 200 else 1)" 2>/dev/null; then
    break
  fi
  sleep 0.1
done

# Policy churn: a valid policy whose label changes every second, broken every fifth time.
churn() {
  local i=0
  while true; do
    i=$((i + 1))
    if [ $((i % 5)) -eq 0 ]; then
      printf 'apiVersion: spark-admission.io/v1alpha1\nkind: SparkPodPolicy\nmetadata: {name: churn}\nspec: {namespaces: 42}\n' >"$work/policies/.churn.tmp"
    else
      printf 'apiVersion: spark-admission.io/v1alpha1\nkind: SparkPodPolicy\nmetadata: {name: churn}\nspec:\n  namespaces: [spark-jobs]\n  all:\n    labels: {soak-version: "%d"}\n' "$i" >"$work/policies/.churn.tmp"
    fi
    mv "$work/policies/.churn.tmp" "$work/policies/zz-churn.yaml"
    sleep 1
  done
}
# Certificate renewal from the same CA, as cert-manager does.
rotate() {
  while true; do
    sleep "$cert_every"
    "$bin" certs --out "$work/certs" --renew >/dev/null 2>&1
  done
}
# Fresh connections every second, so new TLS handshakes meet the renewed certificates.
handshakes() {
  local failed=0
  while true; do
    "$loadgen" run --url "https://127.0.0.1:$port" --ca "$work/certs/ca.crt" --proto h1 \
      --concurrency 2 --duration 1s >/dev/null 2>&1 || failed=$((failed + 1))
    echo "$failed" >"$work/handshake-failures"
  done
}

# RSS every 5 s while the load runs.
sample_rss() {
  while true; do
    echo "$(date +%s) $(rss_kib "$server")" >>"$work/rss.log"
    sleep 5
  done
}

sleep 1
rss_idle=$(rss_kib "$server")
sample_rss & pids+=("$!")
churn & pids+=("$!")
rotate & pids+=("$!")
handshakes & pids+=("$!")

echo "soak: ${total}s of h2 load; policies rewritten every 1s (every 5th broken); certificate renewed every ${cert_every}s"
status=0
"$loadgen" run --url "https://127.0.0.1:$port" --ca "$work/certs/ca.crt" --pid "$server" \
  --proto h2 --concurrency 16 --duration "${total}s" || status=$?

rss_end=$(rss_kib "$server" 2>/dev/null || echo 0)
samples=$(wc -l <"$work/rss.log")
warm_line=$((samples / 5 + 1))
rss_start=$(sed -n "${warm_line}p" "$work/rss.log" | awk '{print $2}')
handshake_failures=$(cat "$work/handshake-failures" 2>/dev/null || echo 0)
alive=yes
kill -0 "$server" 2>/dev/null || alive=no
certs_reloaded=$(python3 -c "import urllib.request; print(''.join(l for l in urllib.request.urlopen('http://127.0.0.1:$admin/metrics').read().decode().splitlines(True) if l.startswith('spark_admission_certificate_reloads_total') or l.startswith('spark_admission_policy_reloads_total')))" 2>/dev/null || true)

echo "soak: load generator exit $status; fresh-connection runs failed: $handshake_failures"
echo "soak: server alive at the end (same pid $server): $alive"
echo "soak: server RSS idle ${rss_idle} KiB, warmed up under load ${rss_start} KiB, end ${rss_end} KiB ($samples samples)"
printf '%s\n' "$certs_reloaded"
if [ "$status" -ne 0 ] || [ "$handshake_failures" -ne 0 ] || [ "$alive" != yes ]; then
  echo "soak: FAILED"; tail -20 "$work/server.log"; exit 1
fi
# A short run is still warming up (allocator arenas of the blocking pool): it reports
# the figures; the RSS bound is judged on runs of 5 minutes or more.
if [ "$total" -ge 300 ] && [ "$rss_end" -gt $((rss_start * 5 / 4 + 16384)) ]; then
  echo "soak: FAILED: RSS grew from ${rss_start} to ${rss_end} KiB"; exit 1
fi
echo "soak: passed"
