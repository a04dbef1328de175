#!/usr/bin/env bash
# CNI ADD/DEL latency of strait beside Debian's reference bridge+host-local, same run.
# Run as root. Prints a table; asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo build --release --workspace --bins -q
exec ./target/release/strait-bench-cni "$@"
