# Shared by scripts/kube-build.sh and scripts/kubeconform-build.sh: finding a Go new
# enough to build from the module proxy. Source it after defining `die`.

# "1.26.8" from "go1.26.8" for the Go at $1; a toolchain download is refused (the
# builds set GOTOOLCHAIN=local too), so this is the Go that builds.
go_version() { GOTOOLCHAIN=local "$1" env GOVERSION 2>/dev/null | sed 's/^go//; s/[^0-9.].*//'; }
# Whether version $1 >= $2 (dotted numbers).
at_least() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

# Sets GO and HAVE_GO to a Go >= $1, for building $2: the one on PATH, else the one
# where the official tarball puts it (a PATH with Debian 12's golang, 1.19, in front
# of it must not hide it). Dies naming every Go it found otherwise.
find_go() {
  local min=$1 what=$2 candidate v found=()
  GO="" HAVE_GO=""
  for candidate in "$(command -v go || true)" /usr/local/go/bin/go; do
    [ -n "$candidate" ] && [ -x "$candidate" ] || continue
    v="$(go_version "$candidate")" || v=""
    found+=("$candidate: go${v:-?}")
    if [ -n "$v" ] && at_least "$v" "$min"; then
      GO="$candidate" HAVE_GO="$v"
      return 0
    fi
  done
  die "Go >= $min is needed to build $what; found ${found[*]:-none} (on PATH or at /usr/local/go/bin/go; Debian 12's golang is too old). Install a newer Go from https://go.dev/dl/."
}
