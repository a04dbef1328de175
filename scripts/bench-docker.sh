#!/usr/bin/env bash
# `docker run` wall time with strait as the network driver beside Docker's own bridge
# driver, same dockerd, same run (sequential p50/p95 and a concurrent burst).
# Run as root. Prints a table; asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo build --release --workspace --bins -q
exec ./target/release/strait-bench-docker "$@"
