# Shared by the demo and the Podman tests: a private Podman set-up (own config,
# storage, CNI dirs) that works on Debian 12 hosts with hybrid cgroups and without
# CAP_SYS_RESOURCE, and a busybox image imported without a registry.
#
# Usage: source this file, then `podman_setup DIR PLUGIN_DIR`. Exports
# CONTAINERS_CONF and CONTAINERS_STORAGE_CONF; networks go in DIR/cni-conf.

podman_setup() {
  local dir=$1 plugin_dir=$2
  mkdir -p "$dir/cni-conf" "$dir/tmp" "$dir/root" "$dir/runroot"
  cat > "$dir/containers.conf" <<CONF
[containers]
# No CAP_SYS_RESOURCE on some hosts: podman's default nofile/nproc would not be allowed.
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$dir/events.log"
# crun refuses hybrid cgroup hierarchies; runc copes.
runtime = "runc"
tmp_dir = "$dir/tmp"
[network]
network_backend = "cni"
cni_plugin_dirs = ["$plugin_dir", "/usr/lib/cni"]
network_config_dir = "$dir/cni-conf"
CONF
  cat > "$dir/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$dir/root"
runroot = "$dir/runroot"
CONF
  export CONTAINERS_CONF="$dir/containers.conf"
  export CONTAINERS_STORAGE_CONF="$dir/storage.conf"
}

# A busybox image from Debian's busybox-static, imported as localhost/strait-bb.
podman_image() {
  local dir=$1
  if podman image exists localhost/strait-bb:latest 2>/dev/null; then return 0; fi
  local rootfs="$dir/rootfs"
  rm -rf "$rootfs"; mkdir -p "$rootfs"/{bin,etc,tmp,proc,sys,dev}
  cp /bin/busybox "$rootfs/bin/"
  for a in $("$rootfs/bin/busybox" --list); do
    [ "$a" = busybox ] || ln -sf busybox "$rootfs/bin/$a"
  done
  echo 'root:x:0:0:root:/:/bin/sh' > "$rootfs/etc/passwd"
  echo 'root:x:0:' > "$rootfs/etc/group"
  tar -C "$rootfs" -cf "$dir/bb.tar" .
  podman import -q "$dir/bb.tar" localhost/strait-bb:latest >/dev/null
  rm -rf "$rootfs" "$dir/bb.tar"
}
