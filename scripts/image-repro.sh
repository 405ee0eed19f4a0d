#!/usr/bin/env bash
# `make image-repro`: build the production image twice from the same inputs and demand the same
# root hash, the same UKI digest and the same disk, byte for byte; the package lists must be
# the locked ones (mkosi.lock/), since only those reproduce the committed references.
#   scripts/image-repro.sh <out-dir>
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: image-repro.sh <out-dir>}
export CVMCTL=${CVMCTL:-target/release/cvmctl}
LOCK=${LOCK:-strict} PROFILES=production scripts/mkosi-image.sh "$out"
first=$out/repro-first
rm -rf "$first" && mkdir -p "$first"
cp "$out"/cvm-agent-production.{raw,efi,roothash} "$first/"
LOCK=${LOCK:-strict} PROFILES=production scripts/mkosi-image.sh "$out"
fail=0
for f in roothash efi raw; do
  a=$(sha256sum < "$first/cvm-agent-production.$f" | cut -d' ' -f1)
  b=$(sha256sum < "$out/cvm-agent-production.$f" | cut -d' ' -f1)
  if [ "$a" = "$b" ]; then
    echo "image-repro: $f identical (sha256 $a)"
  else
    echo "image-repro: error: $f differs between the two builds ($a vs $b)" >&2
    fail=1
  fi
done
exit $fail
