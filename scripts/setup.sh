#!/usr/bin/env bash
# Install what building and booting cvm-agent needs on a Debian 12 host, and fetch the guest
# kernel (Debian's linux-image-cloud-amd64) into .cache/kernel without touching the host's /boot.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(qemu-system-x86 qemu-utils swtpm swtpm-tools cpio busybox-static kmod gzip zstd
          erofs-utils squashfs-tools cryptsetup-bin gdisk util-linux ca-certificates
          libdevmapper-dev libclang-dev libseccomp-dev libelf-dev zlib1g-dev pkg-config
          dnsmasq-base iproute2 iputils-ping python3 python3-jwcrypto
          e2fsprogs docker-registry umoci skopeo apache2-utils
          ovmf systemd-boot-efi pesign sbsigntool tpm2-tools mtools dosfstools binutils
          bubblewrap python3-pefile debian-archive-keyring)

# `make image` (mkosi.conf): mkosi 24 from bookworm-backports (bookworm's 14 predates the
# config it reads). Its package needs systemd >= 254, which takes udev and libudev along:
# those come from backports too, all at once, so apt does not remove udev or what depends on
# it (tpm2-tools, libdevmapper-dev). systemd-boot-efi stays bookworm's: the UKIs carry its 252
# stub, which `cvmctl measure --uki` predicts. repart and ukify for the images come from the
# tools tree (mkosi.tools/), not from the host.
BACKPORTS=(mkosi systemd systemd-container libsystemd0 libsystemd-shared udev libudev1 libudev-dev)
SUITES_FILE=/etc/apt/sources.list.d/cvm-agent-suites.sources

export DEBIAN_FRONTEND=noninteractive
# bookworm-backports, for mkosi and its systemd only: its packages are NotAutomatic, so apt
# takes nothing else from it unless asked by name and suite. (The images' tools tree comes from
# trixie through mkosi.tools/'s own package sources, not the host's.)
if [ ! -f "$SUITES_FILE" ] && [ "$(id -u)" = 0 ]; then
  cat > "$SUITES_FILE" <<'SUITES'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SUITES
  apt-get update -qq
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
dpkg-query -W -f='${Version}' mkosi 2>/dev/null | grep -q '^24\.' || missing+=("${BACKPORTS[@]/%//bookworm-backports}")
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  if [ "$(id -u)" != 0 ]; then
    echo "setup: error: need root to install ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "setup: error: cargo not found (the Rust toolchain is expected on the machine)" >&2
  exit 1
fi

KDIR=.cache/kernel
if [ -f "$KDIR/stamp" ] && [ -f "$KDIR/vmlinuz" ] && [ -d "$KDIR/modules" ]; then
  exit 0
fi
echo "setup: fetching the guest kernel (linux-image-cloud-amd64)"
rm -rf "$KDIR" && mkdir -p "$KDIR/dl"
# _apt cannot write into a root-owned work tree; a world-writable download dir avoids the warning.
chmod 0777 "$KDIR/dl"
(
  cd "$KDIR/dl"
  apt-get download linux-image-cloud-amd64 >/dev/null 2>&1 || { apt-get update -qq && apt-get download linux-image-cloud-amd64 >/dev/null; }
  meta=$(ls linux-image-cloud-amd64_*.deb)
  image=$(dpkg-deb -f "$meta" Depends | tr ',' '\n' | sed -n 's/^ *\(linux-image-[0-9][^ ]*\).*/\1/p' | head -n1)
  [ -n "$image" ] || { echo "setup: error: cannot find the kernel image package in $meta" >&2; exit 1; }
  apt-get download "$image" >/dev/null
)
deb=$(ls "$KDIR"/dl/linux-image-[0-9]*.deb)
dpkg-deb -x "$deb" "$KDIR/root"
kver=$(ls "$KDIR/root/lib/modules")
depmod -b "$KDIR/root" "$kver"
ln -sfn "root/boot/vmlinuz-$kver" "$KDIR/vmlinuz"
ln -sfn "root/lib/modules/$kver" "$KDIR/modules"
rm -f "$KDIR"/dl/*.deb
echo "$kver $(basename "$deb")" > "$KDIR/stamp"
echo "setup: kernel $kver in $KDIR"
