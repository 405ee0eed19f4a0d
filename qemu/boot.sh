#!/usr/bin/env bash
# Boot a kernel + initrd under QEMU with a fresh swtpm vTPM, capture the serial console, and exit
# with the workload's exit code from the agent's result line (non-zero when there is none).
#
#   qemu/boot.sh --kernel K --initrd I [--append "..."] [--disk FILE[:ro]]... [--timeout SEC]
#                [--console FILE] [--tpm-state DIR] [--no-tpm] [--no-net] [--fw-cfg NAME=FILE]
#                [--guestfwd PORT|GUESTPORT:HOSTPORT|ADDR:GUESTPORT:HOSTPORT] [--net CIDR]
#                [--smbios-vendor NAME] [--memory MB] [--monitor SOCKET] [--quiet]
#                [--serial-socket SOCKET] [--allow-reboot] [--nvme FILE[:BLOCKSIZE]]...
#                [--direct | --uki FILE [--host-append "..."] | --boot-disk FILE]
#
# How the VM boots. By default, as a confidential VM does: OVMF (UEFI, measured boot into the
# vTPM) runs a UKI that `cvmctl uki` makes from --kernel, --initrd and the command line
# ("console=ttyS0 panic=-1 loglevel=4" + --append), loaded through QEMU's -kernel; the stub
# measures the UKI's sections into PCR 11. --uki FILE boots a given UKI instead (--host-append
# then plays a host that overrides its command line: the stub measures that into PCR 12).
# --boot-disk FILE boots a whole disk (`cvmctl disk`) from its ESP. --direct is the old
# unmeasured path (QEMU loads kernel and initrd itself, no firmware measurements): a production
# agent refuses it.
#
# --serial-socket: the console is also a unix socket (server) a test can type into (the debug
# shell); the console file still gets everything. --allow-reboot: a guest reboot (a restart
# policy) boots again instead of ending QEMU; the last result line counts.
#
# Exit codes: the result line's exit_code; 124 on timeout; 125 for usage/setup errors;
# 126 when the VM ended without a result line.
# Networking is QEMU user mode with restrict=on: the guest reaches nothing but the guestfwd
# ports (10.0.2.100:GUESTPORT, or ADDR:GUESTPORT), which go to 127.0.0.1:HOSTPORT on the host.
# --net CIDR is the user network (default 10.0.2.0/24; QEMU puts its gateway at net+0.0.2.2 and
# leases net+0.0.2.15: 10.0.2.15, or 168.0.2.15 in 168.0.0.0/7). A guestfwd address must lie
# inside it, so a cloud's link-local services (169.254.169.254, Azure's 168.63.129.16) need
# e.g. --net 168.0.0.0/7, which holds both.
# --smbios-vendor NAME sets the SMBIOS system manufacturer (/sys/class/dmi/id/sys_vendor),
# which clouds set to Google, Microsoft Corporation or Amazon EC2.
# --nvme FILE[:BLOCKSIZE] adds FILE as the next namespace (nsid 1, 2, …) of one NVMe
# controller, with logical blocks of BLOCKSIZE bytes (default 512).
# KVM only with CVM_KVM=1 (TCG by default).
set -euo pipefail

kernel="" initrd="" append="" timeout=120 console="" tpm_state="" tpm=1 net=1 memory=512 quiet=0
monitor="" serial_socket="" reboot=0 mode=uki uki="" host_append="" boot_disk=""
usernet=10.0.2.0/24 smbios_vendor=""
disks=() fwcfg=() fwds=() nvmes=()
die() { echo "boot.sh: error: $*" >&2; exit 125; }
while [ $# -gt 0 ]; do
  case "$1" in
    --kernel) kernel=$2; shift 2 ;;
    --initrd) initrd=$2; shift 2 ;;
    --append) append=$2; shift 2 ;;
    --disk) disks+=("$2"); shift 2 ;;
    --nvme) nvmes+=("$2"); shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    --console) console=$2; shift 2 ;;
    --tpm-state) tpm_state=$2; shift 2 ;;
    --no-tpm) tpm=0; shift ;;
    --no-net) net=0; shift ;;
    --fw-cfg) fwcfg+=("$2"); shift 2 ;;
    --guestfwd) fwds+=("$2"); shift 2 ;;
    --net) usernet=$2; shift 2 ;;
    --smbios-vendor) smbios_vendor=$2; shift 2 ;;
    --memory) memory=$2; shift 2 ;;
    --monitor) monitor=$2; shift 2 ;;
    --quiet) quiet=1; shift ;;
    --serial-socket) serial_socket=$2; shift 2 ;;
    --allow-reboot) reboot=1; shift ;;
    --direct) mode=direct; shift ;;
    --uki) mode=uki; uki=$2; shift 2 ;;
    --host-append) host_append=$2; shift 2 ;;
    --boot-disk) mode=disk; boot_disk=$2; shift 2 ;;
    -h|--help) sed -n '2,35p' "$0"; exit 0 ;;
    *) die "unknown argument $1" ;;
  esac
done
if [ "$mode" = disk ]; then
  [ -f "$boot_disk" ] || die "no disk image at '$boot_disk'"
elif [ -z "$uki" ]; then
  [ -f "$kernel" ] || die "no kernel at '$kernel' (run scripts/setup.sh)"
  [ -f "$initrd" ] || die "no initrd at '$initrd'"
else
  [ -f "$uki" ] || die "no UKI at '$uki'"
fi
[ -z "$host_append" ] || [ -n "$uki" ] || die "--host-append needs --uki"
# A given UKI or disk carries its own (measured) command line: --append would be silently lost.
[ -z "$append" ] || [ "$mode" = direct ] || [ -z "$uki$boot_disk" ] \
  || die "--append applies only to a UKI boot.sh makes; a given UKI or disk has its own command line (--host-append overrides a --uki's)"
[[ "$timeout" =~ ^[0-9]+$ ]] || die "--timeout takes seconds"
[[ "$usernet" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}$ ]] || die "--net takes an IPv4 CIDR (a.b.c.d/len)"
# QEMU's option syntax: a comma in a value is written twice.
[[ "$smbios_vendor" != *[[:cntrl:]]* ]] || die "--smbios-vendor: no control characters"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not installed (run scripts/setup.sh)"

work=$(mktemp -d /tmp/cvm-boot.XXXXXX)
swtpm_pid=""
cleanup() {
  if [ -n "$swtpm_pid" ]; then kill "$swtpm_pid" 2>/dev/null || true; wait "$swtpm_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ -n "$console" ] || console="$work/console.log"
: > "$console"

if [ -n "$serial_socket" ]; then
  serial=(-chardev "socket,id=ser0,path=$serial_socket,server=on,wait=off,logfile=$console,logappend=on")
else
  serial=(-chardev "file,id=ser0,path=$console")
fi
cvmctl=${CVMCTL:-$(cd "$(dirname "$0")/.." && pwd)/target/release/cvmctl}
args=(-machine q35 -m "$memory" -smp 1 -nographic -no-user-config -nodefaults
      -display none
      "${serial[@]}" -serial chardev:ser0)
cmdline="console=ttyS0 panic=-1 loglevel=4 $append"
if [ "$mode" = direct ]; then
  args+=(-kernel "$kernel" -initrd "$initrd" -append "$cmdline")
else
  code_fd=/usr/share/OVMF/OVMF_CODE_4M.fd vars_fd=/usr/share/OVMF/OVMF_VARS_4M.fd
  [ -f "$code_fd" ] || die "no OVMF at $code_fd (run scripts/setup.sh)"
  cp "$vars_fd" "$work/vars.fd"
  args+=(-drive "if=pflash,format=raw,unit=0,readonly=on,file=$code_fd"
         -drive "if=pflash,format=raw,unit=1,file=$work/vars.fd")
  if [ "$mode" = disk ]; then
    # The boot disk holds the root too, so it is cvm-disk0 as the root disk of a direct or UKI
    # boot is, and the --disk images follow from cvm-disk1 (init-data names disks by serial).
    args+=(-drive "file=$boot_disk,if=none,id=boot,format=raw,readonly=on"
           -device "virtio-blk-pci,drive=boot,serial=cvm-disk0,bootindex=0")
  else
    if [ -z "$uki" ]; then
      [ -x "$cvmctl" ] || die "making a UKI needs cvmctl at '$cvmctl' (set CVMCTL)"
      uki=$work/uki.efi
      "$cvmctl" uki --kernel "$kernel" --initrd "$initrd" --cmdline "$cmdline" -o "$uki" >/dev/null \
        || die "cvmctl uki failed"
    fi
    args+=(-kernel "$uki")
    [ -z "$host_append" ] || args+=(-append "$host_append")
  fi
fi
[ "$reboot" = 1 ] || args+=(-no-reboot)
[ -z "$smbios_vendor" ] || args+=(-smbios "type=1,manufacturer=${smbios_vendor//,/,,}")
# A human monitor on a unix socket lets tests press keys (ctrl-alt-delete) or quit.
if [ -n "$monitor" ]; then args+=(-monitor "unix:$monitor,server=on,wait=off"); else args+=(-monitor none); fi
if [ "${CVM_KVM:-0}" = 1 ]; then args+=(-accel kvm -cpu host); else args+=(-accel tcg -cpu max); fi

if [ "$tpm" = 1 ]; then
  command -v swtpm >/dev/null || die "swtpm not installed (run scripts/setup.sh)"
  state=${tpm_state:-$work/tpm}
  mkdir -p "$state"
  # Started until it is up and stays up (a loaded host has been seen to lose a fresh swtpm's
  # socket right after it appeared).
  for attempt in 1 2 3; do
    swtpm socket --tpm2 --tpmstate "dir=$state" --ctrl "type=unixio,path=$work/swtpm.sock" \
          --log "file=$work/swtpm.log,level=1" --terminate &
    swtpm_pid=$!
    for _ in $(seq 1 200); do [ -S "$work/swtpm.sock" ] && break; sleep 0.05; done
    sleep 0.1
    if [ -S "$work/swtpm.sock" ] && kill -0 "$swtpm_pid" 2>/dev/null; then break; fi
    kill "$swtpm_pid" 2>/dev/null || true; wait "$swtpm_pid" 2>/dev/null || true; swtpm_pid=""
    rm -f "$work/swtpm.sock"
    [ "$attempt" = 3 ] && die "swtpm did not start: $(cat "$work/swtpm.log" 2>/dev/null)"
  done
  args+=(-chardev "socket,id=chrtpm,path=$work/swtpm.sock" -tpmdev emulator,id=tpm0,chardev=chrtpm
         -device tpm-tis,tpmdev=tpm0)
fi

i=0
[ "$mode" = disk ] && i=1
for d in "${disks[@]}"; do
  file=${d%:ro}; ro=off; [ "$file" != "$d" ] && ro=on
  [ -f "$file" ] || die "no disk image at '$file'"
  args+=(-drive "file=$file,if=none,id=disk$i,format=raw,readonly=$ro"
         -device "virtio-blk-pci,drive=disk$i,serial=cvm-disk$i")
  i=$((i + 1))
done
if [ "${#nvmes[@]}" -gt 0 ]; then
  args+=(-device "nvme,id=nvme0,serial=cvm-nvme0")
  n=1
  for d in "${nvmes[@]}"; do
    file=${d%%:*}; bs=512; [ "$file" != "$d" ] && bs=${d#*:}
    [ -f "$file" ] || die "no NVMe namespace image at '$file'"
    args+=(-drive "file=$file,if=none,id=nvmens$n,format=raw"
           -device "nvme-ns,bus=nvme0,drive=nvmens$n,nsid=$n,logical_block_size=$bs,physical_block_size=$bs")
    n=$((n + 1))
  done
fi
for f in "${fwcfg[@]}"; do args+=(-fw_cfg "name=${f%%=*},file=${f#*=}"); done

if [ "$net" = 1 ]; then
  netdev="user,id=n0,restrict=on,net=$usernet"
  # One `cvmctl relay` per guest connection, to 127.0.0.1 only (see crates/cvmctl/src/relay.rs
  # for why not the tcp: chardev form).
  for p in "${fwds[@]}"; do
    addr=10.0.2.100
    if [[ "$p" =~ ^([0-9]{1,3}(\.[0-9]{1,3}){3}):([0-9]+:[0-9]+)$ ]]; then
      addr=${BASH_REMATCH[1]} p=${BASH_REMATCH[3]}
    fi
    [[ "$p" =~ ^[0-9]+(:[0-9]+)?$ ]] || die "--guestfwd takes PORT, GUESTPORT:HOSTPORT or ADDR:GUESTPORT:HOSTPORT"
    [ -x "$cvmctl" ] || die "--guestfwd needs cvmctl at '$cvmctl' (set CVMCTL)"
    netdev+=",guestfwd=tcp:$addr:${p%%:*}-cmd:$cvmctl relay ${p##*:}"
  done
  args+=(-netdev "$netdev" -device virtio-net-pci,netdev=n0,romfile=)
fi

# Show the console live while it is written to the file.
if [ "$quiet" = 0 ]; then
  tail -n +1 -F "$console" 2>/dev/null &
  tail_pid=$!
fi
rc=0
# QEMU runs in the background so that a guest kernel stuck in its own power-off path ends
# POWEROFF_GRACE seconds after the agent asked for it: under TCG on a loaded host the guest
# kernel sometimes soft-locks in a kworker after the agent's reboot(2) ("end: powering off",
# then RCU stalls, never "reboot: Power down"). The agent's work and its result line are done by
# then; boot.sh says so on stderr and as the console's last line.
POWEROFF_GRACE=${POWEROFF_GRACE:-30}
timeout --kill-after=5 "$timeout" qemu-system-x86_64 "${args[@]}" </dev/null &
qemu_pid=$!
asked="" hung=0
while kill -0 "$qemu_pid" 2>/dev/null; do
  if [ -z "$asked" ] && grep -Eq '^cvm-agent: \[[ 0-9.]+\] [A-Za-z0-9_-]+: powering off' "$console" 2>/dev/null; then
    asked=$SECONDS
  fi
  if [ -n "$asked" ] && [ $((SECONDS - asked)) -ge "$POWEROFF_GRACE" ]; then
    hung=1
    kill "$qemu_pid" 2>/dev/null || true
    break
  fi
  sleep 1
done
wait "$qemu_pid" || rc=$?
if [ "$quiet" = 0 ]; then sleep 0.2; kill "$tail_pid" 2>/dev/null || true; wait "$tail_pid" 2>/dev/null || true; fi
if [ "$hung" = 1 ]; then
  echo "boot.sh: warning: the guest kernel did not power off within ${POWEROFF_GRACE}s of the agent's request; QEMU stopped" >&2
  # Also in the console, after everything the guest wrote: cvm_testkit's Boot::powered_off
  # takes this line (never written by the guest) for the agent's part of the power-off.
  echo "boot.sh: power-off hung in the guest kernel; QEMU stopped ${POWEROFF_GRACE}s after the agent's request" >> "$console"
  rc=0
fi

if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
  echo "boot.sh: VM did not power off within ${timeout}s" >&2
  exit 124
fi
[ "$rc" = 0 ] || echo "boot.sh: qemu exited with $rc" >&2
code=$(tr -d '\r' < "$console" | sed -n 's/^cvm-agent: result {.*"exit_code":\(-\{0,1\}[0-9]\{1,\}\).*/\1/p' | tail -n1)
if [ -z "$code" ]; then
  echo "boot.sh: the VM ended without a result line" >&2
  exit 126
fi
echo "boot.sh: workload exit code $code" >&2
# Exit codes are 0-255 on the host; a signal death (-N) becomes 128+N.
if [ "$code" -lt 0 ]; then exit $((128 - code)); fi
exit $((code > 255 ? 255 : code))
