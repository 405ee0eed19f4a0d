use super::launch::CleartextError;
use super::*;
use crate::InitDataSource;
use sha2::{Digest, Sha256, Sha384, Sha512};
use std::net::IpAddr;

fn doc(algorithm: &str, data: &str) -> String {
    format!("version = \"0.1.0\"\nalgorithm = \"{algorithm}\"\n\n[data]\n{data}")
}

const LAUNCH: &str = r#"
[kbs]
url = "https://kbs.example:8080"
cert = """
-----BEGIN CERTIFICATE-----
MIIB
-----END CERTIFICATE-----
"""
pin = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

[workload]
image = "registry.example/app@sha256:0123"
args = ["--port", "8080"]
env = { LOG = "info", _X1 = "" }
restart = "OnFailure"

[[secrets]]
name = "db-password"
uri = "kbs:///default/db/password"

[[secrets]]
name = "tls.key"
uri = "kbs:///default/tls/key"
path = "/run/secrets/tls/key"

[[secrets]]
name = "disk"
uri = "kbs:///default/state/key"
use = "state-key"

[[secrets]]
name = "pull"
uri = "kbs:///default/registry/auth"
use = "registry-auth"

[state]
device = "type:4D21B016-B534-45C2-A9FB-5C16E091FD2D"
mount = "/var/lib/app"
integrity = true

[network]
mode = "static"
address = "10.0.2.15/24"
gateway = "10.0.2.2"
dns = ["10.0.2.3", "::1"]
"#;

fn with_launch(launch: &str) -> String {
    doc(
        "sha256",
        &format!("\"launch.toml\" = '''{launch}'''\n\"policy.rego\" = \"package agent_policy\"\n"),
    )
}

#[test]
fn parses_each_algorithm_and_digests_the_raw_bytes() {
    for (name, expected) in [
        ("sha256", Sha256::digest(b"").to_vec()),
        ("sha384", Sha384::digest(b"").to_vec()),
        ("sha512", Sha512::digest(b"").to_vec()),
    ] {
        let text = doc(name, "\"aa.toml\" = \"x\"\n");
        let init = InitData::parse(text.as_bytes()).unwrap();
        assert_eq!(init.algorithm().name(), name);
        assert_eq!(init.raw(), text.as_bytes());
        let want = match name {
            "sha256" => Sha256::digest(text.as_bytes()).to_vec(),
            "sha384" => Sha384::digest(text.as_bytes()).to_vec(),
            _ => Sha512::digest(text.as_bytes()).to_vec(),
        };
        assert_eq!(init.digest(), want);
        assert_eq!(init.digest().len(), expected.len());
        assert_eq!(init.document("aa.toml"), Some("x"));
    }
}

#[test]
fn digest_depends_on_the_exact_bytes() {
    // Same semantics, different bytes: a different digest, as Trustee computes it.
    let a = doc("sha256", "k = \"v\"\n");
    let b = doc("sha256", "k = 'v'\n");
    let (a, b) = (
        InitData::parse(a.as_bytes()).unwrap(),
        InitData::parse(b.as_bytes()).unwrap(),
    );
    assert_eq!(a.documents(), b.documents());
    assert_ne!(a.digest(), b.digest());
}

#[test]
fn trustee_documentation_example_parses() {
    let text = r#"algorithm = "sha384"
version = "0.1.0"
# digest = "e4744fddbb00dd4201326d16ee5a647debf86562a77f1aca176d23017c1cf88821af5c05c03b1ac9b46afa93b9a1d368"

[data]
"attestation-agent.json" = '''
{
"kbs_addr": "http://172.18.0.1:8080"
}
'''

"policy.rego" = '''
package agent_policy

default CopyFileRequest := false
default WriteStreamRequest := false'''
"#;
    let init = InitData::parse(text.as_bytes()).unwrap();
    assert_eq!(init.documents().len(), 2);
    assert!(init.launch().unwrap().is_none());
}

#[test]
fn binding_values_follow_trustee_and_kata() {
    let text = doc("sha256", "");
    let init = InitData::parse(text.as_bytes()).unwrap();
    let d = Sha256::digest(text.as_bytes());
    assert_eq!(init.host_data()[..], d[..]);
    assert_eq!(init.mrconfigid()[..32], d[..]);
    assert_eq!(init.mrconfigid()[32..], [0u8; 16]);
    assert_eq!(init.sha256_of_raw()[..], d[..]);
    let mut pre = vec![0u8; 32];
    pre.extend_from_slice(&d);
    assert_eq!(init.pcr8_expected()[..], Sha256::digest(&pre)[..]);
    init.check_tpm_binding().unwrap();

    let text = doc("sha384", "");
    let init = InitData::parse(text.as_bytes()).unwrap();
    let d = Sha384::digest(text.as_bytes());
    assert_eq!(init.host_data()[..], d[..32]);
    assert_eq!(init.mrconfigid()[..], d[..]);
    assert!(matches!(
        init.check_tpm_binding(),
        Err(InitDataError::TpmNeedsSha256("sha384"))
    ));
    // PCR 8 is still the SHA-256 of the raw bytes, whatever the algorithm.
    let mut pre = vec![0u8; 32];
    pre.extend_from_slice(&Sha256::digest(text.as_bytes()));
    assert_eq!(init.pcr8_expected()[..], Sha256::digest(&pre)[..]);

    let text = doc("sha512", "");
    let init = InitData::parse(text.as_bytes()).unwrap();
    let d = Sha512::digest(text.as_bytes());
    assert_eq!(init.host_data()[..], d[..32]);
    assert_eq!(init.mrconfigid()[..], d[..48]);
}

#[test]
fn refuses_what_is_not_init_data_0_1_0() {
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "empty"),
        (
            "version = \"0.1.0\"\nalgorithm = \"sha256\"\n".into(),
            "missing data",
        ),
        (doc("sha256", "").replace("0.1.0", "0.2.0"), "version"),
        (doc("sha1", ""), "algorithm"),
        (doc("SHA256", ""), "algorithm"),
        (doc("sha-256", ""), "algorithm"),
        (format!("extra = 1\n{}", doc("sha256", "")), "unknown key"),
        (doc("sha256", "x = 1\n"), "non-string document"),
        (doc("sha256", "[data.x]\ny = \"z\"\n"), "table document"),
        (doc("sha256", "\"../x\" = \"v\"\n"), "document name"),
        (doc("sha256", "\"a/b\" = \"v\"\n"), "document name"),
        (doc("sha256", "\"\" = \"v\"\n"), "document name"),
        (doc("sha256", "\"..\" = \"v\"\n"), "document name"),
        (doc("sha256", "a = \"1\"\na = \"2\"\n"), "duplicate key"),
        (
            "version = 0.1\nalgorithm = \"sha256\"\n[data]\n".into(),
            "version type",
        ),
        ("not toml at all {".into(), "syntax"),
    ];
    for (text, why) in cases {
        assert!(InitData::parse(text.as_bytes()).is_err(), "{why}: {text:?}");
    }
    assert!(matches!(
        InitData::parse(&[0xff, 0xfe]),
        Err(InitDataError::NotUtf8)
    ));
    let many: String = (0..=MAX_DOCUMENTS)
        .map(|i| format!("d{i} = \"\"\n"))
        .collect();
    assert!(matches!(
        InitData::parse(doc("sha256", &many).as_bytes()),
        Err(InitDataError::TooManyDocuments(_))
    ));
    let big = doc(
        "sha256",
        &format!("x = \"{}\"\n", "a".repeat(MAX_INITDATA_LEN)),
    );
    assert!(matches!(
        InitData::parse(big.as_bytes()),
        Err(InitDataError::TooLarge)
    ));
}

#[test]
fn syntax_errors_are_one_line_with_a_position() {
    let err = InitData::parse(b"version = \"0.1.0\"\nalgorithm = \n").unwrap_err();
    let text = err.to_string();
    assert!(!text.contains('\n'), "{text}");
    assert!(text.contains("line 2"), "{text}");
}

/// A hostile key name reaches the message (serde names unknown keys): control characters come
/// out escaped, so no forged console line or terminal escape, and long values are cut.
#[test]
fn hostile_names_in_errors_are_escaped_and_cut() {
    let doc =
        "version = \"0.1.0\"\nalgorithm = \"sha256\"\n\"\\u001b[2J\\rFAKE: ok\" = 1\n[data]\n";
    let text = InitData::parse(doc.as_bytes()).unwrap_err().to_string();
    assert!(!text.contains('\u{1b}') && !text.contains('\r'), "{text:?}");
    assert!(text.contains("\\u{1b}[2J\\rFAKE: ok"), "{text:?}");
    let long = format!(
        "version = \"{}\"\nalgorithm = \"sha256\"\n[data]\n",
        "9".repeat(100_000)
    );
    let text = InitData::parse(long.as_bytes()).unwrap_err().to_string();
    assert!(text.len() < 400, "{}", text.len());
}

#[test]
fn deep_nesting_does_not_overflow_the_stack() {
    for open in ["[", "{a="] {
        let text = format!("x = {}", open.repeat(100_000));
        assert!(InitData::parse(text.as_bytes()).is_err());
    }
}

#[test]
fn launch_toml_parses_into_typed_values() {
    let init = InitData::parse(with_launch(LAUNCH).as_bytes()).unwrap();
    let launch = init.launch().unwrap().unwrap();
    let kbs = launch.kbs.as_ref().unwrap();
    assert_eq!(kbs.url, "https://kbs.example:8080");
    assert!(kbs.cert.as_ref().unwrap().contains("BEGIN CERTIFICATE"));
    assert_eq!(kbs.pin.unwrap()[0..2], [0x00, 0x11]);
    assert!(!kbs.insecure_http);
    let workload = launch.workload.as_ref().unwrap();
    assert_eq!(workload.args.as_deref().unwrap(), ["--port", "8080"]);
    assert_eq!(workload.env["LOG"], "info");
    assert_eq!(workload.restart, RestartPolicy::OnFailure);
    assert_eq!(launch.secrets.len(), 4);
    assert_eq!(
        launch.secrets[0].target,
        SecretTarget::File("/run/secrets/db-password".into())
    );
    assert_eq!(
        launch.secrets[0].uri.to_string(),
        "kbs:///default/db/password"
    );
    assert_eq!(launch.secrets[1].uri.path(), "default/tls/key");
    assert_eq!(launch.secret_for(SecretUse::StateKey).unwrap().name, "disk");
    let state = launch.state.as_ref().unwrap();
    assert_eq!(
        state.device,
        Some(StateDevice::Type(
            "4d21b016-b534-45c2-a9fb-5c16e091fd2d".into()
        ))
    );
    assert!(state.integrity);
    let network = launch.network.as_ref().unwrap();
    assert_eq!(network.mode, NetworkMode::Static);
    assert_eq!(
        network.address,
        Some(("10.0.2.15".parse::<IpAddr>().unwrap(), 24))
    );
    assert_eq!(network.dns.len(), 2);
    // Other documents stay available, uninterpreted.
    assert_eq!(init.document("policy.rego"), Some("package agent_policy"));
}

#[test]
fn launch_sections_are_optional() {
    assert_eq!(LaunchConfig::parse("").unwrap(), LaunchConfig::default());
    let l = LaunchConfig::parse("[workload]\nimage = \"busybox\"\n").unwrap();
    let w = l.workload.unwrap();
    assert_eq!(w.restart, RestartPolicy::Never);
    assert!(w.args.is_none() && w.env.is_empty());
    assert_eq!(w.log_redirect, None);
    assert!(w.capabilities.is_empty() && w.memory_mib.is_none());
    assert!(!w.registry.insecure_http);
    assert_eq!(w.registry.timeout.as_secs(), 600);
    let l = LaunchConfig::parse(
        "[workload]\nimage = \"10.0.2.100:5000/app:1\"\nlog_redirect = false\nmemory_mib = 256\ncapabilities = [\"CAP_NET_ADMIN\"]\n[workload.registry]\ninsecure_http = true\ntimeout = 30\n",
    )
    .unwrap();
    let w = l.workload.unwrap();
    assert_eq!(w.log_redirect, Some(false));
    assert_eq!(w.memory_mib, Some(256));
    assert_eq!(w.capabilities, ["CAP_NET_ADMIN"]);
    assert!(w.registry.insecure_http);
    assert_eq!(w.registry.timeout.as_secs(), 30);
    let l = LaunchConfig::parse(
        "[kbs]\nurl = \"http://10.0.2.2:8080\"\ninsecure_http = true\n[network]\nmode = \"dhcp\"\n",
    )
    .unwrap();
    assert!(l.kbs.unwrap().insecure_http);
    let l = LaunchConfig::parse("[kbs]\nurl = \"https://[::1]:8443/kbs\"\n").unwrap();
    assert_eq!(l.kbs.unwrap().url, "https://[::1]:8443/kbs");
}

#[test]
fn launch_toml_refuses_bad_values() {
    let kbs = "[kbs]\nurl = \"https://kbs\"\n";
    let state_ok = "[state]\nmount = \"/var/lib/x\"\n[[secrets]]\nname = \"k\"\nuri = \"kbs:///a/b/c\"\nuse = \"state-key\"\n";
    let cases: Vec<(String, &str)> = vec![
        ("[kbs]\nurl = \"http://kbs\"\n".into(), "http without insecure_http"),
        ("[kbs]\nurl = \"ftp://kbs\"\n".into(), "scheme"),
        ("[kbs]\nurl = \"https://\"\n".into(), "empty host"),
        ("[kbs]\nurl = \"https://u:p@kbs\"\n".into(), "userinfo"),
        ("[kbs]\nurl = \"https://kbs:0\"\n".into(), "port 0"),
        ("[kbs]\nurl = \"https://kbs:65536\"\n".into(), "port range"),
        ("[kbs]\nurl = \"https://kbs:+80\"\n".into(), "port sign"),
        ("[kbs]\nurl = \"https://kbs/?a=b\"\n".into(), "query"),
        ("[kbs]\nurl = \"https://kb s\"\n".into(), "whitespace"),
        ("[kbs]\nurl = \"https://[::1\"\n".into(), "ipv6"),
        ("[kbs]\nurl = \"https://kbs\"\npin = \"abcd\"\n".into(), "pin length"),
        ("[kbs]\nurl = \"https://kbs\"\ncert = \"hello\"\n".into(), "cert"),
        (
            "[kbs]\nurl = \"http://kbs\"\ninsecure_http = true\npin = \"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"\n"
                .into(),
            "pin over http",
        ),
        ("[kbs]\nurl = \"https://kbs\"\ntimeouts = 3\n".into(), "unknown kbs key"),
        ("[kbs]\nurl = \"https://kbs\"\ntimeout = 0\n".into(), "zero timeout"),
        ("[kbs]\nurl = \"https://kbs\"\ntee_key = \"A128KW\"\n".into(), "tee key alg"),
        ("[kbs]\nurl = \"https://kbs\"\ntimeout = 3601\n".into(), "huge timeout"),
        ("[kbs]\nurl = \"https://kbs\"\ntimeout = -1\n".into(), "negative timeout"),
        ("[kbz]\n".into(), "unknown section"),
        ("[workload]\nimage = \"\"\n".into(), "empty image"),
        ("[workload]\nimage = \"a b\"\n".into(), "image whitespace"),
        ("[workload]\nimage = \"a\"\nrestart = \"never\"\n".into(), "restart case"),
        ("[workload]\nimage = \"a\"\nenv = { \"1X\" = \"v\" }\n".into(), "env name"),
        ("[workload]\nimage = \"a\"\nenv = { \"A=B\" = \"v\" }\n".into(), "env name ="),
        ("[workload]\nimage = \"a\"\nargs = [\"a\\u0000b\"]\n".into(), "NUL arg"),
        ("[workload]\nimage = \"a\"\nargs = [1]\n".into(), "arg type"),
        ("[workload]\nimage = \"a\"\nmemory_mib = 1\n".into(), "tiny memory"),
        ("[workload]\nimage = \"a\"\ncapabilities = [\"NET_ADMIN\"]\n".into(), "cap prefix"),
        ("[workload]\nimage = \"a\"\ncapabilities = [\"CAP_net\"]\n".into(), "cap case"),
        ("[workload]\nimage = \"a\"\nlog_redirect = \"yes\"\n".into(), "log_redirect type"),
        ("[workload]\nimage = \"a\"\n[workload.registry]\ntimeout = 0\n".into(), "pull timeout"),
        ("[workload]\nimage = \"a\"\n[workload.registry]\ninsecure_http = true\npin = \"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"\n".into(), "pin over http"),
        ("[workload]\nimage = \"a\"\n[workload.registry]\ncert = \"x\"\n".into(), "registry cert"),
        ("[workload]\nimage = \"a\"\n[workload.registry]\nhttp = true\n".into(), "registry unknown key"),
        ("[[secrets]]\nname = \"a\"\nuri = \"kbs:///a/b/c\"\n".into(), "secrets without kbs"),
        (format!("{kbs}[[secrets]]\nname = \"a/b\"\nuri = \"kbs:///a/b/c\"\n"), "secret name"),
        (format!("{kbs}[[secrets]]\nname = \"a\"\nuri = \"kbs://host/a/b/c\"\n"), "uri authority"),
        (format!("{kbs}[[secrets]]\nname = \"a\"\nuri = \"kbs:///a/b\"\n"), "uri parts"),
        (format!("{kbs}[[secrets]]\nname = \"a\"\nuri = \"kbs:///a/../c\"\n"), "uri dotdot"),
        (
            format!("{kbs}[[secrets]]\nname = \"a\"\nuri = \"kbs:///a/b/c\"\npath = \"/etc/passwd\"\n"),
            "path outside /run/secrets",
        ),
        (
            format!("{kbs}[[secrets]]\nname = \"a\"\nuri = \"kbs:///a/b/c\"\npath = \"/run/secrets/../x\"\n"),
            "path dotdot",
        ),
        (
            format!("{kbs}[[secrets]]\nname = \"a\"\nuri = \"kbs:///a/b/c\"\npath = \"/run/secrets\"\n"),
            "path is the directory",
        ),
        (
            format!("{kbs}[[secrets]]\nname = \"a\"\nuri = \"kbs:///a/b/c\"\npath = \"/run/secretsx/a\"\n"),
            "path prefix trick",
        ),
        (
            format!("{kbs}[[secrets]]\nname = \"a\"\nuri = \"kbs:///a/b/c\"\npath = \"/run/secrets/x\"\nuse = \"state-key\"\n"),
            "path and use",
        ),
        (
            format!("{kbs}[[secrets]]\nname = \"a\"\nuri = \"kbs:///a/b/c\"\n[[secrets]]\nname = \"a\"\nuri = \"kbs:///a/b/d\"\n"),
            "duplicate name",
        ),
        (
            format!("{kbs}[[secrets]]\nname = \"a\"\nuri = \"kbs:///a/b/c\"\n[[secrets]]\nname = \"b\"\nuri = \"kbs:///a/b/d\"\npath = \"/run/secrets/a/x\"\n"),
            "file and directory",
        ),
        (
            format!("{kbs}[[secrets]]\nname = \"a\"\nuri = \"kbs:///a/b/c\"\nuse = \"other\"\n"),
            "unknown use",
        ),
        (
            format!("{kbs}[[secrets]]\nname = \"a\"\nuri = \"kbs:///a/b/c\"\nuse = \"registry-auth\"\n"),
            "registry-auth without workload",
        ),
        (format!("{kbs}[[secrets]]\nname = \"a\"\nuri = \"kbs:///a/b/c\"\nuse = \"state-key\"\n"), "state-key without state"),
        ("[state]\nmount = \"/var/lib/x\"\n".into(), "state without key"),
        (format!("{kbs}{}", state_ok.replace("/var/lib/x", "var")), "relative mount"),
        (format!("{kbs}{}", state_ok.replace("/var/lib/x", "/")), "mount /"),
        (format!("{kbs}{}", state_ok.replace("/var/lib/x", "/var//x")), "mount //"),
        (format!("{kbs}{}", state_ok.replace("/var/lib/x", "/var/")), "mount trailing /"),
        (
            format!("{kbs}{}", state_ok.replace("[state]\n", "[state]\ndevice = \"label:x\"\n")),
            "device kind",
        ),
        (
            format!("{kbs}{}", state_ok.replace("[state]\n", "[state]\ndevice = \"type:not-a-uuid\"\n")),
            "device uuid",
        ),
        (
            format!("{kbs}{}", state_ok.replace("[state]\n", &format!("[state]\ndevice = \"partlabel:{}\"\n", "a".repeat(37)))),
            "partlabel length",
        ),
        ("[network]\nmode = \"static\"\n".into(), "static without address"),
        ("[network]\nmode = \"static\"\naddress = \"10.0.0.1\"\n".into(), "address without prefix"),
        ("[network]\nmode = \"static\"\naddress = \"10.0.0.1/33\"\n".into(), "prefix range"),
        ("[network]\nmode = \"static\"\naddress = \"10.0.0.1/+3\"\n".into(), "prefix sign"),
        (
            "[network]\nmode = \"static\"\naddress = \"10.0.0.1/8\"\ngateway = \"::1\"\n".into(),
            "gateway family",
        ),
        ("[network]\nmode = \"dhcp\"\naddress = \"10.0.0.1/8\"\n".into(), "dhcp with address"),
        ("[network]\nmode = \"none\"\ndns = [\"1.1.1.1\"]\n".into(), "none with dns"),
        ("[network]\nmode = \"DHCP\"\n".into(), "mode case"),
        ("[network]\nmode = \"dhcp\"\ndns = [\"one\"]\n".into(), "dns"),
    ];
    for (text, why) in cases {
        let result = LaunchConfig::parse(&text);
        assert!(result.is_err(), "{why}: accepted {text:?}");
        let msg = result.unwrap_err().to_string();
        assert!(
            msg.starts_with("launch.toml: ") && !msg.contains('\n'),
            "{why}: {msg}"
        );
    }
}

#[test]
fn load_reads_each_source() {
    let root = tempfile::tempdir().unwrap();
    let text = doc("sha256", "");
    // auto with nothing: no init-data.
    assert_eq!(load(&InitDataSource::Auto, root.path()).unwrap(), None);
    // Explicit sources that are absent are errors.
    assert!(matches!(
        load(&InitDataSource::FwCfg, root.path()),
        Err(InitDataError::Io { .. })
    ));
    assert!(matches!(
        load(&InitDataSource::File("/etc/x.toml".into()), root.path()),
        Err(InitDataError::Io { .. })
    ));

    let image = root.path().join(IMAGE_PATH);
    std::fs::create_dir_all(image.parent().unwrap()).unwrap();
    std::fs::write(&image, "image").unwrap();
    assert_eq!(
        load(&InitDataSource::Auto, root.path()).unwrap().as_deref(),
        Some(&b"image"[..])
    );
    let fw_cfg = root.path().join(FW_CFG_PATH);
    std::fs::create_dir_all(fw_cfg.parent().unwrap()).unwrap();
    std::fs::write(&fw_cfg, &text).unwrap();
    // fw_cfg wins over the image's file.
    assert_eq!(
        load(&InitDataSource::Auto, root.path()).unwrap().as_deref(),
        Some(text.as_bytes())
    );
    assert_eq!(
        load(&InitDataSource::FwCfg, root.path())
            .unwrap()
            .as_deref(),
        Some(text.as_bytes())
    );
    assert_eq!(
        load(&InitDataSource::File(format!("/{IMAGE_PATH}")), root.path())
            .unwrap()
            .as_deref(),
        Some(&b"image"[..])
    );
}

#[test]
fn load_refuses_oversized_odd_and_unsupported_sources() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("big"), vec![b'a'; MAX_INITDATA_LEN + 1]).unwrap();
    assert!(matches!(
        load(&InitDataSource::File("/big".into()), root.path()),
        Err(InitDataError::TooLarge)
    ));
    std::fs::write(root.path().join("exact"), vec![b'a'; MAX_INITDATA_LEN]).unwrap();
    assert!(load(&InitDataSource::File("/exact".into()), root.path()).is_ok());
    std::fs::create_dir(root.path().join("dir")).unwrap();
    assert!(matches!(
        load(&InitDataSource::File("/dir".into()), root.path()),
        Err(InitDataError::NotAFile(_))
    ));
    for bad in ["relative", "/a/../big", "/", "/a//b"] {
        assert!(
            matches!(
                load(&InitDataSource::File(bad.into()), root.path()),
                Err(InitDataError::BadPath(_))
            ),
            "{bad}"
        );
    }
    let err = load(&InitDataSource::Disk, root.path()).unwrap_err();
    assert!(matches!(err, InitDataError::Unsupported("disk")));
    assert!(err.to_string().contains("not supported yet"));
    // The cloud sources are the agent's to fetch (cloud::plan), never read from a path.
    for (source, name) in [
        (InitDataSource::Gcp, "gcp"),
        (InitDataSource::Azure, "azure"),
        (InitDataSource::Aws, "aws"),
    ] {
        let err = load(&source, root.path()).unwrap_err();
        assert!(matches!(err, InitDataError::Remote(n) if n == name));
    }
}

#[test]
fn debug_output_is_short() {
    let init =
        InitData::parse(doc("sha256", &format!("x = \"{}\"\n", "a".repeat(10_000))).as_bytes())
            .unwrap();
    assert!(format!("{init:?}").len() < 300);
}

/// Each combination of KBS transport, registry transport, credentials and reference against
/// each mode: production refuses the KBS over http and credentials over http, and allows an
/// anonymous http pull (a warning for a tag); debug allows everything with a warning.
#[test]
fn cleartext_policy_per_mode() {
    use crate::Mode;
    const HTTPS_KBS: &str = "[kbs]\nurl = \"https://kbs.example\"\npin = \"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"\n";
    const HTTP_KBS: &str = "[kbs]\nurl = \"http://10.0.2.100:8080\"\ninsecure_http = true\n";
    const AUTH: &str = "[[secrets]]\nname = \"reg\"\nuri = \"kbs:///default/registry/auth\"\nuse = \"registry-auth\"\n";
    const PINNED: &str = "10.0.2.100:5000/app@sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const TAG: &str = "10.0.2.100:5000/app:1";
    let workload = |image: &str, http: bool| {
        format!("[workload]\nimage = \"{image}\"\n[workload.registry]\ninsecure_http = {http}\n")
    };
    let check = |launch: &str, mode: Mode| {
        LaunchConfig::parse(launch)
            .unwrap_or_else(|e| panic!("{launch}: {e}"))
            .check_for_mode(mode)
    };

    // The KBS over http: refused in production, naming the URL; the flag alone too.
    let e = check(HTTP_KBS, Mode::Production).unwrap_err();
    assert!(matches!(&e, CleartextError::KbsOverHttp { url } if url == "http://10.0.2.100:8080"));
    let text = e.to_string();
    for n in [
        "[kbs]",
        "http://10.0.2.100:8080",
        "production",
        "cvm.mode=debug",
    ] {
        assert!(text.contains(n), "{text}");
    }
    let flag_only = "[kbs]\nurl = \"https://kbs.example\"\ninsecure_http = true\n";
    assert!(check(flag_only, Mode::Production).is_err());
    let w = check(HTTP_KBS, Mode::Debug).unwrap();
    assert!(
        w.len() == 1 && w[0].contains("debug mode allows it") && w[0].contains("[kbs]"),
        "{w:?}"
    );
    assert_eq!(
        check(HTTPS_KBS, Mode::Production).unwrap(),
        Vec::<String>::new()
    );

    // Registry credentials over http: refused in production whatever the reference.
    for image in [PINNED, TAG] {
        let launch = format!("{HTTPS_KBS}{AUTH}{}", workload(image, true));
        let e = check(&launch, Mode::Production).unwrap_err();
        assert!(
            matches!(&e, CleartextError::RegistryCredentialsOverHttp { secret, .. } if secret == "reg"),
            "{e}"
        );
        assert!(e.to_string().contains("realm"), "{e}");
        let w = check(&launch, Mode::Debug).unwrap();
        assert!(
            w.iter()
                .any(|l| l.contains("debug mode allows it") && l.contains("registry-auth")),
            "{w:?}"
        );
        // Over https the same credentials are fine.
        let launch = format!("{HTTPS_KBS}{AUTH}{}", workload(image, false));
        assert_eq!(
            check(&launch, Mode::Production).unwrap(),
            Vec::<String>::new()
        );
    }
    // Both: the KBS is named first (it is the first conversation).
    let launch = format!("{HTTP_KBS}{AUTH}{}", workload(PINNED, true));
    assert!(matches!(
        check(&launch, Mode::Production),
        Err(CleartextError::KbsOverHttp { .. })
    ));
    assert_eq!(check(&launch, Mode::Debug).unwrap().len(), 2);

    // Anonymous over http: allowed in production; a tag gets a warning, a digest none.
    assert_eq!(
        check(&workload(PINNED, true), Mode::Production).unwrap(),
        Vec::<String>::new()
    );
    let w = check(&workload(TAG, true), Mode::Production).unwrap();
    assert!(w.len() == 1 && w[0].contains("pin a digest"), "{w:?}");
    // A layout image never touches the network: insecure_http means nothing there, even with
    // credentials configured.
    let launch = format!(
        "{HTTPS_KBS}{AUTH}{}",
        workload("oci:/usr/share/cvm-agent/images:demo", true)
    );
    assert_eq!(
        check(&launch, Mode::Production).unwrap(),
        Vec::<String>::new()
    );
    // Nothing at all: nothing to say.
    assert_eq!(check("", Mode::Production).unwrap(), Vec::<String>::new());
}

#[test]
fn cloud_state_devices_parse_strictly() {
    use super::launch::StateDevice as D;
    let good = [
        ("gcp:cvm-state", D::Gcp("cvm-state".into())),
        ("gcp:d", D::Gcp("d".into())),
        (
            "aws:vol-0123456789abcdef0",
            D::Aws("vol-0123456789abcdef0".into()),
        ),
        ("aws:vol-89abcdef", D::Aws("vol-89abcdef".into())),
        ("azure-lun:0", D::AzureLun(0)),
        ("azure-lun:63", D::AzureLun(63)),
    ];
    for (text, want) in good {
        let got = D::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(got, want);
        // Display gives back what was written, for the console line.
        assert_eq!(got.to_string(), text);
    }
    let long_ok = format!("gcp:a{}", "b".repeat(62));
    assert!(D::parse(&long_ok).is_ok());
    let bad = [
        ("gcp:", "GCP device name"),
        ("gcp:State", "GCP device name"),
        ("gcp:1disk", "GCP device name"),
        ("gcp:disk-", "GCP device name"),
        ("gcp:disk_1", "GCP device name"),
        ("gcp:disk/1", "GCP device name"),
        ("aws:vol0123456789abcdef0", "EBS volume id"),
        ("aws:vol-0123456789ABCDEF0", "EBS volume id"),
        ("aws:vol-0123456789abcdef", "EBS volume id"),
        ("aws:vol-0123456g", "EBS volume id"),
        ("azure-lun:64", "0 to 63"),
        ("azure-lun:-1", "0 to 63"),
        ("azure-lun:+1", "0 to 63"),
        ("azure-lun:01", "0 to 63"),
        ("azure-lun:", "0 to 63"),
        ("azure-lun:1000", "0 to 63"),
        ("azure:1", "azure-lun:<n>"),
        ("gcp", "gcp:<device-name>"),
    ];
    for (text, want) in bad {
        let err = D::parse(text).unwrap_err();
        assert!(err.contains(want), "{text}: {want:?} not in {err:?}");
    }
    let too_long = format!("gcp:a{}", "b".repeat(63));
    assert!(D::parse(&too_long).is_err());
}
