#!/usr/bin/env bash
# Build kubeconform (the Kubernetes manifest validator) from the Go module proxy, once,
# for the manifest test (testbeds/tests/kube_deploy.rs). Like scripts/kube-build.sh: no
# release binary is downloaded, the module is built with the local Go.
#
#   scripts/kubeconform-build.sh     # build if needed; prints the binary's path on stdout
#
# The binary goes to ${STRAIT_KUBE_CACHE:-/var/cache/strait/kube}/kubeconform-<version>/
# kubeconform. Progress goes to stderr, so that
#   STRAIT_KUBECONFORM="$(scripts/kubeconform-build.sh)"
# works. kubeconform fetches its schemas from GitHub by default; the test does not let
# it: it writes them from the OpenAPI document of a real kube-apiserver (the version
# scripts/kube-build.sh builds) and points kubeconform at them.
set -euo pipefail

VERSION="${STRAIT_KUBECONFORM_VERSION:-v0.8.0}"
CACHE="${STRAIT_KUBE_CACHE:-/var/cache/strait/kube}"
DIR="$CACHE/kubeconform-$VERSION"
BIN="$DIR/kubeconform"

say() { printf 'kubeconform-build: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

case "$VERSION" in
  v[0-9]*.[0-9]*.[0-9]*) ;;
  *) die "STRAIT_KUBECONFORM_VERSION must look like v0.8.0, not '$VERSION'" ;;
esac

# `kubeconform -v` prints the version it was built as (set below).
cached() { [ -x "$BIN" ] && [ "$("$BIN" -v 2>/dev/null)" = "$VERSION" ]; }

if cached; then
  say "cached: $BIN"
  echo "$BIN"
  exit 0
fi

# kubeconform v0.8.0 asks for Go 1.22.
# shellcheck source=lib-go.sh
. "$(dirname "$0")/lib-go.sh"
find_go 1.22 kubeconform

mkdir -p "$DIR" 2>/dev/null ||
  die "cannot create $DIR: run as root, or set STRAIT_KUBE_CACHE to a directory of yours"
# Two runs at once build once.
exec 9>"$DIR/.lock"
flock 9
rm -f "$DIR"/.kubeconform.partial.*
if cached; then
  say "built meanwhile by another run: $BIN"
  echo "$BIN"
  exit 0
fi

START=$SECONDS
WORK="$(mktemp -d "${TMPDIR:-/tmp}/strait-kubeconform-build.XXXXXX")"
TMP="$DIR/.kubeconform.partial.$$"
cleanup() { rm -rf "$WORK" "$TMP"; }
trap cleanup EXIT

export GOTOOLCHAIN=local CGO_ENABLED=0
cd "$WORK"
say "kubeconform $VERSION with go$HAVE_GO ($GO)"
# `go install pkg@version` would put it in GOBIN; `go build` in a throwaway module
# writes exactly where we say, with the versions kubeconform's go.mod pins.
{
  echo "module strait.invalid/kubeconform-build"
  echo
  echo "go $HAVE_GO"
  echo
  echo "require github.com/yannh/kubeconform $VERSION"
} >go.mod
"$GO" build -mod=mod -trimpath -ldflags "-s -w -X main.version=$VERSION" -o "$TMP" github.com/yannh/kubeconform/cmd/kubeconform
"$TMP" -v >/dev/null 2>&1 || die "the built kubeconform does not run"
mv -f "$TMP" "$BIN"
say "built in $((SECONDS - START))s: $BIN ($("$BIN" -v))"
echo "$BIN"
