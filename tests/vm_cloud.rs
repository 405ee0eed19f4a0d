//! VM tests of init-data from the clouds' metadata services: the real static agent boots under
//! QEMU with the SMBIOS vendor a cloud sets and a user network (`168.0.0.0/7`) that holds the
//! real link-local addresses, where `guestfwd` puts the fake services of
//! `cvm_testkit::metadata` (169.254.169.254:80, Azure's WireServer 168.63.129.16:80) and the
//! dev KBS (169.254.0.100:8080). The agent's code path and addresses are the production ones.
//!
//! Per cloud: the init-data is fetched once, measured into PCR 8 (as `SHA256(0³² ‖
//! SHA256(init-data))`) and attested (the dev KBS checks the init-data binding and releases the
//! secret); Azure's userData is served empty first and the agent waits for it, and its
//! WireServer hears Ready once the workload runs; an IMDSv1-only AWS service, oversized and
//! malformed documents, and a launch.toml asking for a static network (the init-data came over
//! DHCP) stop the boot with one error line, after one read.

use cvm_testkit as common;

use common::kbs::*;
use common::metadata::{self, Aws, KBS_ADDR, Server};
use common::*;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

const GCP: &str = "Google";
const AZURE: &str = "Microsoft Corporation";
const AWS: &str = "Amazon EC2";

/// Init-data for the dev KBS at 169.254.0.100:8080 (TLS, its key pinned), one file secret, and
/// optionally the hello workload.
fn initdata(cloud: &str, workload: bool) -> Vec<u8> {
    let workload = if workload {
        "\n[workload]\nimage = \"oci:/usr/share/cvm-agent/images:hello\"\n"
    } else {
        ""
    };
    format!(
        "# vm_cloud: {cloud}\nversion = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[data]\n\"launch.toml\" = '''\n\
         [kbs]\nurl = \"https://{KBS_ADDR}:8080\"\npin = \"{}\"\ntimeout = 20\n\n\
         [[secrets]]\nname = \"demo-secret\"\nuri = \"kbs:///{SECRET_PATH}\"\n{workload}'''\n",
        tls_identity().pin
    )
    .into_bytes()
}

/// The dev KBS with the policy a correct boot of this build passes: tpm, production, this root
/// hash and image version, and `require_initdata` with this init-data's digest.
fn start_kbs_for(data: &[u8]) -> Kbs {
    start_kbs(&Setup {
        policy: strict_policy(data),
        tls: true,
        ..Default::default()
    })
}

/// A production boot of the verified root as a VM of `vendor`'s cloud.
fn boot_cloud(
    vendor: &str,
    initdata_arg: &str,
    metadata: &Server,
    wireserver: Option<&Server>,
    kbs: Option<&Kbs>,
) -> Boot {
    let (hash, mut extra) = verified_root();
    extra.extend(metadata::cloud_net_args(vendor, metadata, wireserver));
    if let Some(kbs) = kbs {
        extra.extend(["--guestfwd".into(), format!("{KBS_ADDR}:8080:{}", kbs.port)]);
        extra.extend(kbs.tpm_args());
    }
    boot(&format!("{hash} cvm.initdata={initdata_arg}"), &extra)
}

fn pcr8(data: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update([0u8; 32]);
    h.update(Sha256::digest(data));
    hex(&h.finalize())
}

/// The boot attested with the init-data the metadata service held: PCR 8 bound to it, the KBS
/// accepted, the secret written; the fetch's figures are printed.
fn assert_fetched_measured_attested(b: &Boot, kbs: &Kbs, data: &[u8], cloud: &str) {
    let log = kbs.log();
    assert_eq!(b.code, 0, "{}\n--- kbs ---\n{log}", b.show());
    assert!(
        b.has(&format!("PCR 8 sha256={}", pcr8(data))),
        "PCR 8 is not bound to the served init-data\n{}",
        b.show()
    );
    assert!(
        b.has(&format!("measure: init-data from {}", label(cloud))),
        "{}",
        b.show()
    );
    assert!(
        b.has(&format!(
            "attest: attested (tpm) to https://{KBS_ADDR}:8080"
        )),
        "{}",
        b.show()
    );
    assert!(log.contains("attest: accepted"), "{log}");
    assert!(b.has("written to /run/secrets/demo-secret"), "{}", b.show());
    let result = b.result().unwrap();
    for l in b.lines("cvm-agent: ") {
        if l.contains(&format!("{cloud} metadata: ")) || l.contains("network up for the") {
            eprintln!("figure: {l}");
        }
    }
    eprintln!(
        "figure: {cloud}: stages_ms measure {} network {} attest {}",
        result["stages_ms"]["measure"],
        result["stages_ms"]["network"],
        result["stages_ms"]["attest"]
    );
}

/// How the measure stage names an explicit cloud source (`{:?}`).
fn label(cloud: &str) -> &'static str {
    match cloud {
        "gcp" => "",
        "azure" => "Azure",
        _ => "Aws",
    }
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn gcp_auto_by_smbios_vendor_fetched_measured_attested() {
    let data = initdata("gcp", false);
    let fake = metadata::gcp(Some(data.clone()));
    let kbs = start_kbs_for(&data);
    let b = boot_cloud(GCP, "auto", &fake, None, Some(&kbs));
    assert_fetched_measured_attested(&b, &kbs, &data, "gcp");
    assert!(b.has("init-data from Auto:"), "{}", b.show());
    let path = "/computeMetadata/v1/instance/attributes/cvm-initdata";
    assert_eq!(fake.count("GET", path, 200), 1, "{:?}", fake.seen());
    assert!(
        fake.seen()
            .iter()
            .all(|(r, _)| r.header("Metadata-Flavor") == Some("Google")),
        "{:?}",
        fake.seen()
    );
    // The network came up for the metadata service and was not brought up twice.
    assert!(
        b.has("network: already up (for the metadata service)"),
        "{}",
        b.show()
    );
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn azure_user_data_empty_then_present_attested_and_ready_reported() {
    let data = initdata("azure", true);
    let fake = metadata::azure(metadata::Azure {
        user_data: base64::engine::general_purpose::STANDARD.encode(&data),
        empty_first: 2,
        ..Default::default()
    });
    let wire = metadata::wireserver();
    let kbs = start_kbs_for(&data);
    let b = boot_cloud(AZURE, "azure", &fake, Some(&wire), Some(&kbs));
    assert_fetched_measured_attested(&b, &kbs, &data, "azure");
    assert_eq!(
        fake.count("GET", metadata::AZURE_USER_DATA, 200),
        3,
        "two empty answers, then the document, then nothing: {:?}",
        fake.seen()
    );
    assert!(b.has("userData is empty"), "{}", b.show());
    // Ready, once the workload runs, for the goal state's identifiers.
    let reports = metadata::health_reports(&wire);
    assert_eq!(reports.len(), 1, "{:?}\n{}", wire.seen(), b.show());
    for needle in [
        format!("<ContainerId>{}</ContainerId>", metadata::CONTAINER_ID),
        format!("<InstanceId>{}</InstanceId>", metadata::INSTANCE_ID),
        format!(
            "<GoalStateIncarnation>{}</GoalStateIncarnation>",
            metadata::INCARNATION
        ),
        "<State>Ready</State>".into(),
    ] {
        assert!(reports[0].contains(&needle), "{needle}\n{}", reports[0]);
    }
    let ready = b
        .lines("cvm-agent: ")
        .into_iter()
        .position(|l| l.contains("reported Ready to the Azure WireServer"));
    let started = b
        .lines("cvm-agent: ")
        .into_iter()
        .position(|l| l.contains("workload: started pid"));
    assert!(
        matches!((started, ready), (Some(s), Some(r)) if s < r),
        "Ready must follow the workload's start\n{}",
        b.show()
    );
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn aws_imdsv2_user_data_fetched_measured_attested() {
    let data = initdata("aws", false);
    let fake = Aws::imdsv2(Some(data.clone()));
    let kbs = start_kbs_for(&data);
    let b = boot_cloud(AWS, "aws", &fake, None, Some(&kbs));
    assert_fetched_measured_attested(&b, &kbs, &data, "aws");
    assert_eq!(fake.count("GET", "/latest/user-data", 200), 1);
    assert_eq!(fake.count("PUT", "/latest/api/token", 200), 1);
}

/// One boot that must stop in the measure stage: the error line holds `needles`, the VM powers
/// off, no result line.
fn assert_refused(b: &Boot, needles: &[&str]) {
    b.assert_one_error("cvm-agent: error: measure: ");
    let error = b.errors()[0];
    for n in needles {
        assert!(
            error.contains(n),
            "error lacks {n:?}: {error}\n{}",
            b.show()
        );
    }
    eprintln!("refused: {error}");
    assert!(!b.has("] attest: "), "{}", b.show());
    assert!(b.powered_off(), "{}", b.show());
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn aws_imdsv1_only_is_refused_before_any_user_data_read() {
    let fake = Aws::imdsv1_only(Some(initdata("aws v1", false)));
    let b = boot_cloud(AWS, "aws", &fake, None, None);
    assert_refused(
        &b,
        &[
            "init-data from the aws metadata service",
            "no IMDSv2 session token (HTTP 403",
            "IMDSv1 is never used",
        ],
    );
    let seen = fake.seen();
    assert!(
        seen.iter().all(|(r, _)| r.path() != "/latest/user-data"),
        "the user data was asked for: {seen:?}"
    );
    assert_eq!(seen.len(), 1, "{seen:?}");
}

/// Three hostile documents, one per cloud, booted side by side: each is read once and stops
/// the boot with its own error. A fourth, well-formed, asks for a static network after the
/// agent used DHCP to fetch it: refused before anything is measured.
#[test]
#[ignore = "boots a VM: run through `make test`"]
fn oversized_and_malformed_documents_are_refused_after_one_read() {
    let oversized = metadata::gcp(Some(vec![b'#'; 256 * 1024 + 1]));
    let bad_base64 = metadata::azure(metadata::Azure {
        user_data: "dmVyc2lvbiA9ICIwLjEuMCIK\n".into(),
        ..Default::default()
    });
    let bad_toml = Aws::imdsv2(Some(b"version = \"0.1.0\"\nalgorithm = sha256\n".to_vec()));
    let static_net = metadata::gcp(Some(
        b"version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"launch.toml\" = '''\n\
          [network]\nmode = \"static\"\naddress = \"10.0.2.15/24\"\ngateway = \"10.0.2.2\"\n'''\n"
            .to_vec(),
    ));
    let (a, b, c, d) = std::thread::scope(|s| {
        let a = s.spawn(|| boot_cloud(GCP, "gcp", &oversized, None, None));
        let b = s.spawn(|| boot_cloud(AZURE, "auto", &bad_base64, None, None));
        let c = s.spawn(|| boot_cloud(AWS, "aws", &bad_toml, None, None));
        let d = s.spawn(|| boot_cloud(GCP, "auto", &static_net, None, None));
        (
            a.join().unwrap(),
            b.join().unwrap(),
            c.join().unwrap(),
            d.join().unwrap(),
        )
    });
    assert_refused(&a, &["gcp metadata service", "larger than 262144 bytes"]);
    assert_eq!(oversized.seen().len(), 1, "{:?}", oversized.seen());
    assert_refused(&b, &["azure metadata service", "userData is not base64"]);
    assert_eq!(bad_base64.count("GET", metadata::AZURE_USER_DATA, 200), 1);
    assert_refused(&c, &["init-data is not valid", "line 2"]);
    assert_eq!(bad_toml.count("GET", "/latest/user-data", 200), 1);
    assert_refused(&d, &["[network] mode = \"static\"", "only DHCP applies"]);
    assert_eq!(static_net.seen().len(), 1, "{:?}", static_net.seen());
    // The tpm stage shows PCR 8 still zero; nothing extends it before the refusal.
    let zero = format!("PCR 8 sha256={}", "0".repeat(64));
    assert!(
        d.console
            .lines()
            .all(|l| !l.contains("PCR 8 sha256=") || l.contains(&zero)),
        "PCR 8 measured before the refusal\n{}",
        d.show()
    );
}
