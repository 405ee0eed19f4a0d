//! VM tests of stage 10 with a registry image: Debian's `docker-registry` on 127.0.0.1, filled
//! with `skopeo`, reached by the guest as 10.0.2.100:5000 through the guestfwd relay (plain
//! HTTP, `[workload.registry] insecure_http = true`: anonymous pulls, which production allows).
//! The image is pulled by tag and by digest, with htpasswd credentials from the dev KBS (a
//! `registry-auth` secret) over TLS with the registry's key pinned (production refuses
//! credentials over http), and layers that try to write outside the root are refused before
//! anything runs.

use cvm_testkit as common;

use common::kbs::*;
use common::registry::*;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest as _, Sha256};

const TOOLS: [&str; 3] = [REGISTRY, SKOPEO, HTPASSWD];
const AUTH_PATH: &str = "default/registry/auth";

/// The image layout `make images` baked into the test root (tags demo, hello, strict).
fn images() -> PathBuf {
    let layout = rootfs()
        .parent()
        .unwrap()
        .join("root-tree/usr/share/cvm-agent/images");
    assert!(
        layout.join("index.json").exists(),
        "{} is missing — `make images` builds it",
        layout.display()
    );
    layout
}

/// Init-data holding `launch`.
fn initdata(launch: &str) -> Vec<u8> {
    format!("version = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[data]\n\"launch.toml\" = '''\n{launch}'''\n")
        .into_bytes()
}

/// A `[workload]` for a plain-HTTP registry image, with extra lines (env, args).
fn workload(image: &str, extra: &str) -> String {
    format!(
        "[workload]\nimage = \"{image}\"\n{extra}\n[workload.registry]\ninsecure_http = true\ntimeout = 60\n"
    )
}

/// The same over TLS, the registry's key (the test process's KBS key) pinned.
fn workload_tls(image: &str, extra: &str) -> String {
    format!(
        "[workload]\nimage = \"{image}\"\n{extra}\n[workload.registry]\npin = \"{}\"\ntimeout = 60\n",
        tls_identity().pin
    )
}

/// A production boot (verified root, swtpm) with `initdata` by fw_cfg; `fwds` are
/// (guest port, host port) pairs on 10.0.2.100.
fn boot_with(initdata: &[u8], fwds: &[(u16, u16)]) -> Boot {
    boot_with_extra(initdata, fwds, &[])
}

/// [`boot_with`] plus more boot.sh arguments (the KBS's vTPM).
fn boot_with_extra(initdata: &[u8], fwds: &[(u16, u16)], more: &[String]) -> Boot {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("initdata.toml");
    std::fs::write(&file, initdata).unwrap();
    let (hash, mut extra) = verified_root();
    extra.extend([
        "--fw-cfg".into(),
        format!("opt/cvm/initdata={}", file.display()),
    ]);
    for (guest, host) in fwds {
        extra.extend(["--guestfwd".into(), format!("{guest}:{host}")]);
    }
    extra.extend(more.iter().cloned());
    boot(&format!("{hash} cvm.initdata=fw_cfg"), &extra)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The one `workload:` error line of a refused boot: nothing ran, no result, powered off.
fn assert_refused(b: &Boot, needles: &[&str]) -> String {
    b.assert_one_error("cvm-agent: error: workload: ");
    let error = b.errors()[0].to_string();
    for n in needles {
        assert!(
            error.contains(n),
            "error line lacks {n:?}: {error}\n{}",
            b.show()
        );
    }
    assert!(!b.has("cvm-agent: result"), "{}", b.show());
    assert!(!b.lines("workload: ").iter().any(|l| l.contains(" from ")));
    assert!(b.powered_off(), "{}", b.show());
    // For the record (visible with --nocapture).
    eprintln!("refused: {error}");
    error
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn pulls_by_tag_and_runs() {
    if !tools_present("pulls_by_tag_and_runs", &TOOLS) {
        return;
    }
    let reg = start_registry(None);
    let dest = format!("127.0.0.1:{}/cvm/hello:1", reg.port);
    push(&images(), "hello", &dest, None, None);
    let digest = format!("sha256:{}", sha256_hex(&raw_manifest(&dest, None)));

    let data = initdata(&workload(
        "10.0.2.100:5000/cvm/hello:1",
        "env = { EXIT_CODE = \"3\" }",
    ));
    let b = boot_with(&data, &[(5000, reg.port)]);
    assert_eq!(b.code, 3, "{}", b.show());
    assert!(b.errors().is_empty(), "{}", b.show());
    assert!(
        b.lines("workload: ")
            .contains(&"workload: hello from 0 in sh"),
        "{}",
        b.show()
    );
    // The stage's pull line names what the tag resolved to.
    assert!(
        b.lines("cvm-agent: ")
            .iter()
            .any(|l| l.contains("] workload: ") && l.contains(&digest)),
        "no workload line names {digest}\n{}",
        b.show()
    );
    for l in b.lines("cvm-agent: ") {
        if l.contains("] workload: ") {
            eprintln!("figure: {l}");
        }
    }
    let result = b.result().unwrap();
    assert_eq!(result["exit_code"], 3, "{result}");
    assert!(b.powered_off(), "{}", b.show());
    // Production allows an anonymous pull over http, and warns that a tag is the network's
    // to resolve there.
    assert!(
        b.has("measure: warning: workload image \"10.0.2.100:5000/cvm/hello:1\" by tag over plain http"),
        "{}",
        b.show()
    );
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn wrong_digest_is_refused() {
    if !tools_present("wrong_digest_is_refused", &TOOLS) {
        return;
    }
    let reg = start_registry(None);
    push(
        &images(),
        "hello",
        &format!("127.0.0.1:{}/cvm/hello:1", reg.port),
        None,
        None,
    );
    // The repository exists; this manifest does not.
    let other = sha256_hex(b"not the hello image");
    let data = initdata(&workload(
        &format!("10.0.2.100:5000/cvm/hello@sha256:{other}"),
        "",
    ));
    let b = boot_with(&data, &[(5000, reg.port)]);
    assert_refused(&b, &["manifest", &other, "MANIFEST_UNKNOWN"]);
    // Pinned by digest: allowed over http in production without a warning.
    assert!(!b.has("over plain http"), "{}", b.show());
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn auth_registry_with_credentials_from_the_kbs() {
    if !tools_present("auth_registry_with_credentials_from_the_kbs", &TOOLS) {
        return;
    }
    let mut pw = [0u8; 12];
    getrandom::fill(&mut pw).unwrap();
    let password = format!("pw-{}", hex(&pw));
    // Over TLS: production refuses credentials over plain http (and debug would warn).
    let id = tls_identity();
    let (cert, key) = (
        std::fs::read_to_string(&id.cert).unwrap(),
        std::fs::read_to_string(&id.key).unwrap(),
    );
    let reg = start_registry_tls(Some(("cvm", &password)), Some((&cert, &key)));
    let creds = format!("cvm:{password}");
    push(
        &images(),
        "hello",
        &format!("127.0.0.1:{}/cvm/hello:1", reg.port),
        None,
        Some(&creds),
    );
    let basic = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(&creds)
    };
    let auth_json = format!(r#"{{"auths":{{"10.0.2.100:5000":{{"auth":"{basic}"}}}}}}"#);
    let image = "10.0.2.100:5000/cvm/hello:1";

    let data = initdata(&format!(
        "{}timeout = 20\n\n\
         [[secrets]]\nname = \"registry-auth\"\nuri = \"kbs:///{AUTH_PATH}\"\nuse = \"registry-auth\"\n\n{}",
        kbs_section(),
        workload_tls(image, "env = { EXIT_CODE = \"5\" }")
    ));
    let kbs = start_kbs(&Setup {
        policy: strict_policy(&data),
        resources: vec![(AUTH_PATH.to_string(), auth_json.into_bytes())],
        tls: true,
        ..Default::default()
    });
    let b = boot_with_extra(
        &data,
        &[(8080, kbs.port), (5000, reg.port)],
        &kbs.tpm_args(),
    );
    assert_eq!(b.code, 5, "{}\n--- kbs ---\n{}", b.show(), kbs.log());
    assert!(b.errors().is_empty(), "{}", b.show());
    assert!(
        b.lines("workload: ")
            .contains(&"workload: hello from 0 in sh"),
        "{}",
        b.show()
    );
    assert_eq!(b.result().unwrap()["exit_code"], 5);
    // Neither the password nor the Basic token is on the console.
    assert!(!b.has(&password), "the password leaked to the console");
    assert!(!b.has(&basic), "the credentials leaked to the console");
    assert!(b.has("kept in memory as the registry-auth"), "{}", b.show());
    // Nor in a file on the workload's secrets tmpfs.
    assert!(
        !b.has("written to /run/secrets/registry-auth"),
        "{}",
        b.show()
    );

    // Without the secret (and without a KBS): the registry's 401 is refused, by name.
    let b = boot_with(&initdata(&workload_tls(image, "")), &[(5000, reg.port)]);
    let error = assert_refused(&b, &["credentials"]);
    assert!(!error.contains(&password));
}

/// An uncompressed tar made by Python's tarfile (which writes whatever it is told): entries
/// are (name, kind, link target or content).
fn hostile_tar(path: &Path, entries: &[(&str, &str, &str)]) {
    let script = r#"
import io, json, sys, tarfile
with tarfile.open(sys.argv[1], "w", format=tarfile.GNU_FORMAT) as t:
    for name, kind, data in json.loads(sys.argv[2]):
        i = tarfile.TarInfo(name)
        i.mode = 0o755 if kind == "dir" else 0o644
        if kind == "symlink":
            i.type = tarfile.SYMTYPE
            i.linkname = data
            t.addfile(i)
        elif kind == "dir":
            i.type = tarfile.DIRTYPE
            t.addfile(i)
        else:
            b = data.encode()
            i.size = len(b)
            t.addfile(i, io.BytesIO(b))
"#;
    let entries = serde_json::to_string(entries).unwrap();
    run_ok(
        Command::new("python3")
            .args(["-c", script])
            .arg(path)
            .arg(entries),
    );
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn malicious_layers_are_refused() {
    if !tools_present("malicious_layers_are_refused", &TOOLS) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", tree.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", tree.join("bin/sh")).unwrap();
    let escape = tmp.path().join("escape.tar");
    hostile_tar(&escape, &[("../escape", "file", "out of the root\n")]);
    let symlink = tmp.path().join("symlink.tar");
    hostile_tar(
        &symlink,
        &[
            ("evil", "symlink", "/"),
            ("evil/etc/owned", "file", "through the link\n"),
        ],
    );
    let layout = tmp.path().join("layout");
    for (tag, extra) in [("escape", &escape), ("symlink", &symlink)] {
        run_ok(
            Command::new(cvm_testkit::cvmctl())
                .args(["image", "build"])
                .arg(&tree)
                .arg("-o")
                .arg(&layout)
                .args(["--tag", tag, "--cmd", r#"["/bin/sh","-c","echo ran"]"#])
                .args(["--label", "tee.launch_policy.log_redirect=Always"])
                .arg("--extra-layer")
                .arg(extra),
        );
    }
    let reg = start_registry(None);
    for (tag, path) in [("escape", "../escape"), ("symlink", "evil/etc/owned")] {
        push(
            &layout,
            tag,
            &format!("127.0.0.1:{}/cvm/bad:{tag}", reg.port),
            None,
            None,
        );
        let data = initdata(&workload(&format!("10.0.2.100:5000/cvm/bad:{tag}"), ""));
        let b = boot_with(&data, &[(5000, reg.port)]);
        assert_refused(&b, &[path]);
        assert!(!b.has("workload: ran"), "{}", b.show());
    }
}
