//! The dev KBS (`cvmctl kbs`, this build's binary) for VM tests: started on 127.0.0.1:0 with a
//! policy and resources in a temporary directory; the guest reaches it as 10.0.2.100:8080.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use super::{cvmctl, repo, roothash, run_ok};

pub const SECRET_PATH: &str = "default/demo/secret";

pub struct Kbs {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// The swtpm state the guest must boot with (`--tpm-state`): its AK is the policy's only
    /// trusted one.
    pub tpm_state: PathBuf,
    /// SHA-256 (hex) of that AK.
    pub ak: String,
    /// SHA-256 of the TLS key's SPKI, when serving TLS ([`tls_identity`]).
    pub pin: Option<String>,
}

impl Drop for Kbs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Kbs {
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kbs.log")).unwrap_or_default()
    }

    /// boot.sh arguments that give the guest the vTPM this KBS trusts.
    pub fn tpm_args(&self) -> Vec<String> {
        vec!["--tpm-state".into(), self.tpm_state.display().to_string()]
    }

    pub fn secret(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("resources").join(SECRET_PATH)).unwrap()
    }
}

#[derive(Default)]
pub struct Setup<'a> {
    pub policy: String,
    pub tls: bool,
    pub extra: &'a [&'a str],
    /// Write `cvmctl measure`'s prediction for this init-data as the policy's reference.json.
    pub reference_for: Option<&'a [u8]>,
    /// With `reference_for`: also predict the boot chain (PCRs 4, 9, 11, 12) of this UKI as
    /// QEMU's `-kernel` boots it (`cvmctl measure --uki … --boot-path kernel`), so the policy
    /// pins them.
    pub reference_uki: Option<&'a Path>,
    /// A reference.json made elsewhere (an image's `cvmctl measure` prediction), written as is.
    pub reference_json: Option<Vec<u8>>,
    /// More resources: (repo/type/tag, bytes).
    pub resources: Vec<(String, Vec<u8>)>,
    /// Where the guest's vTPM state lives (default: inside the KBS's directory). Its AK is
    /// provisioned before the KBS starts and prepended to the policy as `trusted_aks`, unless
    /// the policy lists AKs itself.
    pub tpm_state: Option<PathBuf>,
}

/// Provisions the AK of the swtpm state in `dir` with `cvmctl tpm-ak`; its SHA-256 hex.
pub fn provision_tpm(dir: &Path) -> String {
    let out = run_ok(
        Command::new(cvmctl())
            .arg("tpm-ak")
            .arg("--tpm-state")
            .arg(dir),
    );
    String::from_utf8(out).unwrap().trim().to_string()
}

/// One TLS key for the dev KBS per test process, so launch.toml can pin it before the KBS
/// starts (the policy pins the init-data's digest, which covers the pin).
pub struct TlsIdentity {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub pin: String,
}

pub fn tls_identity() -> &'static TlsIdentity {
    static IDENTITY: std::sync::OnceLock<TlsIdentity> = std::sync::OnceLock::new();
    IDENTITY.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let (cert, key, pin) = cvm_devkbs::tls::self_signed(&dir).unwrap();
        TlsIdentity { cert, key, pin }
    })
}

/// launch.toml's `[kbs]` for the dev KBS at 10.0.2.100:8080 over TLS, its key pinned (start
/// the KBS with `tls: true`). Production refuses a KBS over plain http.
pub fn kbs_section() -> String {
    format!(
        "[kbs]\nurl = \"https://10.0.2.100:8080\"\npin = \"{}\"\n",
        tls_identity().pin
    )
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn image_version() -> String {
    let text = std::fs::read_to_string(repo().join("out/root-tree/etc/os-release"))
        .or_else(|_| std::fs::read_to_string(repo().join("rootfs/etc/os-release")))
        .unwrap();
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(|v| v.trim_matches('"').to_string())
    };
    match (get("IMAGE_ID"), get("IMAGE_VERSION")) {
        (Some(id), Some(v)) => format!("{id} {v}"),
        (Some(id), None) => id,
        _ => panic!("no IMAGE_ID in os-release"),
    }
}

/// The policy a correct boot of this build with `initdata` passes.
pub fn strict_policy(initdata: &[u8]) -> String {
    format!(
        "tee = [\"tpm\"]\nallow_debug = false\nroothash = \"{}\"\nimage_version = \"{}\"\n\
         initdata_digest = \"{}\"\nrequire_initdata = true\n",
        roothash(),
        image_version(),
        hex(&Sha256::digest(initdata))
    )
}

pub fn start_kbs(setup: &Setup) -> Kbs {
    let dir = tempfile::tempdir().unwrap();
    let res = dir.path().join("resources").join(SECRET_PATH);
    std::fs::create_dir_all(res.parent().unwrap()).unwrap();
    let mut secret = [0u8; 24];
    getrandom::fill(&mut secret).unwrap();
    std::fs::write(&res, hex(&secret)).unwrap();
    for (path, bytes) in &setup.resources {
        let file = dir.path().join("resources").join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, bytes).unwrap();
    }
    let tpm_state = setup
        .tpm_state
        .clone()
        .unwrap_or_else(|| dir.path().join("tpm"));
    let ak = provision_tpm(&tpm_state);
    // First, so that it stays a top-level key whatever tables the policy has.
    let policy = if setup.policy.contains("trusted_aks") {
        setup.policy.clone()
    } else {
        format!("trusted_aks = [\"{ak}\"]\n{}", setup.policy)
    };
    std::fs::write(dir.path().join("policy.toml"), policy).unwrap();
    if let Some(initdata) = setup.reference_for {
        let file = dir.path().join("reference-initdata.toml");
        std::fs::write(&file, initdata).unwrap();
        let mut measure = Command::new(cvmctl());
        measure
            .arg("measure")
            .arg("--initdata")
            .arg(&file)
            .args(["--roothash", &roothash()])
            .args(["--image-version", &image_version()]);
        if let Some(uki) = setup.reference_uki {
            measure
                .arg("--uki")
                .arg(uki)
                .args(["--boot-path", "kernel"]);
        }
        let reference = run_ok(&mut measure);
        std::fs::write(dir.path().join("reference.json"), reference).unwrap();
    }
    if let Some(reference) = &setup.reference_json {
        std::fs::write(dir.path().join("reference.json"), reference).unwrap();
    }
    let ready = dir.path().join("kbs.addr");
    let log = std::fs::File::create(dir.path().join("kbs.log")).unwrap();
    let mut cmd = Command::new(cvmctl());
    cmd.arg("kbs")
        .args(["--listen", "127.0.0.1:0"])
        .arg("--policy")
        .arg(dir.path().join("policy.toml"))
        .arg("--resources")
        .arg(dir.path().join("resources"))
        .arg("--ready-file")
        .arg(&ready)
        .args(setup.extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    if setup.tls {
        let id = tls_identity();
        cmd.arg("--tls-cert")
            .arg(&id.cert)
            .arg("--tls-key")
            .arg(&id.key);
    }
    let child = cmd.spawn().expect("run cvmctl kbs");
    let started = Instant::now();
    let addr = loop {
        if let Ok(a) = std::fs::read_to_string(&ready)
            && !a.trim().is_empty()
        {
            break a;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the dev KBS did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let port = addr.trim().rsplit(':').next().unwrap().parse().unwrap();
    let pin = setup.tls.then(|| tls_identity().pin.clone());
    Kbs {
        child,
        port,
        dir,
        tpm_state,
        ak,
        pin,
    }
}
