#!/usr/bin/env bash
# Build the strait package inside a VM (node1, when no STRAIT_DEB was given): the
# build dependencies, Rust 1.95 from rustup, then scripts/build-deb.sh. The .deb
# lands in STRAIT_OUT (default /vagrant/.strait/deb), where the other nodes find it.
# The cargo target dir stays on the VM's disk (a shared folder is slow for it).
set -euo pipefail
out=${STRAIT_OUT:-/vagrant/.strait/deb}
src=${STRAIT_SRC:-/vagrant}
export DEBIAN_FRONTEND=noninteractive

apt-get update -q
apt-get install -y -q --no-install-recommends build-essential pkg-config \
    protobuf-compiler libprotobuf-dev clang llvm libbpf-dev curl ca-certificates \
    dpkg-dev git
if ! [ -x /root/.cargo/bin/cargo ]; then
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
        sh -s -- -y --profile minimal --default-toolchain 1.95.0
fi
export PATH=/root/.cargo/bin:$PATH
export CARGO_TARGET_DIR=/var/tmp/strait-target
mkdir -p "$out"
# The other nodes take any strait_*_amd64.deb in $out as soon as it appears: copy
# it under another name, then rename it in one step.
staging=$(mktemp -d)
deb=$("$src/scripts/build-deb.sh" --profile release --out "$staging" | tail -n1)
name=$(basename "$deb")
cp "$deb" "$out/.$name.part"
mv -f "$out/.$name.part" "$out/$name"
rm -rf "$staging"
echo "built $out/$name"
