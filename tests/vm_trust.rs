//! VM tests of the boot chain as a hostile host would attack it: OVMF measures the UKI, the
//! systemd stub its sections (PCR 11) and any override (PCR 12), and a production agent goes on
//! only from an unmodified, measured UKI. The KBS side (pinned PCRs, the firmware log) is in
//! vm_kbs.rs.

use cvm_testkit as common;

use common::*;

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn production_refuses_a_direct_kernel_boot() {
    // The host loads kernel and initrd itself (QEMU -kernel/-initrd/-append): nothing measured
    // them, so the host could have wrapped the agent in an initrd of its own.
    let (hash, mut extra) = verified_root();
    extra.push("--direct".into());
    let b = boot(&format!("{hash} cvm.mode=production"), &extra);
    assert_ne!(b.code, 0, "{}", b.show());
    assert!(b.result().is_none(), "{}", b.show());
    let errors = b.lines("cvm-agent: error:");
    assert_eq!(errors.len(), 1, "{}", b.show());
    assert!(
        errors[0].starts_with("cvm-agent: error: tpm: the boot chain (PCR 11 is zero: this VM was not booted from a UKI"),
        "{}",
        b.show()
    );
    assert!(b.has("booted not from a UKI"), "{}", b.show());
    assert!(b.powered_off(), "{}", b.show());
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn production_refuses_a_command_line_the_host_passed() {
    // The UKI's own command line is measured into PCR 11; a host that passes another one (here
    // the very same text, still an override) makes the stub measure it into PCR 12.
    let (hash, extra) = verified_root();
    let dir = tempfile::tempdir().unwrap();
    let append = format!("{hash} cvm.mode=production");
    let line = format!("{CMDLINE_PREFIX} {append}");
    let uki = uki(
        dir.path(),
        "uki.efi",
        &input("CVM_KERNEL", ".cache/kernel/vmlinuz"),
        &input("CVM_INITRD", "out/initrd.img"),
        None,
        &append,
    );
    let mut extra = extra;
    extra.extend([
        "--uki".to_string(),
        uki.display().to_string(),
        "--host-append".to_string(),
        line.clone(),
    ]);
    let b = boot("", &extra);
    assert_ne!(b.code, 0, "{}", b.show());
    assert!(b.result().is_none(), "{}", b.show());
    let errors = b.lines("cvm-agent: error:");
    assert_eq!(errors.len(), 1, "{}", b.show());
    assert!(
        errors[0].starts_with("cvm-agent: error: tpm: the boot chain (PCR 12 is "),
        "{}",
        b.show()
    );
    assert!(b.has("booted a UKI with host overrides"), "{}", b.show());
    assert!(b.powered_off(), "{}", b.show());

    // The same UKI without the override boots (and says how).
    let b = boot("", &extra[..extra.len() - 2]);
    assert_eq!(b.code, 0, "{}", b.show());
    assert!(
        b.has("tpm: booted a UKI through the systemd stub (PCR 11 sha256="),
        "{}",
        b.show()
    );
    assert!(
        b.has("firmware event log at /sys/kernel/security/tpm0/binary_bios_measurements"),
        "{}",
        b.show()
    );
}
