//! The mkosi images (`make image`: mkosi.conf, mkosi.profiles/, systemd/repart.d) booted as a
//! cloud boots them: OVMF and swtpm, the UKI from the image's ESP, the verity root from the same
//! disk. The production image attests to a dev KBS that pins what `make image` predicted for
//! it (PCRs 4, 9, 11, 12 of its UKI, the agent's PCRs 8 and 15 with this init-data), gets the
//! state key and runs the demo workload to its result line. The debug image carries
//! `cvm.mode=debug` in its measured command line: the production policy refuses it, and it
//! stays up with a shell on the console.

use std::path::{Path, PathBuf};
use std::process::Command;

use cvm_testkit::kbs::{SECRET_PATH, Setup, hex, kbs_section, start_kbs};
use cvm_testkit::{Boot, boot, boot_debug_until, cvmctl, input, run_ok};
use sha2::{Digest as _, Sha256};

const STATE_KEY_PATH: &str = "default/demo/state-key";
const CHECK_PATH: &str = "default/demo/check";

/// One of `make image`'s outputs, by profile.
struct Image {
    raw: PathBuf,
    efi: PathBuf,
    osrel: PathBuf,
    roothash: String,
}

fn image(profile: &str) -> Image {
    let dir = input("CVM_IMAGE_DIR", "out/image");
    let base = |ext: &str| dir.join(format!("cvm-agent-{profile}.{ext}"));
    let roothash = std::fs::read_to_string(base("roothash"))
        .unwrap_or_else(|e| panic!("{}: {e} (run `make image`)", base("roothash").display()))
        .trim()
        .to_string();
    Image {
        raw: base("raw"),
        efi: base("efi"),
        osrel: base("osrel"),
        roothash,
    }
}

/// "IMAGE_ID IMAGE_VERSION" of the image's os-release, as the agent measures it.
fn image_version(osrel: &Path) -> String {
    let text = std::fs::read_to_string(osrel).unwrap();
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_else(|| panic!("no {k} in {}", osrel.display()))
    };
    format!("{} {}", get("IMAGE_ID"), get("IMAGE_VERSION"))
}

/// The demo's launch configuration: the KBS, a secret, the state key and disk, the workload
/// from the OCI layout in the image's verified root.
fn initdata() -> Vec<u8> {
    format!(
        "# vm_image\nversion = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[data]\n\"launch.toml\" = '''\n\
         {}timeout = 30\n\n\
         [[secrets]]\nname = \"demo-secret\"\nuri = \"kbs:///{SECRET_PATH}\"\n\n\
         [[secrets]]\nname = \"demo-check\"\nuri = \"kbs:///{CHECK_PATH}\"\n\n\
         [[secrets]]\nname = \"state-key\"\nuri = \"kbs:///{STATE_KEY_PATH}\"\nuse = \"state-key\"\n\n\
         [state]\ndevice = \"serial:cvm-disk1\"\nmount = \"/var/lib/demo\"\n\n\
         [workload]\nimage = \"oci:/usr/share/cvm-agent/images:demo\"\nlog_redirect = true\n'''\n",
        kbs_section()
    )
    .into_bytes()
}

/// The KBS of a production deployment of `img`: everything pinned, debug refused, the
/// reference predicted from the image's UKI as the firmware boots it from the disk.
fn production_kbs(img: &Image, mode: &str, data: &[u8], work: &Path) -> cvm_testkit::kbs::Kbs {
    let file = work.join("reference-initdata.toml");
    std::fs::write(&file, data).unwrap();
    let reference = run_ok(
        Command::new(cvmctl())
            .arg("measure")
            .arg("--initdata")
            .arg(&file)
            .args(["--roothash", &img.roothash])
            .arg("--os-release")
            .arg(&img.osrel)
            .arg("--uki")
            .arg(&img.efi)
            .args(["--boot-path", "disk"])
            .args(["--mode", mode]),
    );
    let text = String::from_utf8(reference.clone()).unwrap();
    for pcr in ["\"4\"", "\"9\"", "\"11\"", "\"12\""] {
        assert!(text.contains(pcr), "reference lacks PCR {pcr}: {text}");
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).unwrap();
    let mut check = [0u8; 32];
    getrandom::fill(&mut check).unwrap();
    start_kbs(&Setup {
        policy: format!(
            "tee = [\"tpm\"]\nallow_debug = false\nroothash = \"{}\"\nimage_version = \"{}\"\n\
             initdata_digest = \"{}\"\nrequire_initdata = true\nreference = \"reference.json\"\n",
            img.roothash,
            image_version(&img.osrel),
            hex(&Sha256::digest(data))
        ),
        reference_json: Some(reference),
        resources: vec![
            (STATE_KEY_PATH.into(), key.to_vec()),
            (CHECK_PATH.into(), check.to_vec()),
        ],
        tls: true,
        ..Default::default()
    })
}

/// boot.sh arguments: the image as the boot disk, a blank state disk, the init-data by fw_cfg,
/// the KBS behind guestfwd, the vTPM the KBS trusts.
fn boot_args(img: &Image, kbs: &cvm_testkit::kbs::Kbs, data: &[u8], work: &Path) -> Vec<String> {
    let file = work.join("initdata.toml");
    std::fs::write(&file, data).unwrap();
    let state = work.join("state.img");
    std::fs::File::create(&state)
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    let mut extra = vec![
        "--boot-disk".into(),
        img.raw.display().to_string(),
        "--disk".into(),
        state.display().to_string(),
        "--fw-cfg".into(),
        format!("opt/cvm/initdata={}", file.display()),
        "--guestfwd".into(),
        format!("8080:{}", kbs.port),
    ];
    extra.extend(kbs.tpm_args());
    extra
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn the_mkosi_production_image_attests_opens_its_state_disk_and_runs_the_demo() {
    let img = image("production");
    let work = tempfile::tempdir().unwrap();
    let data = initdata();
    let kbs = production_kbs(&img, "production", &data, work.path());
    let b: Boot = boot("", &boot_args(&img, &kbs, &data, work.path()));
    let show = || format!("{}\n--- KBS ---\n{}", b.show(), kbs.log());
    assert!(b.errors().is_empty(), "{}", show());
    assert!(
        b.has(&format!(
            "cmdline: mode=production roothash={}",
            img.roothash
        )),
        "{}",
        show()
    );
    assert!(
        b.has("tpm: booted a UKI through the systemd stub"),
        "{}",
        show()
    );
    assert!(kbs.log().contains("attest: accepted tee=tpm"), "{}", show());
    assert!(b.has("formatted now"), "{}", show());
    // The workload got the secret the KBS holds: it shows SHA-256(check key || secret).
    let check = std::fs::read(kbs.dir.path().join("resources").join(CHECK_PATH)).unwrap();
    let expected = hex(&Sha256::digest([check, kbs.secret()].concat()));
    assert!(
        b.has(&format!("bytes, check {expected}")),
        "want check {expected}\n{}",
        show()
    );
    assert!(b.has("workload: demo: boot-count=1"), "{}", show());
    let result = b
        .result()
        .unwrap_or_else(|| panic!("no result line\n{}", show()));
    assert_eq!(result["exit_code"], 0, "{}", show());
    assert_eq!(result["mode"], "production", "{}", show());
    assert!(b.powered_off(), "{}", show());
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn the_mkosi_debug_image_is_refused_by_the_production_policy_and_stays_up_with_a_shell() {
    let img = image("debug");
    let work = tempfile::tempdir().unwrap();
    let data = initdata();
    // Everything the debug image really is, pinned (its reference predicts its debug mode):
    // only allow_debug = false makes the policy refuse it.
    let kbs = production_kbs(&img, "debug", &data, work.path());
    let (seen, b) = boot_debug_until(
        "",
        &boot_args(&img, &kbs, &data, work.path()),
        "cvm-agent: error: attest: ",
    );
    let show = || format!("{}\n--- KBS ---\n{}", b.show(), kbs.log());
    assert!(seen, "{}", show());
    assert!(
        b.has(&format!("cmdline: mode=debug roothash={}", img.roothash)),
        "{}",
        show()
    );
    b.assert_one_error("cvm-agent: error: attest: ");
    assert!(
        b.errors()[0].contains("policy forbids debug mode"),
        "{}",
        show()
    );
    assert!(!b.has("written to /run/secrets"), "{}", show());
    // The debug image stays up with the root shell of its verified root (busybox and Debian's
    // tools), which the test then uses to power it off.
    assert!(b.has("debug shell on the console"), "{}", show());
    assert!(b.has("reboot: Power down"), "{}", show());
}
