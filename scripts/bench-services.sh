#!/usr/bin/env bash
# Services' cost on two hosts (VXLAN) with 1000 services: new TCP connections per
# second and p50/p99 latency through strait's socket balancer beside the backend's
# address and beside kube-proxy's iptables rules for the same services; one
# connection's throughput through the VIP and through a node port (tc NAT) beside the
# backend's address; the agent's memory. Run as root. Prints figures; asserts nothing.
# Options are passed on: --runs N (5), --conns N (2000), --workers W (4),
# --services N (1000), --tput-runs N (5), --seconds S (5).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
# The agents under test are the release straitd, netctl and strait beside the program.
cargo build --release -p straitd -p netctl -p strait-cni -q
cargo build --release -p strait-testbeds --bin strait-bench-services -q
exec "${CARGO_TARGET_DIR:-./target}/release/strait-bench-services" "$@"
