#!/usr/bin/env bash
# The webhook against a no-op nginx on the same TLS certificate, same machine, same run.
#
#   scripts/bench-nginx.sh                     # release build, 3 rounds, 10 s per measurement
#   NGINX_ROUNDS=1 NGINX_SECONDS=5 scripts/bench-nginx.sh
#
# nginx (Debian nginx-light + libnginx-mod-http-echo) is the physical limit of "TLS + HTTP +
# read the review + send a realistic AdmissionReview back": it answers POST /mutate with the
# fixed body our server returns for the real driver review, after reading the request body.
# The driver is h2load (Debian nghttp2-client), -c 8 -m 8 -t 1, h2 and --h1, posting
# tests/fixtures/admission/mutate-driver-rich.json as a kube-apiserver sends it: 7,134 bytes
# without the file's indentation (`loadgen review-body`; NGINX_INDENTED=1 posts the
# 16,021-byte file as saved, which is what the figures before 3 December 2026 used).
# Webhook and nginx alternate, NGINX_ROUNDS times each per protocol; the median of the
# per-round ratios is reported. A benchmark, never a test: the figures depend on the
# machine and on what else runs on it.
#
#   NGINX_CALLGRIND=2000 scripts/bench-nginx.sh   # instructions per request instead of req/s
#   NGINX_CALLGRIND=2000 NGINX_CALLGRIND_OUT=dir scripts/bench-nginx.sh   # and keep the profiles
#
# counts what each server executes per request (TLS, HTTP, the review or the fixed answer,
# logging, the runtime: the whole process) under valgrind's callgrind: both servers started
# under it with instrumentation off, then per protocol the counters zeroed, N requests sent
# by the same h2load, and the total divided by N. nginx runs one worker without a master so
# that one process does it all. Instruction counts do not depend on the load of the machine,
# so this is the repeatable form of the ratio (nginx's instructions ÷ the webhook's).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${NGINX_ROUNDS:-3}
SECONDS_PER_RUN=${NGINX_SECONDS:-10}
POLICIES=${NGINX_POLICIES:-1000}
CALLGRIND=${NGINX_CALLGRIND:-}
REVIEW=${NGINX_REVIEW:-tests/fixtures/admission/mutate-driver-rich.json}
TARGET=${CARGO_TARGET_DIR:-target}
WEBHOOK_PORT=${NGINX_WEBHOOK_PORT:-18443}
ADMIN_PORT=${NGINX_ADMIN_PORT:-18080}
NGINX_PORT=${NGINX_PORT:-18444}
ECHO_MODULE=/usr/lib/nginx/modules/ngx_http_echo_module.so

missing=()
command -v nginx >/dev/null || missing+=(nginx-light)
[[ -f $ECHO_MODULE ]] || missing+=(libnginx-mod-http-echo)
command -v h2load >/dev/null || missing+=(nghttp2-client)
[[ -z $CALLGRIND ]] || command -v valgrind >/dev/null || missing+=(valgrind)
if ((${#missing[@]})); then
  echo "== installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

if [[ -z ${NGINX_SKIP_BUILD:-} ]]; then
  echo "== build (release)"
  cargo build --release --bin spark-admission --bin loadgen
fi
BIN=${NGINX_WEBHOOK_BIN:-$TARGET/release/spark-admission}   # another build to compare: NGINX_WEBHOOK_BIN
LOADGEN=$TARGET/release/loadgen

WORK=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" certs --out "$WORK/certs" >/dev/null 2>&1
"$LOADGEN" policies "$WORK/policies" --count "$POLICIES" >/dev/null
if [[ -z ${NGINX_INDENTED:-} ]]; then
  "$LOADGEN" review-body "$REVIEW" >"$WORK/review.json"
  REVIEW=$WORK/review.json
fi

# Under callgrind each server starts with instrumentation off: start-up is not counted.
wrap=()
if [[ -n $CALLGRIND ]]; then
  wrap=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/callgrind.%p"
    --log-file="$WORK/valgrind.%p.log")
fi

echo "== webhook: $POLICIES policies, JSON logs to /dev/null"
"${wrap[@]}" "$BIN" serve --listen "127.0.0.1:$WEBHOOK_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
  --policies "$WORK/policies" --certs-dir "$WORK/certs" --generate-certs false \
  >/dev/null 2>&1 &
pids+=($!)
webhook_pid=$!
for _ in $(seq 1 1200); do
  curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null || { echo "webhook not ready" >&2; exit 1; }

# nginx answers exactly what the webhook answers for this review.
curl -sf --cacert "$WORK/certs/ca.crt" -H 'Content-Type: application/json' \
  --data-binary @"$REVIEW" "https://127.0.0.1:$WEBHOOK_PORT/mutate?timeout=10s" >"$WORK/answer.json"
echo "   answer: $(wc -c <"$WORK/answer.json") bytes for a $(wc -c <"$REVIEW")-byte review"

# The answer as `echo -n` directives: nginx limits one parameter to 4 KB, so in pieces,
# each an nginx single-quoted string (backslashes and quotes escaped, `$` through a
# variable: nginx has no escape for it).
mkdir -p "$WORK/nginx" "$WORK/pieces"
split -b 2000 "$WORK/answer.json" "$WORK/pieces/p"
echoes=$(for piece in "$WORK"/pieces/p*; do
  printf "      echo -n '%s';\n" "$(sed -e 's/\\/\\\\/g' -e "s/'/\\\\'/g" -e 's/\$/${dollar}/g' "$piece")"
done)
cat >"$WORK/nginx/nginx.conf" <<EOF
load_module $ECHO_MODULE;
daemon off;
$(if [[ -n $CALLGRIND ]]; then echo "master_process off; worker_processes 1;"; else echo "worker_processes auto;"; fi)
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  # Keep connections open as the webhook does (nginx closes after 1,000 requests by default).
  keepalive_requests 100000000;
  client_max_body_size 4m;
  client_body_buffer_size 64k;
  geo \$dollar { default "\$"; }
  server {
    listen 127.0.0.1:$NGINX_PORT ssl http2;
    ssl_certificate $WORK/certs/tls.crt;
    ssl_certificate_key $WORK/certs/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    location = /mutate {
      default_type application/json;
      echo_read_request_body;
$echoes
    }
  }
}
EOF
nginx -c "$WORK/nginx/nginx.conf" -t -q
"${wrap[@]}" nginx -c "$WORK/nginx/nginx.conf" &
pids+=($!)
nginx_pid=$!
for _ in $(seq 1 600); do
  curl -sf --cacert "$WORK/certs/ca.crt" --data-binary @"$REVIEW" \
    "https://127.0.0.1:$NGINX_PORT/mutate" >"$WORK/nginx-answer.json" && break
  sleep 0.1
done
cmp -s "$WORK/answer.json" "$WORK/nginx-answer.json" || { echo "nginx answers differently" >&2; exit 1; }

# req/s of one h2load run; fails the script on any failed or non-2xx request.
measure() {
  local port=$1 proto=$2 out
  local args=(-c 8 -m 8 -t 1 -D "$SECONDS_PER_RUN" --warm-up-time 1 -d "$REVIEW"
    -H 'content-type: application/json')
  [[ $proto == h1 ]] && args+=(--h1)
  out=$(h2load "${args[@]}" "https://127.0.0.1:$port/mutate?timeout=10s" 2>&1)
  if ! grep -Eq '^requests: .* 0 failed, 0 errored' <<<"$out" ||
    ! grep -Eq '^status codes: [0-9]+ 2xx, 0 3xx, 0 4xx, 0 5xx' <<<"$out"; then
    echo "$out" >&2
    echo "h2load on port $port: failed requests" >&2
    return 1
  fi
  sed -nE 's/^finished in [^,]+, ([0-9.]+) req\/s.*/\1/p' <<<"$out"
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Instructions per request of the process `pid` over `CALLGRIND` requests of one h2load run.
instructions() {
  local pid=$1 port=$2 proto=$3 out part
  local args=(-n "$CALLGRIND" -c 8 -m 8 -t 1 -d "$REVIEW" -H 'content-type: application/json')
  [[ $proto == h1 ]] && args+=(--h1)
  callgrind_control -z "$pid" >/dev/null 2>&1
  callgrind_control -i on "$pid" >/dev/null 2>&1
  out=$(h2load "${args[@]}" "https://127.0.0.1:$port/mutate?timeout=10s" 2>&1)
  callgrind_control -i off "$pid" >/dev/null 2>&1
  callgrind_control -d "$proto" "$pid" >/dev/null 2>&1
  if ! grep -Eq "^requests: $CALLGRIND total, .* $CALLGRIND succeeded" <<<"$out"; then
    echo "$out" >&2
    echo "h2load on port $port: failed requests" >&2
    return 1
  fi
  # The dump just written: the highest part number of this process.
  part=$(ls "$WORK/callgrind.$pid".* | sort -t. -k3 -n | tail -1)
  awk -v n="$CALLGRIND" '/^totals:/ { printf "%.0f", $2 / n }' "$part"
}

if [[ -n $CALLGRIND ]]; then
  echo "== callgrind: instructions per request over $CALLGRIND requests (h2load -c 8 -m 8 -t 1)"
  printf '%-5s %12s %12s %7s\n' proto webhook nginx ratio
  for proto in h2 h1; do
    hook=$(instructions "$webhook_pid" "$WEBHOOK_PORT" "$proto")
    ngx=$(instructions "$nginx_pid" "$NGINX_PORT" "$proto")
    printf '%-5s %12s %12s %7s\n' "$proto" "$hook" "$ngx" \
      "$(awk -v a="$hook" -v b="$ngx" 'BEGIN { printf "%.3f", b / a }')"
  done
  if [[ -n ${NGINX_CALLGRIND_OUT:-} ]]; then
    mkdir -p "$NGINX_CALLGRIND_OUT"
    # Part 1 of each process is h2, part 2 h1 (callgrind_annotate reads them).
    cp "$WORK/callgrind.$webhook_pid".* "$WORK/callgrind.$nginx_pid".* "$NGINX_CALLGRIND_OUT/"
    echo "   profiles: $NGINX_CALLGRIND_OUT (webhook pid $webhook_pid, nginx pid $nginx_pid)"
  fi
  exit 0
fi

echo "== h2load -c 8 -m 8 -t 1, ${SECONDS_PER_RUN} s each, $ROUNDS rounds, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-5s %-6s %12s %12s %7s\n' proto round webhook nginx ratio
for proto in h2 h1; do
  ratios=() hooks=() nginxes=()
  for round in $(seq 1 "$ROUNDS"); do
    hook=$(measure "$WEBHOOK_PORT" "$proto")
    ngx=$(measure "$NGINX_PORT" "$proto")
    ratio=$(awk -v a="$hook" -v b="$ngx" 'BEGIN { printf "%.3f", a / b }')
    printf '%-5s %-6s %12.0f %12.0f %7s\n' "$proto" "$round" "$hook" "$ngx" "$ratio"
    ratios+=("$ratio") hooks+=("$hook") nginxes+=("$ngx")
  done
  printf '%-5s %-6s %12.0f %12.0f %7s   (median ratio)\n' "$proto" median \
    "$(printf '%s\n' "${hooks[@]}" | median)" "$(printf '%s\n' "${nginxes[@]}" | median)" \
    "$(printf '%s\n' "${ratios[@]}" | median)"
done
echo "   webhook peak RSS: $(awk '/VmHWM/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$webhook_pid/status")"
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"
