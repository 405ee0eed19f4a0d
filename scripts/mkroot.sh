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

# The workload images, as an OCI image layout in the verified root (launch.toml: image =
# "oci:/usr/share/cvm-agent/images:demo").
scripts/mkimages.sh "$out/usr/share/cvm-agent/images"

# mkfs.ext4 for the state disk's first boot: Debian's mke2fs with the shared libraries it needs
# and the dynamic loader (the verified root is an ordinary Linux root; only the agent is static).
mke2fs=/sbin/mke2fs
[ -x "$mke2fs" ] || { echo "mkroot: error: $mke2fs missing (apt-get install e2fsprogs)" >&2; exit 1; }
mkdir -p "$out/sbin"
cp "$mke2fs" "$out/sbin/mke2fs"
ln -sf mke2fs "$out/sbin/mkfs.ext4"
for lib in $(ldd "$mke2fs" | awk '/=>/ {print $3} /ld-linux/ {print $1}'); do
  real=$(readlink -f "$lib")
  mkdir -p "$out$(dirname "$lib")"
  cp "$real" "$out$lib"
done
