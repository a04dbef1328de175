#!/bin/sh
# The strait DaemonSet's init container: installs the CNI plugin binary and the
# conflist on the node, where the kubelet's runtime (containerd, CRI-O) looks for them.
# Both are written under a temporary name and renamed, so a runtime never execs half a
# binary or reads half a config. Runs with the image's busybox sh.
#
# Environment (defaults are the DaemonSet's mount points):
#   CNI_BIN_DIR      where the plugin goes          (/host/opt/cni/bin)
#   CNI_NET_DIR      where the conflist goes        (/host/etc/cni/net.d)
#   CNI_PLUGIN_SRC   the plugin in the image        (/opt/strait/cni/strait)
#   CNI_CONFLIST_SRC the conflist (ConfigMap key)   (/etc/strait/10-strait.conflist)
#   CNI_CONF_NAME    its file name on the node      (10-strait.conflist)
set -eu

BIN_DIR="${CNI_BIN_DIR:-/host/opt/cni/bin}"
NET_DIR="${CNI_NET_DIR:-/host/etc/cni/net.d}"
PLUGIN="${CNI_PLUGIN_SRC:-/opt/strait/cni/strait}"
CONFLIST="${CNI_CONFLIST_SRC:-/etc/strait/10-strait.conflist}"
NAME="${CNI_CONF_NAME:-10-strait.conflist}"

say() { echo "install-cni: $*" >&2; }
die() { say "$*"; exit 1; }

[ -x "$PLUGIN" ] || die "no plugin at $PLUGIN"
[ -s "$CONFLIST" ] || die "no conflist at $CONFLIST (is the ConfigMap mounted at /etc/strait?)"
# The least a runtime needs of a conflist; the plugin checks the rest at each call.
grep -q '"plugins"' "$CONFLIST" || die "$CONFLIST has no \"plugins\" list"
grep -q '"type": *"strait"' "$CONFLIST" || die "$CONFLIST has no plugin of type strait"
[ -d "$BIN_DIR" ] || die "$BIN_DIR is not a directory (the hostPath mount)"
[ -d "$NET_DIR" ] || die "$NET_DIR is not a directory (the hostPath mount)"

# The name starts with a dot: a runtime reading the directory ignores it meanwhile
# (CNI loads *.conf, *.conflist and *.json only).
cp "$PLUGIN" "$BIN_DIR/.strait.tmp.$$"
chmod 0755 "$BIN_DIR/.strait.tmp.$$"
mv -f "$BIN_DIR/.strait.tmp.$$" "$BIN_DIR/strait"
say "installed $BIN_DIR/strait"

cp "$CONFLIST" "$NET_DIR/.$NAME.tmp.$$"
chmod 0644 "$NET_DIR/.$NAME.tmp.$$"
mv -f "$NET_DIR/.$NAME.tmp.$$" "$NET_DIR/$NAME"
say "installed $NET_DIR/$NAME"
