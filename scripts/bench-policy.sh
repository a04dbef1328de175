#!/usr/bin/env bash
# Network policy's cost across two hosts (VXLAN): iperf3 throughput and new TCP
# connections per second with 0, 100, 1 000 and 10 000 ingress rules, strait's eBPF
# enforcement beside iptables + ipset implementing the same rules in the same topology,
# same run; policy apply and enforce times, map memory; then the apply-to-enforced
# latency on 3 hosts. Run as root. Prints figures and ratios; asserts nothing.
# Options are passed on: --runs N (3), --seconds S (5), --conn-seconds S (3),
# --rules 0,100,1000,10000, --fillers F (8), --applies N (10), --no-pin, --no-latency.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
for tool in iperf3 ipset; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "$tool" ||
      { apt-get update -q && apt-get install -y -q --no-install-recommends "$tool"; }
  fi
done
cargo build --release --workspace --bins -q
exec ./target/release/strait-bench-policy "$@"
