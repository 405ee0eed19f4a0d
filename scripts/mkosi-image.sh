#!/usr/bin/env bash
# Build the production and the debug image with mkosi (`make image`), then lay out next to each
# disk what a KBS operator needs: the UKI from its ESP, its root hash and os-release (read back
# from the UKI's .cmdline and .osrel, the measured copies) and the predicted PCRs.
#   scripts/mkosi-image.sh <out-dir>      (mkosi.conf's OutputDirectory must be <out-dir>)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: mkosi-image.sh <out-dir>}
CVMCTL=${CVMCTL:-target/release/cvmctl}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-0}
# mkosi runs its tools from the host's /usr inside bubblewrap; pyenv's python3 on PATH would
# lack python3-pefile.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
for profile in ${PROFILES:-production debug}; do
  args=()
  [ "$profile" = debug ] && args=(--profile debug)
  start=$(date +%s%N)
  mkosi "${args[@]}" --force build > "$out.$profile.log" 2>&1 || {
    tail -40 "$out.$profile.log" >&2
    echo "image: error: mkosi build of the $profile image failed (log: $out.$profile.log)" >&2
    exit 1
  }
  name=$out/cvm-agent-$profile
  mcopy -n -i "$name.esp.raw" ::/EFI/BOOT/BOOTX64.EFI "$name.efi"
  objcopy -O binary --only-section=.cmdline "$name.efi" "$name.cmdline"
  objcopy -O binary --only-section=.osrel "$name.efi" "$name.osrel"
  tr -d '\0' < "$name.cmdline" | tr ' ' '\n' | sed -n 's/^roothash=//p' > "$name.roothash"
  [ -s "$name.roothash" ] || { echo "image: error: no roothash= in $name.efi's command line" >&2; exit 1; }
  "$CVMCTL" measure --uki "$name.efi" --boot-path disk --roothash "$(cat "$name.roothash")" \
    --os-release "$name.osrel" > "$name.reference.json"
  echo "image: $profile: $name.raw ($(( $(stat -c %s "$name.raw") >> 20 )) MiB), UKI $(sha256sum < "$name.efi" | cut -c1-16)…, roothash $(cut -c1-16 "$name.roothash")…, $(( ($(date +%s%N) - start) / 1000000 )) ms"
done
