#!/usr/bin/env bash
# Encrypted TCP throughput between two namespaces over a veth line: strait's userspace
# ESP beside the same path unencrypted and beside strongSwan's userspace ESP
# (kernel-libipsec), same run; CPU per GB, ping latency, a shaped line, rekey cost.
# Run as root. Prints figures; asserts nothing.
# Options are passed on: --runs N (3), --seconds S (5), --line-rate-mbit M (1000, 0: none),
# --queues Q (0: one per CPU), --pings N (200), --pin, --no-strongswan.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v iperf3 >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends iperf3 ||
    { apt-get update -q && apt-get install -y -q --no-install-recommends iperf3; }
fi
cargo build --release -p strait-testbeds --bin strait-bench-esp -q
exec "${CARGO_TARGET_DIR:-./target}/release/strait-bench-esp" "$@"
