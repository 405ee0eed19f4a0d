#!/usr/bin/env bash
# The tree mkosi lays over the Debian root (ExtraTrees=out/image-extra in mkosi.conf): the
# guest kernel the project boots everywhere (so the agent's initrd modules match it and one
# kernel is predicted), its modules for the later stages, and the workload images as an OCI
# layout (launch.toml: image = "oci:/usr/share/cvm-agent/images:demo").
#   scripts/image-extra.sh <out-dir>
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: image-extra.sh <out-dir>}
KDIR=.cache/kernel
kver=$(basename "$(readlink -f "$KDIR/modules")")
[ -f "$KDIR/root/boot/vmlinuz-$kver" ] || { echo "image-extra: error: no kernel in $KDIR (run scripts/setup.sh)" >&2; exit 1; }
rm -rf "$out"
mkdir -p "$out/usr/lib/modules"
cp -a "$KDIR/root/lib/modules/$kver" "$out/usr/lib/modules/$kver"
cp "$KDIR/root/boot/vmlinuz-$kver" "$out/usr/lib/modules/$kver/vmlinuz"
scripts/mkimages.sh "$out/usr/share/cvm-agent/images"
