# cvm-agent: `make demo` boots the demo VM, `make test` runs every test (VM tests included).
SHELL := /bin/bash
TARGET := x86_64-unknown-linux-gnu
AGENT := target/$(TARGET)/release/cvm-agent
TRIVIAL := target/$(TARGET)/release/trivial_init
NVME_PROBE := target/$(TARGET)/release/nvme_probe
CVMCTL := target/release/cvmctl
KERNEL := .cache/kernel/vmlinuz
MODULES := .cache/kernel/modules
OUT := out
# Only the guest binaries are static; --target keeps build scripts and proc macros dynamic.
# The guest build (its own target directory) is optimised for size, opt-level "z" (sha2 stays
# at 3, Cargo.toml): 6.06 -> 5.70 MB and RSS -0.3..0.5 MiB, for a workload stage ~60 ms
# (~10%) slower under TCG and state-stage times within noise (README, "Size and memory").
# The host tools keep the release profile's "s".
STATIC := RUSTFLAGS="-C target-feature=+crt-static" CARGO_PROFILE_RELEASE_OPT_LEVEL=z
export SOURCE_DATE_EPOCH ?= 0

.PHONY: all setup build initrd rootfs uki disk images image image-repro image-demo demo demo-reset test lint unit bench tcb clean

all: build

setup:
	@scripts/setup.sh

build: setup
	@# The agent alone: an example in the same cargo command would pull the dev-dependencies in,
	@# and their features would be unified into the agent's crates (serde_json_canonicalizer turns
	@# on serde_json's float_roundtrip, for one); the bench's trivial init is a package of its own.
	$(STATIC) cargo build --locked --release --target $(TARGET) -p cvm-agent -p trivial-init -p cvm-nvme --bin cvm-agent --bin trivial_init --bin nvme_probe
	cargo build --locked --release -p cvmctl --bin cvmctl
	@# static-pie keeps ASLR for PID 1; ldd calls that "statically linked" (plain static: "not a dynamic executable").
	@ldd $(AGENT) 2>&1 | grep -Eq "not a dynamic executable|statically linked" || { echo "error: $(AGENT) is not static"; exit 1; }
	@echo "cvm-agent: $$(stat -c %s $(AGENT)) bytes, static"

initrd: build
	@mkdir -p $(OUT)
	$(CVMCTL) initrd --agent $(AGENT) --spec initrd --modules $(realpath $(MODULES)) -o $(OUT)/initrd.img
	$(CVMCTL) initrd --agent $(TRIVIAL) --spec tests/initrd-trivial -o $(OUT)/trivial-initrd.img
	$(CVMCTL) initrd --agent $(NVME_PROBE) --spec tests/initrd-trivial -o $(OUT)/nvme-probe-initrd.img

rootfs: build
	CVMCTL=$(CVMCTL) scripts/mkroot.sh $(OUT)/root-tree
	$(CVMCTL) rootfs $(OUT)/root-tree -o $(OUT)/rootfs.img

# The measured boot: a UKI (kernel, the agent's initrd, the image's os-release, the production
# command line) and the bootable GPT disk (ESP with the UKI, then the verity root) a cloud or
# OVMF boots. Both byte-identical on rebuild; `cvmctl measure --uki` predicts their PCRs.
CMDLINE = console=ttyS0 panic=-1 loglevel=4 roothash=$$(cat $(OUT)/rootfs.img.roothash) cvm.initdata=fw_cfg
uki: initrd rootfs
	$(CVMCTL) uki --kernel $(KERNEL) --initrd $(OUT)/initrd.img --os-release $(OUT)/root-tree/etc/os-release \
	  --cmdline "$(CMDLINE)" -o $(OUT)/uki.efi

disk: uki
	$(CVMCTL) disk --uki $(OUT)/uki.efi --rootfs $(OUT)/rootfs.img -o $(OUT)/disk.img

images: initrd rootfs disk

# The production and debug OS images of a real Debian root, built by mkosi (mkosi.conf,
# mkosi.profiles/debug.conf, the shared partition layout in systemd/repart.d; tools from the
# trixie tools tree of mkosi.tools/) into out/image/: per image the bootable disk (.raw), its
# UKI (.efi, the one on the ESP), the root hash (.roothash), the os-release in the UKI
# (.osrel), the package list (.packages, compared with mkosi.lock/) and the predicted
# boot-chain and agent PCRs (.reference.json, `cvmctl measure --uki`).
IMAGE := $(OUT)/image
image: initrd
	scripts/image-extra.sh $(OUT)/image-extra
	CVMCTL=$(CVMCTL) scripts/mkosi-image.sh $(IMAGE)

# Two builds from the same inputs: the same root hash and the same UKI digest.
image-repro: initrd
	scripts/image-extra.sh $(OUT)/image-extra
	CVMCTL=$(CVMCTL) scripts/image-repro.sh $(IMAGE)

# The demo on the mkosi production image.
image-demo: image
	OUT=$(OUT) KERNEL=$(KERNEL) CVMCTL=$(CVMCTL) STATE=$(OUT)/image-demo DISK=$(IMAGE)/cvm-agent-production.raw \
	  UKI=$(IMAGE)/cvm-agent-production.efi OS_RELEASE=$(IMAGE)/cvm-agent-production.osrel \
	  ROOTHASH=$(IMAGE)/cvm-agent-production.roothash scripts/demo.sh

demo: images
	OUT=$(OUT) KERNEL=$(KERNEL) CVMCTL=$(CVMCTL) scripts/demo.sh

demo-reset:
	rm -rf $(OUT)/demo

lint:
	cargo fmt --all -- --check
	cargo clippy --locked --workspace --all-targets -- -D warnings

test: images
	@# The mkosi images (`make image`: mostly downloads and I/O) build while lint and the test
	@# build keep the CPUs busy; then every test runs. Absolute paths: each crate's tests run in
	@# that crate's directory.
	@mkdir -p $(OUT); \
	$(MAKE) --no-print-directory image > $(OUT)/image.log 2>&1 & image=$$!; \
	$(MAKE) --no-print-directory lint && cargo test --locked --workspace --all-targets --no-run; rc=$$?; \
	if ! wait $$image; then tail -40 $(OUT)/image.log; echo "make test: make image failed (log: $(OUT)/image.log)"; exit 1; fi; \
	grep '^image' $(OUT)/image.log; [ $$rc = 0 ] || exit $$rc; \
	CVM_IMAGE_DIR=$(abspath $(IMAGE)) CVM_AGENT=$(abspath $(AGENT)) CVM_INITRD=$(abspath $(OUT)/initrd.img) CVM_NVME_PROBE_INITRD=$(abspath $(OUT)/nvme-probe-initrd.img) CVM_ROOTFS=$(abspath $(OUT)/rootfs.img) CVM_KERNEL=$(abspath $(KERNEL)) CVM_MODULES=$(realpath $(MODULES)) \
	  cargo test --locked --workspace --all-targets --no-fail-fast -- --include-ignored --test-threads=2

bench: images
	$(CVMCTL) bench boot --kernel $(KERNEL) --initrd $(OUT)/initrd.img --trivial-initrd $(OUT)/trivial-initrd.img --agent $(AGENT)
	$(CVMCTL) bench rootfs --size-mib 100
	$(CVMCTL) bench state --size-mib 1024
	$(CVMCTL) bench unpack --size-mib 100
	$(CVMCTL) bench disk --uki $(OUT)/uki.efi --rootfs $(OUT)/rootfs.img
	OUT=$(OUT) KERNEL=$(KERNEL) CVMCTL=$(CVMCTL) scripts/bench-volume.sh
	OUT=$(OUT) KERNEL=$(KERNEL) CVMCTL=$(CVMCTL) scripts/bench-boot-chain.sh

# The guest's trusted code: our crates and lines, and the third-party crates with versions.
tcb:
	@scripts/tcb.py

clean:
	cargo clean
	rm -rf $(OUT)
