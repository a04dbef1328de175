#!/usr/bin/env bash
# Install what strait's build, demo and tests need on Debian 12, as root.
# Idempotent: packages already present are left as they are.
set -euo pipefail

PKGS=(
  # build
  build-essential pkg-config protobuf-compiler libprotobuf-dev clang llvm libbpf-dev
  # the eBPF C's format check (ebpf/.clang-format)
  clang-format
  # kernel tooling used by tests and the demo
  iproute2 iputils-ping netcat-openbsd procps jq python3 curl iptables
  # real runtimes and the reference CNI plugins (baseline and chaining)
  containernetworking-plugins busybox-static podman runc containerd
  # the Docker plugin tests and benchmark (each runs its own dockerd in a netns)
  docker.io
  # the cluster store (etcd backend, cluster tests)
  etcd-server etcd-client
  iperf3
  # the policy benchmark's iptables baseline (scripts/bench-policy.sh)
  ipset
  # BGP interop peers (frr: bgpd+zebra; gobgpd: gobgpd and the gobgp CLI). Their
  # services never start here: tests run every daemon themselves, inside a netns.
  bird2 frr gobgpd
  # IPsec: the interop peer (strongSwan with its userspace ESP and AES-GCM), the wire
  # oracles (tshark, scapy) and captures, and openssl for the certificate tests' CA.
  strongswan-charon strongswan-swanctl libcharon-extra-plugins
  libstrongswan-extra-plugins libstrongswan-standard-plugins
  tshark tcpdump python3-scapy python3-cryptography openssl
  # the Debian package and its tests (scripts/build-deb.sh, deploy_package): dpkg-deb
  # and dpkg-shlibdeps, systemd-analyze verify, man page lint, setpriv; Vagrant with
  # the libvirt provider for `vagrant validate` (kmod: its modinfo; rsync: a synced
  # folder type usable without a libvirt daemon)
  dpkg-dev binutils systemd mandoc man-db util-linux vagrant vagrant-libvirt kmod rsync
  # netctl topology's test renders its DOT with Graphviz's dot
  graphviz
  # the Grafana dashboard's test parses every query with promtool (Debian ships it in
  # prometheus; the server itself is not used)
  prometheus
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # tshark asks whether non-root users may capture; they may not.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  # On a systemd host the BGP daemons' and Docker's packages start them in the root namespace on
  # install; the tests run their own inside namespaces. Stop and disable only the
  # services of packages installed just now, never ones the machine already ran.
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    for unit in bird:bird2 frr:frr gobgpd:gobgpd docker.socket:docker.io docker:docker.io \
        prometheus:prometheus; do
      case " ${missing[*]} " in
        *" ${unit#*:} "*) systemctl disable --now "${unit%%:*}" >/dev/null 2>&1 || true ;;
      esac
    done
  fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  cat >&2 <<'MSG'
strait needs Rust 1.95 (stable) and cargo. Debian 12's rustc is too old; install the
stable toolchain with rustup (https://rustup.rs) and run this again.
MSG
  exit 1
fi
ver=$(rustc --version | awk '{print $2}')
if [ "$(printf '%s\n1.95.0\n' "$ver" | sort -V | head -n1)" != "1.95.0" ]; then
  echo "strait needs rustc >= 1.95.0, found $ver" >&2
  exit 1
fi
