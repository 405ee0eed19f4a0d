#!/usr/bin/env bash
# `make bench`: what measured boot costs. The same kernel, initrd, command line and verified root
# booted both ways, interleaved so a noisy host hurts both alike: QEMU loading kernel and initrd
# itself (--direct, nothing measured) and OVMF running a UKI (the default path: firmware
# measurements, the systemd stub). Debug mode, so the direct boot gets as far as the UKI one
# (production refuses it); timed from QEMU's start to the agent's result line. Also times
# `cvmctl uki` and prints the UKI's size.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-out}
KERNEL=${KERNEL:-.cache/kernel/vmlinuz}
CVMCTL=${CVMCTL:-target/release/cvmctl}
ROUNDS=${ROUNDS:-3}
export CVMCTL
roothash=$(cat "$OUT/rootfs.img.roothash")
append="roothash=$roothash cvm.mode=debug"
work=$(mktemp -d /tmp/cvm-bench-boot.XXXXXX)
trap 'rm -rf "$work"' EXIT

now_ms() { date +%s%3N; }

# Seconds from start to the result line; the VM is stopped then (debug mode stays up).
boot_ms() {
  local console=$work/console.log start pid
  : > "$console"
  start=$(now_ms)
  setsid qemu/boot.sh --kernel "$KERNEL" --initrd "$OUT/initrd.img" --disk "$OUT/rootfs.img:ro" \
    --append "$append" --console "$console" --timeout 300 --quiet --no-net "$@" >/dev/null 2>&1 &
  pid=$!
  while ! grep -q '^cvm-agent: result ' "$console" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then echo "bench: the VM ended without a result line" >&2; tail -5 "$console" >&2; exit 1; fi
    sleep 0.1
  done
  echo $(( $(now_ms) - start ))
  # boot.sh leads its own session (setsid); `timeout` puts QEMU in a process group of its own,
  # so stop the whole session.
  pkill -TERM -s "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

start=$(now_ms)
"$CVMCTL" uki --kernel "$KERNEL" --initrd "$OUT/initrd.img" \
  --cmdline "console=ttyS0 panic=-1 loglevel=4 $append" -o "$work/uki.efi" >/dev/null
uki_ms=$(( $(now_ms) - start ))
echo "bench boot-chain: cvmctl uki ${uki_ms} ms, UKI $(stat -c %s "$work/uki.efi") bytes"

direct=() uki=()
for round in $(seq "$ROUNDS"); do
  d=$(boot_ms --direct); u=$(boot_ms)
  direct+=("$d"); uki+=("$u")
  echo "bench boot-chain: round $round: direct ${d} ms, OVMF+UKI ${u} ms"
done
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
md=$(median "${direct[@]}") mu=$(median "${uki[@]}")
echo "bench boot-chain: median direct ${md} ms, OVMF+UKI ${mu} ms, ratio $(awk -v a="$mu" -v b="$md" 'BEGIN { printf "%.2f", a / b }')"
