#!/usr/bin/env bash
# `make image`: the tools tree (mkosi.tools/, Debian trixie's repart and ukify), then the
# production and the debug image (mkosi.conf, mkosi.profiles/debug.conf), and next to each disk
# what a KBS operator needs: the UKI from its ESP, its root hash and os-release (read back from
# the UKI's .cmdline and .osrel, the measured copies), the predicted PCRs, the package list.
#   scripts/mkosi-image.sh <out-dir>     (mkosi.conf's OutputDirectory must be <out-dir>)
# Environment: PROFILES (default "production debug"); LOCK=strict makes a package list that
# differs from mkosi.lock/ an error (default: a warning), LOCK=update rewrites mkosi.lock/.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: mkosi-image.sh <out-dir>}
CVMCTL=${CVMCTL:-target/release/cvmctl}
LOCK=${LOCK:-warn}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-0}
# mkosi runs its tools inside bubblewrap from the tools tree; a pyenv python3 first on PATH
# would not be the one mkosi's own package was made for.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p "$out"

ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

# The package list of a manifest, one "name version" a line, sorted.
packages() {
  python3 -c 'import json,sys; m=json.load(open(sys.argv[1]))
for p in sorted(m["packages"], key=lambda p: p["name"]): print(p["name"], p["version"])' "$1"
}

# Compare a build's package list with mkosi.lock/<name>.packages (what the committed images were
# built from): a rebuild reproduces the root hash only from the same packages.
check_lock() {
  local name=$1 list=$2 lock=mkosi.lock/$1.packages
  if [ "$LOCK" = update ] || [ ! -f "$lock" ]; then
    cp "$list" "$lock"
    echo "image: $lock written ($(wc -l < "$lock") packages)"
  elif ! diff -u "$lock" "$list" > "$list.diff"; then
    echo "image: $name: Debian's packages moved since mkosi.lock/ ($(grep -c '^[-+][^-+]' "$list.diff") lines differ, $list.diff); this build will not reproduce the locked root hash" >&2
    if [ "$LOCK" = strict ]; then
      cat "$list.diff" >&2
      echo "image: error: LOCK=strict (LOCK=update takes the new versions)" >&2
      exit 1
    fi
  fi
}

# The tools tree, rebuilt when its recipe changes.
tools=out/mkosi-tools
recipe=$(cat mkosi.tools/mkosi.conf mkosi.tools/mkosi.pkgmngr/etc/apt/sources.list.d/mkosi.sources | sha256sum | cut -d' ' -f1)
if [ ! -d "$tools/usr" ] || [ "$(cat "$tools.recipe" 2>/dev/null)" != "$recipe" ]; then
  start=$(date +%s%N)
  mkosi -C mkosi.tools --force build > "$tools.log" 2>&1 || {
    tail -40 "$tools.log" >&2
    echo "image: error: building the tools tree failed (log: $tools.log)" >&2
    exit 1
  }
  echo "$recipe" > "$tools.recipe"
  echo "image: tools tree $tools ($(du -sm "$tools" | cut -f1) MiB) in $(ms "$start") ms"
fi
packages "$tools.manifest" > "$tools.packages"
check_lock tools "$tools.packages"

for profile in ${PROFILES:-production debug}; do
  args=(--profile "$profile")
  start=$(date +%s%N)
  mkosi "${args[@]}" --force build > "$out/$profile.log" 2>&1 || {
    tail -40 "$out/$profile.log" >&2
    echo "image: error: mkosi build of the $profile image failed (log: $out/$profile.log)" >&2
    exit 1
  }
  took=$(ms "$start")
  name=$out/cvm-agent-$profile
  mcopy -n -i "$name.esp.raw" ::/EFI/BOOT/BOOTX64.EFI "$name.efi"
  objcopy -O binary --only-section=.cmdline "$name.efi" "$name.cmdline"
  objcopy -O binary --only-section=.osrel "$name.efi" "$name.osrel"
  tr -d '\0' < "$name.cmdline" | tr ' ' '\n' | sed -n 's/^roothash=//p' > "$name.roothash"
  [ -s "$name.roothash" ] || { echo "image: error: no roothash= in $name.efi's command line" >&2; exit 1; }
  mode=$(tr -d '\0' < "$name.cmdline" | tr ' ' '\n' | sed -n 's/^cvm\.mode=//p')
  "$CVMCTL" measure --uki "$name.efi" --boot-path disk --roothash "$(cat "$name.roothash")" \
    --mode "$mode" --os-release "$name.osrel" > "$name.reference.json"
  packages "$name.manifest" > "$name.packages"
  check_lock "$profile" "$name.packages"
  root_mib=$(( $(stat -c %s "$name.root-x86-64.raw") >> 20 ))
  echo "image: $profile: $name.raw ($(( $(stat -c %s "$name.raw") >> 20 )) MiB: root $root_mib MiB, UKI $(( $(stat -c %s "$name.efi") >> 20 )) MiB) in $took ms; UKI sha256 $(sha256sum < "$name.efi" | cut -c1-16)…, roothash $(cut -c1-16 "$name.roothash")…; reference $name.reference.json"
done
