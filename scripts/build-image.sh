#!/usr/bin/env bash
# Build strait's OCI image with `podman build`, from a local base: FROM scratch plus
# straitd, netctl and the CNI plugin of one cargo profile, the tools straitd runs (tc,
# mount, umount, iptables-*-save, nft when installed) and exactly the shared libraries
# `ldd` lists for all of them, plus Debian's static busybox for the init container's
# install-cni.sh. No registry is needed (deploy/image/Containerfile says why scratch).
#
#   scripts/build-image.sh [--profile release|debug] [--tag TAG] [--bin-dir DIR]
#
#   --profile  which cargo profile's binaries (default release); they are built first
#              with `cargo build --profile P -p straitd -p netctl -p strait-cni`
#   --bin-dir  take the three binaries from DIR as they are (no cargo build)
#   --tag      the image's name (default localhost/strait:<workspace version>)
#
# The binaries are copied without their debug info (objcopy --strip-debug): a debug
# build's straitd is ~500 MB with it, ~60 MB without. Prints the tag on stdout; progress
# goes to stderr. podman's own settings apply (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF:
# the tests build into a private storage).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'build-image: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

PROFILE=release
BIN_DIR=""
VERSION="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)"
[ -n "$VERSION" ] || die "no version in Cargo.toml's [workspace.package]"
TAG="localhost/strait:$VERSION"

while [ $# -gt 0 ]; do
  case "$1" in
    --profile) PROFILE="${2:?--profile needs release or debug}"; shift 2 ;;
    --tag) TAG="${2:?--tag needs a name}"; shift 2 ;;
    --bin-dir) BIN_DIR="${2:?--bin-dir needs a directory}"; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
case "$PROFILE" in
  release|debug) ;;
  *) die "--profile must be release or debug, not '$PROFILE'" ;;
esac

command -v podman >/dev/null || die "podman is not installed (scripts/install-deps.sh installs it)"
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] && ! ldd "$BUSYBOX" >/dev/null 2>&1 ||
  die "$BUSYBOX is missing or not static (apt-get install busybox-static)"

if [ -z "$BIN_DIR" ]; then
  say "cargo build --profile $PROFILE"
  cargo build --profile "$PROFILE" -p straitd -p netctl -p strait-cni >&2
  # cargo's directory for the dev profile is target/debug.
  BIN_DIR="${CARGO_TARGET_DIR:-target}/$PROFILE"
fi
for b in straitd netctl strait; do
  [ -x "$BIN_DIR/$b" ] || die "$BIN_DIR/$b is missing"
done

# The tools straitd execs (grep Command::new in agent/src). tc, mount and umount are
# required; the nat-table readers are looked for by name and their absence is taken as
# "no rules of that kind", which would turn the fast path on under kube-proxy: so all
# of iptables' are required too. nft only when the build host has it.
REQUIRED_TOOLS=(tc mount umount iptables-legacy-save ip6tables-legacy-save
  iptables-nft-save ip6tables-nft-save)
OPTIONAL_TOOLS=(nft)

CTX="$(mktemp -d "${TMPDIR:-/tmp}/strait-image.XXXXXX")"
trap 'rm -rf "$CTX"' EXIT
ROOT="$CTX/rootfs"
# Debian 12's merged /usr: the top-level dirs are links into /usr, so every path ldd
# or PATH names resolves the same way in the image.
mkdir -p "$ROOT"/usr/{bin,sbin,lib,lib64} "$ROOT"/{etc,tmp,proc,sys,dev,run,var}
for d in bin sbin lib lib64; do ln -s "usr/$d" "$ROOT/$d"; done
ln -s ../run "$ROOT/var/run"
chmod 1777 "$ROOT/tmp"

# $1 (a path on this host) to the same path under usr/ in the image, following links
# (the soname a binary asks for is a link to the versioned file).
put() {
  local src=$1 dst=$1
  case "$dst" in
    /bin/*|/sbin/*|/lib/*|/lib64/*) dst="/usr$dst" ;;
  esac
  mkdir -p "$ROOT$(dirname "$dst")"
  cp -L "$src" "$ROOT$dst"
}

# The shared libraries of the ELF file $1, as ldd lists them (with the loader).
libs_of() {
  ldd "$1" 2>/dev/null | awk '/=> \// {print $3} /^[[:space:]]*\/[^ ]+ \(0x/ {print $1}'
}

add_with_libs() {
  local file=$1
  put "$file"
  local lib
  for lib in $(libs_of "$file"); do put "$lib"; done
}

say "binaries from $BIN_DIR ($PROFILE), without debug info"
mkdir -p "$ROOT/opt/strait/cni"
objcopy --strip-debug "$BIN_DIR/straitd" "$ROOT/usr/bin/straitd"
objcopy --strip-debug "$BIN_DIR/netctl" "$ROOT/usr/bin/netctl"
objcopy --strip-debug "$BIN_DIR/strait" "$ROOT/opt/strait/cni/strait"
for f in "$ROOT/usr/bin/straitd" "$ROOT/usr/bin/netctl" "$ROOT/opt/strait/cni/strait"; do
  for lib in $(libs_of "$f"); do put "$lib"; done
done

# A tool at its PATH location; when that is a link to a multi-call binary
# (iptables-nft-save -> xtables-nft-multi) the target goes in too and the link is kept.
add_tool() {
  local path
  path="$(command -v "$1")" || return 1
  if [ -L "$path" ]; then
    local target
    target="$(readlink -f "$path")"
    add_with_libs "$target"
    local dst="$path"
    case "$dst" in /bin/*|/sbin/*) dst="/usr$dst" ;; esac
    mkdir -p "$ROOT$(dirname "$dst")"
    ln -sf "$(basename "$target")" "$ROOT$dst"
    [ "$(dirname "$(readlink -f "$path")")" = "$(dirname "$path")" ] ||
      die "$path links outside its directory ($target): not handled"
  else
    add_with_libs "$path"
  fi
}
for t in "${REQUIRED_TOOLS[@]}"; do
  add_tool "$t" || die "$t is not installed (scripts/install-deps.sh: iproute2, mount, iptables)"
done
for t in "${OPTIONAL_TOOLS[@]}"; do
  add_tool "$t" || say "$t not on this host: left out (straitd then reads no nftables ruleset)"
done
# iptables loads its match and target extensions with dlopen (ldd does not see them):
# -save prints kube-proxy's rules through them.
XT=/usr/lib/x86_64-linux-gnu/xtables
if [ -d "$XT" ]; then
  for so in "$XT"/*.so; do add_with_libs "$so"; done
fi

# busybox for install-cni.sh: only the applets it uses, in /bin (= /usr/bin), none that
# would shadow the tools above (its mount is not util-linux's).
cp "$BUSYBOX" "$ROOT/usr/bin/busybox"
for a in sh cp mv rm mkdir chmod cat grep ls echo test sleep; do
  ln -s busybox "$ROOT/usr/bin/$a"
done
install -m 0755 deploy/image/install-cni.sh "$ROOT/usr/bin/install-cni.sh"
echo 'root:x:0:0:root:/:/bin/sh' >"$ROOT/etc/passwd"
echo 'root:x:0:' >"$ROOT/etc/group"

cp deploy/image/Containerfile "$CTX/Containerfile"
say "podman build -t $TAG ($(du -sh "$ROOT" | cut -f1) of files)"
podman build --quiet --file "$CTX/Containerfile" --build-arg "VERSION=$VERSION" \
  --tag "$TAG" "$CTX" >&2
echo "$TAG"
