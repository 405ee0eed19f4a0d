//! VM tests of stage 6: the network comes up only when launch.toml needs it, by DHCP from
//! QEMU's user network (restrict=on) or statically.

mod common;

use common::*;
use std::path::Path;

fn boot_with(initdata: Option<&Path>) -> Boot {
    let (hash, mut extra) = verified_root();
    let mut append = hash;
    if let Some(path) = initdata {
        extra.extend([
            "--fw-cfg".into(),
            format!("opt/cvm/initdata={}", path.display()),
        ]);
        append.push_str(" cvm.initdata=fw_cfg");
    }
    boot(&append, &extra)
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn dhcp_when_a_kbs_is_configured() {
    let b = boot_with(Some(&repo().join("qemu/demo-initdata.toml")));
    assert_eq!(b.code, 0, "{}", b.show());
    assert!(
        b.has("network: eth0 10.0.2.15/24") && b.has("(DHCP lease "),
        "{}",
        b.show()
    );
    assert!(b.result().unwrap()["stages_ms"]["network"].is_u64());
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn static_address_from_launch_toml() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("initdata.toml");
    std::fs::write(
        &path,
        r#"version = "0.1.0"
algorithm = "sha256"
[data]
"launch.toml" = '''
[network]
mode = "static"
address = "10.0.2.20/24"
'''
"#,
    )
    .unwrap();
    let b = boot_with(Some(&path));
    assert_eq!(b.code, 0, "{}", b.show());
    assert!(b.has("network: eth0 10.0.2.20/24 (static)"), "{}", b.show());
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn no_network_when_nothing_needs_it() {
    let b = boot_with(None);
    assert_eq!(b.code, 0, "{}", b.show());
    assert!(b.has("network: not needed"), "{}", b.show());
    assert!(!b.has("DHCP lease"), "{}", b.show());
}
