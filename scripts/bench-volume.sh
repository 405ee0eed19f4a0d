#!/usr/bin/env bash
# `make bench` part: throughput of the encrypted state volume as the workload sees it. Boots the
# test image with the dev KBS and a fresh state disk of SIZE_MIB (first boot: format + mkfs),
# runs `dd` in the workload (write with fsync, then read back with O_DIRECT so the page cache
# does not answer), and prints the stage times and MB/s the guest reports.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out}
KERNEL=${KERNEL:-.cache/kernel/vmlinuz}
CVMCTL=${CVMCTL:-target/release/cvmctl}
SIZE_MIB=${SIZE_MIB:-1024}
DD_MIB=${DD_MIB:-256}
work=$(mktemp -d /tmp/cvm-bench-volume.XXXXXX)
kbs_pid=""
trap '[ -n "$kbs_pid" ] && kill $kbs_pid 2>/dev/null; cp "$work/console.log" /tmp/bench-volume-console.log 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$work/resources/default/bench" "$work/kbs"
head -c 32 /dev/urandom > "$work/resources/default/bench/state-key"
truncate -s "${SIZE_MIB}M" "$work/state.img"
pin=$("$CVMCTL" kbs-tls "$work/tls")
cat > "$work/initdata.toml" <<TOML
version = "0.1.0"
algorithm = "sha256"

[data]
"launch.toml" = '''
[kbs]
url = "https://10.0.2.100:8080"
pin = "$pin"

[[secrets]]
name = "state-key"
uri = "kbs:///default/bench/state-key"
use = "state-key"

[state]
device = "serial:cvm-disk1"
mount = "/var/lib/app"

[workload]
image = "oci:/usr/share/cvm-agent/images:hello"
args = ["/bin/sh", "-c", "t0=\$(cut -d' ' -f1 /proc/uptime); dd if=/dev/zero of=/var/lib/app/dd bs=1M count=$DD_MIB conv=fsync 2>/dev/null; t1=\$(cut -d' ' -f1 /proc/uptime); dd if=/var/lib/app/dd of=/dev/null bs=1M iflag=direct 2>/dev/null; t2=\$(cut -d' ' -f1 /proc/uptime); awk -v a=\$t0 -v b=\$t1 -v c=\$t2 -v m=$DD_MIB 'BEGIN { print sprintf(\"dd write+fsync %d MiB in %.2f s: %.1f MiB/s; read O_DIRECT in %.2f s: %.1f MiB/s\", m, b-a, m/(b-a), c-b, m/(c-b)) }'"]
'''
TOML
digest=$(sha256sum "$work/initdata.toml" | cut -d' ' -f1)
ak=$("$CVMCTL" tpm-ak --tpm-state "$work/tpm")
cat > "$work/policy.toml" <<TOML
tee = ["tpm"]
allow_debug = false
initdata_digest = "$digest"
require_initdata = true
trusted_aks = ["$ak"]
TOML
"$CVMCTL" kbs --listen 127.0.0.1:0 --policy "$work/policy.toml" --resources "$work/resources" \
  --ready-file "$work/kbs.addr" \
  --tls-cert "$work/tls/kbs-cert.pem" --tls-key "$work/tls/kbs-key.pem" 2> "$work/kbs.log" &
kbs_pid=$!
for _ in $(seq 100); do [ -s "$work/kbs.addr" ] && break; sleep 0.1; done
port=$(sed 's/.*://' "$work/kbs.addr")
roothash=$(cat "$OUT/rootfs.img.roothash")
qemu/boot.sh --kernel "$KERNEL" --initrd "$OUT/initrd.img" --disk "$OUT/rootfs.img:ro" --disk "$work/state.img" \
  --fw-cfg "opt/cvm/initdata=$work/initdata.toml" --guestfwd "8080:$port" --tpm-state "$work/tpm" --memory 1024 \
  --append "roothash=$roothash cvm.initdata=fw_cfg" --timeout 600 --quiet --console "$work/console.log" || {
  cat "$work/console.log"; echo "bench volume: the boot failed" >&2; exit 1; }
echo "bench volume: ${SIZE_MIB} MiB LUKS2 state disk (aes-xts-plain64, 4 KiB sectors), QEMU TCG, dd of ${DD_MIB} MiB"
# "agent memory": the agent's own RSS while the workload runs (issue 16: target <= 6 MiB).
grep -E "state: .*LUKS2|workload: dd|agent memory|started pid" "$work/console.log" | sed 's/^/  /'
