#!/usr/bin/env bash
# Route reflection at scale: N /26 prefixes announced through a route reflector to two
# FRR clients (bgpd + zebra), until every client has them all in its kernel FIB —
# strait's speaker as the RR beside BIRD as the RR, same topology, same run; the RR's
# RSS too. Run as root. Prints figures; asserts nothing.
# Options are passed on: --prefixes 10000,100000 (default), --runs N, --rr strait,bird.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo build --release -q -p strait-bgp --example bgp_rr_bench
exec ./target/release/examples/bgp_rr_bench "$@"
