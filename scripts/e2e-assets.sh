#!/usr/bin/env bash
# Prepares what the end-to-end suite (tests/e2e.rs) runs against, envtest-style:
#   target/e2e/assets/{kube-apiserver,kubectl,etcd}   (KUBEBUILDER_ASSETS)
#   target/e2e/pyspark-<version>/                      (SPARK_ADMISSION_E2E_PYSPARK)
# from ../shared/kube (Kubernetes v1.32 static binaries), Debian's etcd-server and PyPI's pyspark.
# Prints the exports on stdout; progress goes to stderr. Safe to run again: what is there is kept.
#
#   eval "$(bash scripts/e2e-assets.sh)" && SPARK_ADMISSION_E2E=required cargo test --test e2e
#
# Environment:
#   SPARK_ADMISSION_SHARED   folder with kube/ (default: ../shared beside the checkout)
#   E2E_PYSPARK_VERSIONS     space-separated pyspark versions (default: "3.5.9 4.0.5"; "" for none)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
shared=${SPARK_ADMISSION_SHARED:-$root/../shared}
out=$root/target/e2e
assets=$out/assets
versions=${E2E_PYSPARK_VERSIONS-3.5.9 4.0.5}
mkdir -p "$assets"
log() { echo "e2e-assets: $*" >&2; }

for tool in kube-apiserver kubectl; do
  if [ ! -x "$assets/$tool" ]; then
    src=$shared/kube/$tool.xz
    [ -f "$src" ] || { log "missing $src (set SPARK_ADMISSION_SHARED)"; exit 1; }
    log "unpacking $tool"
    xz -dkc "$src" > "$assets/$tool.tmp"
    chmod +x "$assets/$tool.tmp"
    mv "$assets/$tool.tmp" "$assets/$tool"
  fi
done

if ! command -v etcd >/dev/null 2>&1 && [ ! -x /usr/bin/etcd ]; then
  if [ "$(id -u)" = 0 ]; then
    log "installing Debian's etcd-server"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >&2
  else
    log "etcd is missing: apt-get install etcd-server (as root)"; exit 1
  fi
fi
etcd_bin=$(command -v etcd || echo /usr/bin/etcd)
ln -sf "$etcd_bin" "$assets/etcd"

venvs=""
for v in $versions; do
  venv=$out/pyspark-$v
  if [ ! -x "$venv/bin/spark-submit" ]; then
    log "installing pyspark==$v into $venv"
    start=$(date +%s)
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "pyspark==$v" >&2
    log "pyspark $v installed in $(( $(date +%s) - start )) s ($(du -sm "$venv" | cut -f1) MiB)"
  fi
  venvs="$venvs $venv"
done

echo "export KUBEBUILDER_ASSETS=$assets"
echo "export SPARK_ADMISSION_E2E_PYSPARK='${venvs# }'"
