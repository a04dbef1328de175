#!/usr/bin/env bash
# strait's site gateway beside strongSwan (charon 5.9, kernel-libipsec), in one run:
# TCP throughput through the gateway beside the same path unencrypted and beside
# strongSwan to strongSwan over the same line; IKE setup time (IKE_SA_INIT to the first
# Child SA, on the wire) beside charon's; the interruption on gateway failover.
# Run as root. Prints figures; asserts nothing.
# Options are passed on: --runs N (10, setup runs), --tput-runs N (3), --seconds S (5),
# --failover-runs N (5), --lease-ttl S (3), --no-failover.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
# The agents under test are the release straitd, netctl and strait beside the program.
cargo build --release -p straitd -p netctl -p strait-cni -q
cargo build --release -p strait-testbeds --bin strait-bench-gateway -q
exec "${CARGO_TARGET_DIR:-./target}/release/strait-bench-gateway" "$@"
