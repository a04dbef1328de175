#!/usr/bin/env bash
# Build kube-apiserver and kubectl from the Go module proxy, once, for the Kubernetes
# tests (testbeds/src/kube.rs). No release tarball is downloaded: the only source is the
# k8s.io/kubernetes module and its dependencies, built with the local Go.
#
#   scripts/kube-build.sh            # build if needed; prints the bin dir on stdout
#
# The binaries go to ${STRAIT_KUBE_CACHE:-/var/cache/strait/kube}/<version>/bin. When both
# are there and run, nothing is built. Progress goes to stderr, so that
#   STRAIT_KUBE_BIN_DIR="$(scripts/kube-build.sh)"
# works. STRAIT_KUBE_VERSION picks another k8s.io/kubernetes version (v1.34.0 or newer).
set -euo pipefail

# The newest version the tests are written against (k8s-openapi's feature v1_37). Keep
# in step with DEFAULT_VERSION in testbeds/src/kube.rs.
VERSION="${STRAIT_KUBE_VERSION:-v1.37.2}"
CACHE="${STRAIT_KUBE_CACHE:-/var/cache/strait/kube}"
BIN="$CACHE/$VERSION/bin"

say() { printf 'kube-build: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

case "$VERSION" in
  v1.[0-9]*.[0-9]*) ;;
  *) die "STRAIT_KUBE_VERSION must look like v1.37.2, not '$VERSION'" ;;
esac

# Whether the binary at $1 starts; the rest of the line is its version command
# (kubectl has no --version flag).
runs() { [ -x "$1" ] && "$@" >/dev/null 2>&1; }
cached() { runs "$BIN/kube-apiserver" --version && runs "$BIN/kubectl" version --client; }

if cached; then
  say "cached: $BIN"
  echo "$BIN"
  exit 0
fi

# shellcheck source=lib-go.sh
. "$(dirname "$0")/lib-go.sh"
find_go 1.25 "Kubernetes $VERSION"

mkdir -p "$BIN" 2>/dev/null ||
  die "cannot create $BIN: run as root, or set STRAIT_KUBE_CACHE to a directory of yours"
# Two test runs at once (or a second CI job on the machine) build once; the second
# waits, then finds the binaries.
exec 9>"$CACHE/$VERSION/.lock"
flock 9
# What a run killed outright (no EXIT trap) left; nothing else builds while we hold the
# lock.
rm -f "$BIN"/.*.partial.*
if cached; then
  say "built meanwhile by another run: $BIN"
  echo "$BIN"
  exit 0
fi

START=$SECONDS
WORK="$(mktemp -d "${TMPDIR:-/tmp}/strait-kube-build.XXXXXX")"
TMP_APISERVER="$BIN/.kube-apiserver.partial.$$"
TMP_KUBECTL="$BIN/.kubectl.partial.$$"
cleanup() { rm -rf "$WORK" "$TMP_APISERVER" "$TMP_KUBECTL"; }
trap cleanup EXIT

# A fixed toolchain (no silent download of another Go) and no cgo: static binaries that
# do not depend on this machine's libc.
export GOTOOLCHAIN=local CGO_ENABLED=0
cd "$WORK"

say "Kubernetes $VERSION with go$HAVE_GO ($GO); fetching k8s.io/kubernetes"
# The JSON names the module's go.mod file in the module cache (or says what went wrong).
"$GO" mod download -json "k8s.io/kubernetes@$VERSION" >download.json ||
  die "k8s.io/kubernetes@$VERSION could not be fetched: $(cat download.json)"
GOMOD="$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p' download.json)"
[ -f "$GOMOD" ] || die "k8s.io/kubernetes@$VERSION: no go.mod in $(cat download.json)"

NEED_GO="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$GOMOD")"
at_least "$HAVE_GO" "$NEED_GO" ||
  die "Kubernetes $VERSION needs Go >= $NEED_GO; $GO is go$HAVE_GO. Install a newer Go, or pick an older STRAIT_KUBE_VERSION."

# Kubernetes' own go.mod requires its staging modules (k8s.io/api, k8s.io/apiserver,
# ...) at v0.0.0 and replaces them with directories of its repository. Replace
# directives only count in the main module, so this throwaway module pins each one to
# the published copy that matches the release: v1.37.2 -> v0.37.2.
STAGING_VERSION="v0.${VERSION#v1.}"
{
  echo "module strait.invalid/kube-build"
  echo
  # The same language version and GODEBUG defaults Kubernetes is built with: both come
  # from the main module's go.mod only.
  echo "go $NEED_GO"
  grep '^godebug ' "$GOMOD" || true
  echo
  echo "require k8s.io/kubernetes $VERSION"
  echo
  echo "replace ("
  sed -n "s#^[[:space:]]*\(k8s\.io/[^[:space:]]*\) => \./staging/src/.*#\t\1 => \1 $STAGING_VERSION#p" "$GOMOD"
  echo ")"
} >go.mod
grep -q "k8s.io/apiserver => " go.mod || die "found no staging modules in $GOMOD"

# What `kube-apiserver --version` and kubectl report; the default would be
# v0.0.0-master. Both version packages are read (component-base by the servers,
# client-go by kubectl's user agent).
MINOR="${VERSION#v1.}"
MINOR="${MINOR%%.*}"
LDFLAGS="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  LDFLAGS+=" -X $pkg.gitVersion=$VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$MINOR"
  LDFLAGS+=" -X $pkg.gitTreeState=clean"
done

# -mod=mod lets the build fill in go.sum and the requirements it needs, from the
# versions Kubernetes pins (no upgrades: nothing here runs `go get -u`).
build() {
  say "building $1"
  "$GO" build -mod=mod -trimpath -ldflags "$LDFLAGS" -o "$2" "$1"
}
build k8s.io/kubernetes/cmd/kube-apiserver "$TMP_APISERVER"
build k8s.io/kubernetes/cmd/kubectl "$TMP_KUBECTL"

runs "$TMP_APISERVER" --version || die "the built kube-apiserver does not run"
runs "$TMP_KUBECTL" version --client || die "the built kubectl does not run"
# Only complete, working binaries get the names that count as cached.
mv -f "$TMP_APISERVER" "$BIN/kube-apiserver"
mv -f "$TMP_KUBECTL" "$BIN/kubectl"

ELAPSED=$((SECONDS - START))
say "built in $((ELAPSED / 60))m$((ELAPSED % 60))s: $("$BIN/kube-apiserver" --version), $(du -h "$BIN/kube-apiserver" | cut -f1); kubectl $(du -h "$BIN/kubectl" | cut -f1)"
echo "$BIN"
