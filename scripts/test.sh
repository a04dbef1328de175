#!/usr/bin/env bash
# Run every strait test on this machine, as root: lint, unit tests, and the privileged
# tests against the real kernel, the real binaries and real runtimes (Podman,
# containerd). Installs what it needs first. Exit status is the tests' status.
#
# Privileged tests use network namespaces and links named with their own prefix and
# remove them on exit. STRAIT_REQUIRE_PRIVILEGED=1 makes a test that cannot run (not
# root, tool missing) fail instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "installing dependencies"
./scripts/install-deps.sh

step "kubernetes binaries (built once, cached)"
# kube-apiserver and kubectl for the Kubernetes tests (testbeds/src/kube.rs): built from
# the Go module proxy on the first run (minutes), found in the cache after that. The
# script prints the directory it put them in.
STRAIT_KUBE_BIN_DIR="$(./scripts/kube-build.sh)"
export STRAIT_KUBE_BIN_DIR

step "kubeconform (built once, cached)"
# The manifest test (testbeds/tests/kube_deploy.rs) validates deploy/kubernetes with
# kubeconform, against schemas written from the test's own kube-apiserver.
STRAIT_KUBECONFORM="$(./scripts/kubeconform-build.sh)"
export STRAIT_KUBECONFORM

export STRAIT_REQUIRE_PRIVILEGED="${STRAIT_REQUIRE_PRIVILEGED:-1}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# One build from clean: incremental state would only add gigabytes to the target dir.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

step "disk"
# A full run leaves 4.5 GB under target/, and the tests write images and state beside
# it. Say so plainly before starting rather than failing half-way with a linker's
# "No space left on device".
need_gb="${STRAIT_TEST_DISK_GB:-8}"
free_gb=$(( $(df --output=avail -k . | tail -1) / 1024 / 1024 ))
echo "free: ${free_gb} GB where target/ lives; a full run needs about ${need_gb} GB"
if [ "$free_gb" -lt "$need_gb" ]; then
    echo "not enough disk: free ${need_gb} GB (e.g. cargo clean in other checkouts), or set STRAIT_TEST_DISK_GB" >&2
    exit 1
fi

step "format"
cargo fmt --all --check
# The eBPF C, in the style of ebpf/.clang-format.
find ebpf -name '*.[ch]' -print0 | xargs -0 clang-format --dry-run --Werror

step "clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "build"
cargo build --workspace --bins

step "tests"
# Tests run in parallel: each privileged test has its own namespaces and agent.
cargo test --workspace --no-fail-fast -- --test-threads="${STRAIT_TEST_THREADS:-4}"
