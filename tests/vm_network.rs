//! VM tests of stage 6: the network comes up only when launch.toml needs it, by DHCP from
//! QEMU's user network (restrict=on) or statically.

use cvm_testkit as common;

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

/// DHCP because a KBS is configured; nothing listens behind the guestfwd port, so the attest
/// stage retries with backoff and fails closed within launch.toml's deadline.
#[test]
#[ignore = "boots a VM: run through `make test`"]
fn dhcp_for_a_kbs_then_kbs_down_fails_closed_within_the_deadline() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // https (production refuses a KBS over http), any pin: no handshake is reached.
    let pin = "ab".repeat(32);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("initdata.toml");
    std::fs::write(
        &path,
        format!(
            r#"version = "0.1.0"
algorithm = "sha256"
[data]
"launch.toml" = '''
[kbs]
url = "https://10.0.2.100:{port}"
pin = "{pin}"
timeout = 4
'''
"#
        ),
    )
    .unwrap();
    let (hash, mut extra) = verified_root();
    extra.extend([
        "--fw-cfg".into(),
        format!("opt/cvm/initdata={}", path.display()),
        "--guestfwd".into(),
        port.to_string(),
    ]);
    let b = boot(&format!("{hash} cvm.initdata=fw_cfg"), &extra);
    assert!(
        b.has("network: eth0 10.0.2.15/24") && b.has("(DHCP lease "),
        "{}",
        b.show()
    );
    b.assert_one_error("cvm-agent: error: attest: ");
    let error = b.errors()[0].to_string();
    assert!(
        error.contains("no answer within the 4 s deadline") && error.contains("attempts"),
        "{error}"
    );
    assert!(b.has("retrying in"), "{}", b.show());
    assert!(!b.has("cvm-agent: result"), "{}", b.show());
    assert!(b.powered_off(), "{}", b.show());
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
