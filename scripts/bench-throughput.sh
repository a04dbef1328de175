#!/usr/bin/env bash
# Container-to-container TCP throughput across two hosts through strait's VXLAN fabric,
# beside a hand-made kernel VXLAN pair on the same underlay, same run (iperf3).
# Run as root. Prints figures and the ratio; asserts nothing.
# Options are passed on: --runs N (3), --seconds S (10), --underlay-mtu M (1500).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
if ! command -v iperf3 >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends iperf3 ||
    { apt-get update -q && apt-get install -y -q --no-install-recommends iperf3; }
fi
cargo build --release --workspace --bins -q
exec ./target/release/strait-bench-throughput "$@"
