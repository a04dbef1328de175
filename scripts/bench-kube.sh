#!/usr/bin/env bash
# The Kubernetes integration's cost on a 3-host VXLAN cluster following a real
# kube-apiserver: NetworkPolicies from `kubectl apply` to every agent beside the same
# documents through `netctl policy apply`, a pod's label from `kubectl label` to its
# endpoint beside `netctl endpoint label`, and the agents' memory. Run as root. Prints
# figures; asserts nothing. Options are passed on: --policies N (500), --runs N (3),
# --labels N (20).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
STRAIT_KUBE_BIN_DIR="$(./scripts/kube-build.sh)"
export STRAIT_KUBE_BIN_DIR
cargo build --release --workspace --bins -q
exec ./target/release/strait-bench-kube "$@"
