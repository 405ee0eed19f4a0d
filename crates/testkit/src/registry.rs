//! A real registry for tests: Debian's `docker-registry` (distribution 2.8) on 127.0.0.1 with
//! plain HTTP, optionally behind htpasswd Basic auth, filled with `skopeo copy`. A test that
//! needs these tools skips (with a message) when one is missing.

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const REGISTRY: &str = "/usr/bin/docker-registry";
pub const SKOPEO: &str = "/usr/bin/skopeo";
pub const HTPASSWD: &str = "/usr/bin/htpasswd";

/// Whether every tool in `tools` is installed; prints a SKIP line for `test` when one is not.
pub fn tools_present(test: &str, tools: &[&str]) -> bool {
    for t in tools {
        if !Path::new(t).exists() {
            eprintln!("SKIP {test}: {t} is not installed");
            return false;
        }
    }
    true
}

/// Run a host tool; its stdout as text, or a panic with its stderr.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A running registry; killed (by its own pid) on drop.
pub struct Reg {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Reg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A registry on a free 127.0.0.1 port, with htpasswd Basic auth for `(user, password)`.
pub fn start_registry(htpasswd: Option<(&str, &str)>) -> Reg {
    start_registry_tls(htpasswd, None)
}

/// The same, serving HTTPS with `(certificate PEM, key PEM)` when given.
pub fn start_registry_tls(htpasswd: Option<(&str, &str)>, tls: Option<(&str, &str)>) -> Reg {
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = format!(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
        dir.path().join("store").display()
    );
    // Under `http:`, so before any top-level section.
    if let Some((cert, key)) = tls {
        let (c, k) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        fs::write(&c, cert).unwrap();
        fs::write(&k, key).unwrap();
        config.push_str(&format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            c.display(),
            k.display()
        ));
    }
    if let Some((user, pass)) = htpasswd {
        let file = dir.path().join("htpasswd");
        let line = run(Command::new(HTPASSWD).args(["-Bbn", user, pass]));
        fs::write(&file, line).unwrap();
        config.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: test-realm\n    path: {}\n",
            file.display()
        ));
    }
    let config_path = dir.path().join("config.yml");
    fs::write(&config_path, config).unwrap();
    let child = Command::new(REGISTRY)
        .arg("serve")
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let reg = Reg {
        child,
        port,
        _dir: dir,
    };
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the registry did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    reg
}

/// `skopeo copy` of `layout`'s `tag` to `docker://dest` (plain HTTP). `format`: "oci" or
/// "v2s2"; `None` copies everything (`--all`). `creds`: "user:password".
pub fn push(layout: &Path, tag: &str, dest: &str, format: Option<&str>, creds: Option<&str>) {
    let mut cmd = Command::new(SKOPEO);
    cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
    if let Some(f) = format {
        cmd.args(["--format", f]);
    } else {
        cmd.arg("--all");
    }
    if let Some(c) = creds {
        cmd.args(["--dest-creds", c]);
    }
    cmd.arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{dest}"));
    run(&mut cmd);
}

/// The manifest `docker://image` serves, byte for byte (`skopeo inspect --raw`).
pub fn raw_manifest(image: &str, creds: Option<&str>) -> Vec<u8> {
    let mut cmd = Command::new(SKOPEO);
    cmd.args(["inspect", "--raw", "--tls-verify=false"]);
    if let Some(c) = creds {
        cmd.args(["--creds", c]);
    }
    cmd.arg(format!("docker://{image}"));
    super::run_ok(&mut cmd)
}
