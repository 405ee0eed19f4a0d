#!/usr/bin/env bash
# Assemble the demo/test root tree: rootfs/demo/ plus busybox (static) as the debug shell and
# the mount points the agent moves its API filesystems onto. `cvmctl rootfs` turns the tree into
# a verity disk.
#   scripts/mkroot.sh <out-dir>
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: mkroot.sh <out-dir>}
busybox=/bin/busybox
[ -x "$busybox" ] || { echo "mkroot: error: $busybox missing (apt-get install busybox-static)" >&2; exit 1; }
rm -rf "$out"
mkdir -p "$out"
cp -a rootfs/demo/. "$out/"
mkdir -p "$out"/{bin,dev,proc,sys,run,tmp,sysroot,var,etc/cvm-agent}
chmod 1777 "$out/tmp"
cp "$busybox" "$out/bin/busybox"
for applet in sh ls cat echo mount umount dmesg ps sleep sync poweroff; do
  ln -sf busybox "$out/bin/$applet"
done
