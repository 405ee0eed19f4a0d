//! Image sources end to end with real tools: images made by `umoci` (layers from GNU tar), copied by `skopeo` (OCI
//! and Docker v2s2 manifests, a multi-arch index) into Debian's `docker-registry`
//! (distribution 2.8, plain HTTP on 127.0.0.1, optionally htpasswd Basic auth), then resolved
//! and unpacked by `oci::registry` / `oci::layout` + `oci::manifest`, and the files compared
//! with what was inserted. A test is skipped (with a message) only when a tool is missing.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cvm_agent::oci::layout::{Layout, LayoutError};
use cvm_agent::oci::manifest::{self, ManifestError, ResolvedImage};
use cvm_agent::oci::reference::ImageRef;
use cvm_agent::oci::unpack::Limits;
use cvm_agent::registry::{Registry, RegistryError, RegistryOptions, parse_auth_json};

use cvm_testkit as common;

use common::registry::{HTPASSWD, REGISTRY, SKOPEO, push, run, start_registry, start_registry_tls};

const TOOLS: [&str; 4] = [REGISTRY, "/usr/bin/umoci", SKOPEO, HTPASSWD];

fn tools_present(test: &str) -> bool {
    common::registry::tools_present(test, &TOOLS)
}

/// The files the test image holds.
fn content(dir: &Path) {
    fs::create_dir_all(dir.join("etc")).unwrap();
    fs::create_dir_all(dir.join("bin")).unwrap();
    fs::write(dir.join("etc/greeting"), "hello from umoci\n").unwrap();
    fs::write(dir.join("bin/run"), "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(dir.join("bin/run"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(dir.join("big"), vec![7u8; 300_000]).unwrap();
}

/// `umoci raw add-layer` of a GNU tar of `dir`. (Debian's umoci 0.4.7 `insert` writes layers
/// whose tar stream stops right after the last file's data — no padding, no end-of-archive
/// blocks — which GNU tar, Python's tarfile and our unpacker all refuse as truncated.)
fn add_layer(image: &str, dir: &Path, tar: &Path) {
    run(Command::new("tar")
        .args(["--numeric-owner", "-C"])
        .arg(dir)
        .arg("-cf")
        .arg(tar)
        .arg("."));
    run(Command::new("umoci")
        .args(["raw", "add-layer", "--image", image])
        .arg(tar));
}

/// An OCI layout made by umoci: image `t` (amd64) with [`content`], cmd and a label; with
/// `arm`, also an arm64 image `arm` with one file.
fn umoci_layout(root: &Path, arm: bool) -> PathBuf {
    let layout = root.join("layout");
    let src = root.join("src");
    content(&src);
    let image = |tag: &str| format!("{}:{tag}", layout.display());
    run(Command::new("umoci")
        .arg("init")
        .arg("--layout")
        .arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &image("t")]));
    add_layer(&image("t"), &src, &root.join("layer.tar"));
    run(Command::new("umoci").args([
        "config",
        "--image",
        &image("t"),
        "--config.cmd",
        "/bin/run",
        "--config.env",
        "A=1",
        "--config.label",
        "k=v",
    ]));
    if arm {
        let arm_src = root.join("arm-src");
        fs::create_dir_all(&arm_src).unwrap();
        fs::write(arm_src.join("arch"), "arm64\n").unwrap();
        run(Command::new("umoci").args(["new", "--image", &image("arm")]));
        add_layer(&image("arm"), &arm_src, &root.join("arm-layer.tar"));
        run(Command::new("umoci").args([
            "config",
            "--image",
            &image("arm"),
            "--architecture",
            "arm64",
        ]));
    }
    layout
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Add an image index (the given `index.json` entries' manifests, with platforms) as a blob
/// of the layout and list it in `index.json` under `name`.
fn add_index(layout: &Path, name: &str, entries: &[(&str, &str)]) {
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifests: Vec<serde_json::Value> = entries
        .iter()
        .map(|(ref_name, arch)| {
            let m = index["manifests"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == *ref_name)
                .unwrap()
                .clone();
            serde_json::json!({
                "mediaType": m["mediaType"], "digest": m["digest"], "size": m["size"],
                "platform": {"os": "linux", "architecture": arch},
            })
        })
        .collect();
    let blob = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }))
    .unwrap();
    let hex = sha256_hex(&blob);
    fs::write(layout.join("blobs/sha256").join(&hex), &blob).unwrap();
    let mut index = index;
    index["manifests"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": format!("sha256:{hex}"), "size": blob.len(),
            "annotations": {"org.opencontainers.image.ref.name": name},
        }));
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
}

fn options() -> RegistryOptions {
    RegistryOptions {
        insecure_http: true,
        deadline: Duration::from_secs(15),
        ..Default::default()
    }
}

fn registry_ref(text: &str) -> cvm_agent::oci::reference::RegistryRef {
    match ImageRef::parse(text).unwrap() {
        ImageRef::Registry(r) => r,
        other => panic!("{other:?}"),
    }
}

fn pull(text: &str, options: RegistryOptions) -> Result<(ResolvedImage, Registry), ManifestError> {
    let mut registry = Registry::new(&registry_ref(text), options).unwrap();
    let image = manifest::resolve(&mut registry)?;
    Ok((image, registry))
}

/// Unpacked files equal [`content`]; the config is umoci's.
fn check_unpacked(image: &ResolvedImage, root: &Path) {
    assert_eq!(
        fs::read_to_string(root.join("etc/greeting")).unwrap(),
        "hello from umoci\n"
    );
    assert_eq!(
        fs::read_to_string(root.join("bin/run")).unwrap(),
        "#!/bin/sh\necho hi\n"
    );
    assert_eq!(
        fs::metadata(root.join("bin/run"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o755
    );
    assert_eq!(fs::read(root.join("big")).unwrap(), vec![7u8; 300_000]);
    assert_eq!(
        image.config.cmd.as_deref(),
        Some(&["/bin/run".to_string()][..])
    );
    assert!(image.config.env.iter().any(|e| e == "A=1"));
    assert_eq!(image.config.labels.get("k").map(String::as_str), Some("v"));
    assert_eq!(image.layers.len(), 1);
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        s.push_str(&format!(": {c}"));
        source = c.source();
    }
    s
}

#[test]
fn registry_pull_by_tag_and_digest_oci_and_docker_manifests() {
    if !tools_present("registry_pull_by_tag_and_digest_oci_and_docker_manifests") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = umoci_layout(tmp.path(), false);
    let reg = start_registry(None);
    for (format, media_type) in [
        ("oci", "application/vnd.oci.image.manifest.v1+json"),
        (
            "v2s2",
            "application/vnd.docker.distribution.manifest.v2+json",
        ),
    ] {
        let name = format!("127.0.0.1:{}/test/img-{format}", reg.port);
        push(&layout, "t", &format!("{name}:t"), Some(format), None);
        let raw = run(Command::new("skopeo").args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{name}:t"),
        ]));
        // skopeo writes OCI manifests without the optional mediaType member.
        assert_eq!(
            raw.contains("vnd.docker"),
            media_type.contains("vnd.docker"),
            "{format}: {raw}"
        );
        let expected = format!("sha256:{}", sha256_hex(raw.as_bytes()));

        // By tag: the tag resolves to the manifest digest.
        let (image, mut registry) = pull(&format!("{name}:t"), options()).unwrap();
        assert_eq!(image.digest.to_string(), expected);
        assert_eq!(image.manifest_digest.to_string(), expected);
        let root = tempfile::tempdir().unwrap();
        let summary =
            manifest::unpack(&mut registry, &image, root.path(), &Limits::default()).unwrap();
        assert_eq!(summary.layers, 1);
        assert!(summary.bytes >= 300_000, "{summary:?}");
        check_unpacked(&image, root.path());

        // By digest (with and without the tag).
        for text in [format!("{name}@{expected}"), format!("{name}:t@{expected}")] {
            let (image, _) = pull(&text, options()).unwrap();
            assert_eq!(image.digest.to_string(), expected);
        }

        // A digest the registry does not have.
        let wrong = format!("sha256:{}", "0".repeat(64));
        let e = pull(&format!("{name}:t@{wrong}"), options()).unwrap_err();
        let text = chain(&e);
        assert!(
            text.contains("MANIFEST_UNKNOWN") && text.contains("404"),
            "{text}"
        );
        // A tag that does not exist: a final 4xx, not retried until the deadline.
        let started = Instant::now();
        let e = pull(&format!("{name}:nope"), options()).unwrap_err();
        assert!(chain(&e).contains("MANIFEST_UNKNOWN"), "{}", chain(&e));
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

#[test]
fn registry_multi_arch_index_picks_amd64_and_arm64_only_is_refused() {
    if !tools_present("registry_multi_arch_index_picks_amd64_and_arm64_only_is_refused") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = umoci_layout(tmp.path(), true);
    add_index(&layout, "multi", &[("arm", "arm64"), ("t", "amd64")]);
    add_index(&layout, "armonly", &[("arm", "arm64")]);
    let reg = start_registry(None);
    let name = format!("127.0.0.1:{}/test/multi", reg.port);
    push(&layout, "multi", &format!("{name}:multi"), None, None);
    push(&layout, "armonly", &format!("{name}:armonly"), None, None);

    let (image, mut registry) = pull(&format!("{name}:multi"), options()).unwrap();
    assert_ne!(image.digest, image.manifest_digest);
    let root = tempfile::tempdir().unwrap();
    manifest::unpack(&mut registry, &image, root.path(), &Limits::default()).unwrap();
    check_unpacked(&image, root.path());
    assert!(!root.path().join("arch").exists());

    let e = pull(&format!("{name}:armonly"), options()).unwrap_err();
    assert!(matches!(e, ManifestError::NoPlatform { .. }), "{e}");
    assert!(e.to_string().contains("linux/arm64"), "{e}");

    // The arm64 manifest on its own (no index) is refused by its config.
    push(&layout, "arm", &format!("{name}:arm"), Some("oci"), None);
    let e = pull(&format!("{name}:arm"), options()).unwrap_err();
    assert!(e.to_string().contains("arm64, not linux/amd64"), "{e}");
}

#[test]
fn registry_with_basic_auth() {
    if !tools_present("registry_with_basic_auth") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = umoci_layout(tmp.path(), false);
    let reg = start_registry(Some(("alice", "s3cret-pw")));
    let host = format!("127.0.0.1:{}", reg.port);
    let name = format!("{host}/test/private");
    push(
        &layout,
        "t",
        &format!("{name}:t"),
        Some("oci"),
        Some("alice:s3cret-pw"),
    );

    // No credentials: refused, and the message says why.
    let e = pull(&format!("{name}:t"), options()).unwrap_err();
    let text = chain(&e);
    let ManifestError::Fetch { source, .. } = &e else {
        panic!("{text}")
    };
    assert!(
        matches!(
            source.downcast_ref::<RegistryError>(),
            Some(RegistryError::NeedsCredentials { .. })
        ),
        "{text}"
    );
    assert!(text.contains("asks for credentials (Basic)"), "{text}");

    // Wrong password: refused, and the password appears nowhere.
    let auth = |user: &str, pass: &str| {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        format!(r#"{{"auths":{{"http://{host}":{{"auth":"{b64}"}}}}}}"#)
    };
    let wrong = parse_auth_json(auth("alice", "wrong-pw").as_bytes(), &host)
        .unwrap()
        .unwrap();
    let e = pull(
        &format!("{name}:t"),
        RegistryOptions {
            credentials: Some(wrong),
            ..options()
        },
    )
    .unwrap_err();
    let text = format!("{} {e:?}", chain(&e));
    assert!(
        text.contains("refused with the configured credentials"),
        "{text}"
    );
    assert!(!text.contains("wrong-pw"), "{text}");

    // The right credentials, from an auth.json document.
    let creds = parse_auth_json(auth("alice", "s3cret-pw").as_bytes(), &host)
        .unwrap()
        .unwrap();
    let (image, mut registry) = pull(
        &format!("{name}:t"),
        RegistryOptions {
            credentials: Some(creds),
            ..options()
        },
    )
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    manifest::unpack(&mut registry, &image, root.path(), &Limits::default()).unwrap();
    check_unpacked(&image, root.path());
    assert!(!format!("{registry:?}").contains("s3cret"));
}

#[test]
fn registry_unreachable_is_retried_until_the_deadline() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let e = pull(
        &format!("127.0.0.1:{port}/test/img:t"),
        RegistryOptions {
            deadline: Duration::from_secs(2),
            ..options()
        },
    )
    .unwrap_err();
    let text = chain(&e);
    assert!(
        text.contains("deadline") && text.contains("attempts"),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // Plain http is refused unless asked for.
    let mut registry = Registry::new(
        &registry_ref(&format!("127.0.0.1:{port}/test/img:t")),
        RegistryOptions {
            insecure_http: false,
            deadline: Duration::from_secs(2),
            ..Default::default()
        },
    )
    .unwrap();
    // (https to a closed port: a transient failure, so the deadline again; no plain http.)
    assert!(manifest::resolve(&mut registry).is_err());
}

fn open_layout(text: &str) -> Result<Layout, LayoutError> {
    match ImageRef::parse(text).unwrap() {
        ImageRef::Layout(l) => Layout::open(&l),
        other => panic!("{other:?}"),
    }
}

#[test]
fn layout_from_umoci_resolves_and_unpacks() {
    if !tools_present("layout_from_umoci_resolves_and_unpacks") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = umoci_layout(tmp.path(), false);
    let mut source = open_layout(&format!("oci:{}:t", layout.display())).unwrap();
    let image = manifest::resolve(&mut source).unwrap();
    let root = tempfile::tempdir().unwrap();
    let summary = manifest::unpack(&mut source, &image, root.path(), &Limits::default()).unwrap();
    assert_eq!(summary.layers, 1);
    check_unpacked(&image, root.path());

    // The same image by digest, and as the only manifest.
    for text in [
        format!("oci:{}@{}", layout.display(), image.digest),
        format!("oci:{}", layout.display()),
    ] {
        let mut source = open_layout(&text).unwrap();
        assert_eq!(manifest::resolve(&mut source).unwrap().digest, image.digest);
    }
    // A name that is not there.
    let mut source = open_layout(&format!("oci:{}:nope", layout.display())).unwrap();
    let e = manifest::resolve(&mut source).unwrap_err();
    assert!(
        chain(&e).contains("no manifest is named \"nope\""),
        "{}",
        chain(&e)
    );
}

#[test]
fn layout_tampered_blobs_are_refused() {
    if !tools_present("layout_tampered_blobs_are_refused") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = umoci_layout(tmp.path(), false);
    let text = format!("oci:{}:t", layout.display());
    let mut source = open_layout(&text).unwrap();
    let image = manifest::resolve(&mut source).unwrap();
    let blob = |d: &cvm_agent::oci::digest::Sha256Digest| {
        layout
            .join("blobs/sha256")
            .join(d.to_string().trim_start_matches("sha256:"))
    };
    let flip = |path: &Path, at: usize| {
        let mut bytes = fs::read(path).unwrap();
        let at = at.min(bytes.len() - 1);
        bytes[at] ^= 0x01;
        fs::write(path, bytes).unwrap();
    };

    // A flipped byte in the layer: refused by its digest (same size).
    let layer = blob(&image.layers[0].digest);
    let len = fs::metadata(&layer).unwrap().len() as usize;
    flip(&layer, len / 2);
    let root = tempfile::tempdir().unwrap();
    let e = manifest::unpack(&mut source, &image, root.path(), &Limits::default()).unwrap_err();
    assert!(matches!(e, ManifestError::Layer { index: 0, .. }), "{e}");
    flip(&layer, len / 2);
    // A longer layer: refused by its size before anything is read.
    fs::OpenOptions::new()
        .append(true)
        .open(&layer)
        .unwrap()
        .write_all_at_end(b"x");
    let e = manifest::unpack(&mut source, &image, root.path(), &Limits::default()).unwrap_err();
    assert!(chain(&e).contains("its descriptor says"), "{}", chain(&e));

    // A flipped byte in the config, then in the manifest: refused before parsing.
    flip(&blob(&image.config_digest), 10);
    let e = manifest::resolve(&mut source).unwrap_err();
    assert!(matches!(e, ManifestError::DigestMismatch { .. }), "{e}");
    assert!(e.to_string().contains(&image.config_digest.to_string()));
    flip(&blob(&image.manifest_digest), 10);
    let e = manifest::resolve(&mut source).unwrap_err();
    assert!(matches!(e, ManifestError::DigestMismatch { .. }), "{e}");
}

#[test]
fn layout_index_with_only_arm64_is_refused() {
    if !tools_present("layout_index_with_only_arm64_is_refused") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = umoci_layout(tmp.path(), true);
    add_index(&layout, "armonly", &[("arm", "arm64")]);
    add_index(&layout, "multi", &[("arm", "arm64"), ("t", "amd64")]);
    let mut source = open_layout(&format!("oci:{}:armonly", layout.display())).unwrap();
    let e = manifest::resolve(&mut source).unwrap_err();
    assert!(matches!(e, ManifestError::NoPlatform { .. }), "{e}");
    assert!(e.to_string().contains("linux/arm64"), "{e}");

    let mut source = open_layout(&format!("oci:{}:multi", layout.display())).unwrap();
    let image = manifest::resolve(&mut source).unwrap();
    let root = tempfile::tempdir().unwrap();
    manifest::unpack(&mut source, &image, root.path(), &Limits::default()).unwrap();
    check_unpacked(&image, root.path());

    // Several manifests and none named.
    let mut source = open_layout(&format!("oci:{}", layout.display())).unwrap();
    let e = manifest::resolve(&mut source).unwrap_err();
    assert!(chain(&e).contains("several manifests"), "{}", chain(&e));
}

trait AppendByte {
    fn write_all_at_end(self, bytes: &[u8]);
}

impl AppendByte for fs::File {
    fn write_all_at_end(mut self, bytes: &[u8]) {
        use std::io::Write as _;
        self.write_all(bytes).unwrap();
    }
}

// A scripted registry (std TcpListener, one request per connection) for what the real one
// will not do: Bearer tokens, blob redirects to another host, a 503, and lies (a manifest
// that does not match its digest, a blob longer than its descriptor).

struct Request {
    path: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn respond(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Response {
    Response {
        status,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: body.to_vec(),
    }
}

type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// Serve `handler` on 127.0.0.1 until the process ends; the port.
fn serve(handler: Handler) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            answer(&mut stream, &handler);
        }
    });
    port
}

/// [`serve`] behind TLS with the certificate and key in these PEM files.
fn serve_tls(handler: Handler, cert: &Path, key: &Path) -> u16 {
    let config = Arc::new(cvm_devkbs::tls::server_config(cert, key).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(tcp) = stream else { continue };
            let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                continue;
            };
            answer(&mut rustls::StreamOwned::new(conn, tcp), &handler);
        }
    });
    port
}

/// One request (head only: these are GETs) and the handler's answer.
fn answer(stream: &mut (impl std::io::Read + std::io::Write), handler: &Handler) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 64 << 10 {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let mut lines = head.lines();
    let path = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("")
        .to_string();
    let headers = lines
        .filter_map(|h| h.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let r = handler(&Request { path, headers });
    let mut head = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", r.status);
    if !r.headers.iter().any(|(k, _)| k == "X-No-Length") {
        head.push_str(&format!("Content-Length: {}\r\n", r.body.len()));
    }
    for (k, v) in &r.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&r.body);
    let _ = stream.flush();
}

/// A manifest by tag (ref name) or digest from the layout: bytes and media type.
fn layout_manifest(layout: &Path, reference: &str) -> Option<(Vec<u8>, String)> {
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let entry = index["manifests"].as_array()?.iter().find(|m| {
        m["annotations"]["org.opencontainers.image.ref.name"] == reference
            || m["digest"] == reference
    });
    let (digest, media_type) = match entry {
        Some(e) => (
            e["digest"].as_str()?.to_string(),
            e["mediaType"].as_str()?.to_string(),
        ),
        None => (
            reference.to_string(),
            "application/vnd.oci.image.manifest.v1+json".to_string(),
        ),
    };
    let hex = digest.strip_prefix("sha256:")?;
    Some((
        fs::read(layout.join("blobs/sha256").join(hex)).ok()?,
        media_type,
    ))
}

#[derive(Clone, Copy, Default)]
struct Lies {
    /// `manifests/<digest>` answers other bytes than the digest's.
    manifest_by_digest: bool,
    /// Layer blobs carry one byte more than their descriptor says (no Content-Length).
    long_blob: bool,
}

/// A Bearer-token registry serving `layout` as repository `test/img`, whose blobs redirect to
/// a second server; the first manifest request gets a 503. Returns the registry's port and
/// the Authorization headers the blob server saw.
fn fake_registry(layout: PathBuf, lies: Lies) -> (u16, Arc<Mutex<Vec<String>>>) {
    let blob_auth = Arc::new(Mutex::new(Vec::new()));
    let seen = blob_auth.clone();
    let blob_layout = layout.clone();
    let blob_port = serve(Arc::new(move |r: &Request| {
        seen.lock()
            .unwrap()
            .push(r.header("authorization").unwrap_or("").to_string());
        let hex = r.path.rsplit("sha256:").next().unwrap_or("");
        match fs::read(blob_layout.join("blobs/sha256").join(hex)) {
            // Layers only (gzip), so the config passes and the layer stream is what overruns.
            Ok(mut b) if lies.long_blob && b.starts_with(&[0x1f, 0x8b]) => {
                b.push(0);
                // No Content-Length: the body ends when the connection closes.
                respond(200, &[("X-No-Length", "1")], &b)
            }
            Ok(b) => respond(200, &[], &b),
            Err(_) => respond(
                404,
                &[],
                br#"{"errors":[{"code":"BLOB_UNKNOWN","message":"no"}]}"#,
            ),
        }
    }));
    let first = Arc::new(Mutex::new(true));
    let port_cell = Arc::new(Mutex::new(0u16));
    let port_for_handler = port_cell.clone();
    let port = serve(Arc::new(move |r: &Request| {
        let port = *port_for_handler.lock().unwrap();
        if let Some(query) = r.path.strip_prefix("/token?") {
            let basic = format!("Basic {}", {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.encode("bob:pw")
            });
            if r.header("authorization") != Some(basic.as_str())
                || !query.contains("service=fake")
                || !query.contains("scope=repository%3Atest%2Fimg%3Apull")
            {
                return respond(
                    401,
                    &[],
                    br#"{"errors":[{"code":"DENIED","message":"bad creds"}]}"#,
                );
            }
            return respond(200, &[], br#"{"access_token":"tok123","expires_in":60}"#);
        }
        if r.header("authorization") != Some("Bearer tok123") {
            let challenge = format!(
                r#"Bearer realm="http://127.0.0.1:{port}/token",service="fake",scope="repository:test/img:pull""#
            );
            return respond(
                401,
                &[("WWW-Authenticate", &challenge)],
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"auth"}]}"#,
            );
        }
        if let Some(reference) = r.path.strip_prefix("/v2/test/img/manifests/") {
            if std::mem::take(&mut *first.lock().unwrap()) {
                return respond(503, &[], b"busy");
            }
            return match layout_manifest(&layout, reference) {
                Some((mut bytes, media_type)) => {
                    if lies.manifest_by_digest && reference.starts_with("sha256:") {
                        bytes.push(b' ');
                    }
                    respond(200, &[("Content-Type", &media_type)], &bytes)
                }
                None => respond(
                    404,
                    &[],
                    br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"no"}]}"#,
                ),
            };
        }
        if let Some(digest) = r.path.strip_prefix("/v2/test/img/blobs/") {
            let to = format!("http://127.0.0.1:{blob_port}/storage/{digest}");
            return respond(307, &[("Location", &to)], b"");
        }
        respond(404, &[], b"")
    }));
    *port_cell.lock().unwrap() = port;
    (port, blob_auth)
}

#[test]
fn bearer_token_blob_redirect_and_retry() {
    if !tools_present("bearer_token_blob_redirect_and_retry") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = umoci_layout(tmp.path(), false);
    let (port, blob_auth) = fake_registry(layout.clone(), Lies::default());
    let with_creds = || RegistryOptions {
        credentials: Some(cvm_agent::registry::Credentials::new("bob", "pw")),
        ..options()
    };
    let (image, mut registry) =
        pull(&format!("127.0.0.1:{port}/test/img:t"), with_creds()).unwrap();
    let root = tempfile::tempdir().unwrap();
    manifest::unpack(&mut registry, &image, root.path(), &Limits::default()).unwrap();
    check_unpacked(&image, root.path());
    // The blob host got the config and the layer, and never the registry's token.
    let seen = blob_auth.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(|a| a.is_empty()), "{seen:?}");

    // Wrong token credentials: refused, named.
    let e = pull(
        &format!("127.0.0.1:{port}/test/img:t"),
        RegistryOptions {
            credentials: Some(cvm_agent::registry::Credentials::new("bob", "nope")),
            ..options()
        },
    )
    .unwrap_err();
    let text = chain(&e);
    assert!(text.contains("token") && text.contains("DENIED"), "{text}");
    assert!(!text.contains("nope"), "{text}");
}

#[test]
fn lying_registry_is_refused() {
    if !tools_present("lying_registry_is_refused") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = umoci_layout(tmp.path(), false);
    let creds = || RegistryOptions {
        credentials: Some(cvm_agent::registry::Credentials::new("bob", "pw")),
        ..options()
    };
    let (truth, _) = layout_manifest(&layout, "t").unwrap();
    let digest = format!("sha256:{}", sha256_hex(&truth));

    // A manifest that does not match the digest asked for: both digests named.
    let (port, _) = fake_registry(
        layout.clone(),
        Lies {
            manifest_by_digest: true,
            ..Default::default()
        },
    );
    let e = pull(&format!("127.0.0.1:{port}/test/img@{digest}"), creds()).unwrap_err();
    let mut lie = truth.clone();
    lie.push(b' ');
    let text = e.to_string();
    assert!(matches!(e, ManifestError::DigestMismatch { .. }), "{text}");
    assert!(
        text.contains(&digest) && text.contains(&sha256_hex(&lie)),
        "{text}"
    );

    // A layer blob longer than its descriptor, streamed (no Content-Length).
    let (port, _) = fake_registry(
        layout.clone(),
        Lies {
            long_blob: true,
            ..Default::default()
        },
    );
    let (image, mut registry) = pull(&format!("127.0.0.1:{port}/test/img:t"), creds()).unwrap();
    let root = tempfile::tempdir().unwrap();
    let e = manifest::unpack(&mut registry, &image, root.path(), &Limits::default()).unwrap_err();
    assert!(matches!(e, ManifestError::Layer { index: 0, .. }), "{e}");
    assert!(
        chain(&e).contains("longer than its descriptor"),
        "{}",
        chain(&e)
    );
}

/// A self-signed certificate for 127.0.0.1: (certificate PEM, key PEM, SPKI SHA-256).
fn self_signed() -> (String, String, [u8; 32]) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = params.self_signed(&key).unwrap();
    let pin = cvm_agent::net::tls::spki_sha256(cert.der()).unwrap();
    (cert.pem(), key.serialize_pem(), pin)
}

#[test]
fn registry_over_tls_with_an_anchor_or_a_pin_and_nothing_else() {
    if !tools_present("registry_over_tls_with_an_anchor_or_a_pin_and_nothing_else") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = umoci_layout(tmp.path(), false);
    let (cert, key, pin) = self_signed();
    let reg = start_registry_tls(None, Some((&cert, &key)));
    let name = format!("127.0.0.1:{}/test/tls", reg.port);
    // skopeo pushes over TLS without verifying (it does not know our test certificate).
    push(&layout, "t", &format!("{name}:t"), Some("oci"), None);
    let tls = |cert_pem: Option<String>, pin: Option<[u8; 32]>| RegistryOptions {
        cert_pem,
        pin,
        insecure_http: false,
        deadline: Duration::from_secs(10),
        ..Default::default()
    };
    // The certificate as the only anchor, the pin alone, both: all pull and unpack.
    for (what, options) in [
        ("anchor", tls(Some(cert.clone()), None)),
        ("pin", tls(None, Some(pin))),
        ("anchor and pin", tls(Some(cert.clone()), Some(pin))),
    ] {
        let (image, mut registry) =
            pull(&format!("{name}:t"), options).unwrap_or_else(|e| panic!("{what}: {}", chain(&e)));
        let root = tempfile::tempdir().unwrap();
        manifest::unpack(&mut registry, &image, root.path(), &Limits::default())
            .unwrap_or_else(|e| panic!("{what}: {}", chain(&e)));
        check_unpacked(&image, root.path());
    }
    // No anchor (the compiled-in web roots) or a wrong pin: refused at once (a TLS failure is
    // not retried), naming the certificate.
    let mut wrong = pin;
    wrong[0] ^= 1;
    for (what, options) in [
        ("web roots", tls(None, None)),
        ("wrong pin", tls(None, Some(wrong))),
    ] {
        let started = Instant::now();
        let e = pull(&format!("{name}:t"), options).unwrap_err();
        let text = chain(&e);
        assert!(
            text.to_lowercase().contains("certificate") || text.contains("TLS"),
            "{what}: {text}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what}: retried: {text}"
        );
    }
    assert!(
        pull(&format!("{name}:t"), options()).is_err(),
        "plain http to a TLS registry"
    );
}

/// An https registry whose Bearer challenge names a plain-http realm: the credentials (and the
/// token request) would leave TLS there. Refused by name, and the realm never gets a request.
#[test]
fn an_https_registry_never_sends_credentials_to_an_http_realm() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key, pin) = self_signed();
    let (cert_file, key_file) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    fs::write(&cert_file, &cert).unwrap();
    fs::write(&key_file, &key).unwrap();
    let realm_saw = Arc::new(Mutex::new(Vec::new()));
    let seen = realm_saw.clone();
    let realm_port = serve(Arc::new(move |r: &Request| {
        seen.lock().unwrap().push(format!(
            "{} {}",
            r.path,
            r.header("authorization").unwrap_or("")
        ));
        respond(200, &[], br#"{"token":"tok123"}"#)
    }));
    let realm = format!("http://127.0.0.1:{realm_port}/token");
    let challenge = format!(r#"Bearer realm="{realm}",service="fake""#);
    let port = serve_tls(
        Arc::new(move |_: &Request| {
            respond(
                401,
                &[("WWW-Authenticate", &challenge)],
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"auth"}]}"#,
            )
        }),
        &cert_file,
        &key_file,
    );
    for credentials in [
        Some(cvm_agent::registry::Credentials::new("bob", "pw")),
        None,
    ] {
        let with = credentials.is_some();
        let options = RegistryOptions {
            pin: Some(pin),
            insecure_http: false,
            deadline: Duration::from_secs(10),
            credentials,
            ..Default::default()
        };
        let e = pull(&format!("127.0.0.1:{port}/test/img:t"), options).unwrap_err();
        let text = chain(&e);
        assert!(
            text.contains("the registry is https, but its Bearer realm")
                && text.contains(&realm)
                && text.contains("plain http"),
            "credentials {with}: {text}"
        );
    }
    assert!(
        realm_saw.lock().unwrap().is_empty(),
        "the http realm got a request: {:?}",
        realm_saw.lock().unwrap()
    );
}
