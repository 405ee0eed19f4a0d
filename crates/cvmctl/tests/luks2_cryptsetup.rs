//! Our LUKS2 against the real cryptsetup (2.6), userspace only: the host kernel has no
//! device-mapper, so nothing is activated. Both directions of header compatibility (our header
//! passes `luksDump` and `open --test-passphrase`; cryptsetup's opens with our opener and
//! yields the volume key `luksDump --dump-volume-key` shows), and data compatibility through
//! `cryptsetup reencrypt --force-offline-reencrypt`, which decrypts and re-encrypts the data
//! segment in userspace with dm-crypt's IV rules: data we encrypted under the old volume key
//! must come back through our decryption under the new one. cryptsetup is not optional here:
//! a skipped check would let an incompatible header through.

use cvm_disk::luks2::{self, FormatOptions, Kdf, Kind, Luks2Error};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const KEY: &[u8] = b"kbs-state-key-0123456789abcdef!!";

fn cryptsetup(args: &[&str]) -> Output {
    Command::new("cryptsetup")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cryptsetup must be installed for this test: {e}"))
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "cryptsetup failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key"), KEY).unwrap();
        std::fs::write(
            dir.path().join("wrong"),
            b"not-the-key-0123456789abcdef!!!!",
        )
        .unwrap();
        Scratch { dir }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn s(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }
    /// A sparse image file.
    fn image(&self, name: &str, size: u64) -> PathBuf {
        let p = self.path(name);
        File::create(&p).unwrap().set_len(size).unwrap();
        p
    }
}

fn rw(p: &Path) -> File {
    OpenOptions::new().read(true).write(true).open(p).unwrap()
}

/// The volume key as `cryptsetup luksDump --dump-volume-key` prints it ("MK dump:" hex).
fn dumped_volume_key(sc: &Scratch, img: &str) -> Vec<u8> {
    dumped_volume_key_of(sc, img, 64)
}

fn dumped_volume_key_of(sc: &Scratch, img: &str, bytes: usize) -> Vec<u8> {
    let out = ok(&cryptsetup(&[
        "luksDump",
        "--dump-volume-key",
        "--key-file",
        &sc.s("key"),
        "--batch-mode",
        img,
    ]));
    let start = out.find("MK dump:").expect("MK dump in output") + "MK dump:".len();
    let hex: String = out[start..]
        .split_whitespace()
        .take(bytes)
        .collect::<Vec<_>>()
        .concat();
    cvm_text::hex::decode(&hex).unwrap()
}

fn test_passphrase(sc: &Scratch, img: &str, key: &str) -> bool {
    cryptsetup(&["open", "--test-passphrase", "--key-file", &sc.s(key), img])
        .status
        .success()
}

fn ours_passes_cryptsetup(kdf: Kdf) {
    let sc = Scratch::new();
    let img = sc.image("ours.img", 64 << 20);
    let mut f = rw(&img);
    let opts = FormatOptions {
        kdf,
        label: "cvm-state".into(),
        ..FormatOptions::default()
    };
    let h = luks2::format(&mut f, 64 << 20, KEY, &opts).unwrap();
    let img_s = sc.s("ours.img");
    let dump = ok(&cryptsetup(&["luksDump", &img_s]));
    assert!(dump.contains(h.uuid()), "{dump}");
    assert!(dump.contains("cvm-state"), "{dump}");
    assert!(dump.contains("sector: 4096"), "{dump}");
    assert!(test_passphrase(&sc, &img_s, "key"));
    assert!(!test_passphrase(&sc, &img_s, "wrong"));
    let (_, vk) = luks2::open(&mut f, KEY).unwrap();
    assert_eq!(dumped_volume_key(&sc, &img_s), vk.to_vec());
    assert!(matches!(
        luks2::open(&mut f, b"not-the-key-0123456789abcdef!!!!"),
        Err(Luks2Error::WrongKey)
    ));
}

#[test]
fn our_pbkdf2_header_passes_cryptsetup() {
    ours_passes_cryptsetup(FormatOptions::default().kdf);
}

#[test]
fn our_argon2id_header_passes_cryptsetup() {
    ours_passes_cryptsetup(Kdf::ARGON2ID_DEFAULT);
}

fn cryptsetups_opens_with_ours(pbkdf: &[&str], expect: fn(&Kdf) -> bool) {
    let sc = Scratch::new();
    sc.image("cs.img", 64 << 20);
    let img_s = sc.s("cs.img");
    let mut args = vec![
        "luksFormat",
        "--type",
        "luks2",
        "--sector-size",
        "4096",
        "--batch-mode",
        "--key-file",
    ];
    let key = sc.s("key");
    args.push(&key);
    args.extend_from_slice(pbkdf);
    args.push(&img_s);
    ok(&cryptsetup(&args));
    let mut f = rw(&sc.path("cs.img"));
    assert_eq!(luks2::probe(&mut f).unwrap(), Kind::Luks2);
    let (h, vk) = luks2::open(&mut f, KEY).unwrap();
    assert!(expect(&h.keyslots()[0].kdf), "{:?}", h.keyslots()[0].kdf);
    assert_eq!(dumped_volume_key(&sc, &img_s), vk.to_vec());
    let s = h.segment();
    assert_eq!(
        (s.offset, s.sector_size, s.iv_tweak, s.size),
        (16 << 20, 4096, 0, None)
    );
    assert!(matches!(
        luks2::open(&mut f, b"wrong"),
        Err(Luks2Error::WrongKey)
    ));
}

#[test]
fn cryptsetup_pbkdf2_header_opens_with_ours() {
    cryptsetups_opens_with_ours(
        &["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"],
        |k| matches!(k, Kdf::Pbkdf2 { iterations: 1000 }),
    );
}

/// Argon2id, cryptsetup's default KDF, at forced low costs (2 lanes, so lanes > 1 are covered;
/// cryptsetup caps lanes at the CPU count, 2 here)
/// to keep the debug-build test fast.
#[test]
fn cryptsetup_argon2id_header_opens_with_ours() {
    cryptsetups_opens_with_ours(
        &[
            "--pbkdf",
            "argon2id",
            "--pbkdf-force-iterations",
            "4",
            "--pbkdf-memory",
            "32768",
            "--pbkdf-parallel",
            "2",
        ],
        |k| {
            matches!(
                k,
                Kdf::Argon2 {
                    id: true,
                    time: 4,
                    memory: 32768,
                    cpus: 2
                }
            )
        },
    );
}

/// Deterministic filler (xorshift64*).
fn pattern(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

#[test]
fn data_encrypted_by_us_is_what_cryptsetup_reencrypt_reads() {
    let sc = Scratch::new();
    let size = 20u64 << 20;
    let img = sc.image("data.img", size);
    let img_s = sc.s("data.img");
    let mut f = rw(&img);
    let h = luks2::format(&mut f, size, KEY, &FormatOptions::default()).unwrap();
    let (_, vk1) = luks2::open(&mut f, KEY).unwrap();
    let seg = h.segment().clone();
    let data_len = seg.data_size(size) as usize;
    let plain = pattern(data_len);
    let mut cipher = plain.clone();
    seg.crypt(&vk1, 0, &mut cipher, true).unwrap();
    f.write_all_at(&cipher, seg.offset).unwrap();
    drop(f);

    // cryptsetup decrypts with the old key and re-encrypts with a new one, in userspace.
    ok(&cryptsetup(&[
        "reencrypt",
        "--force-offline-reencrypt",
        "--batch-mode",
        "--key-file",
        &sc.s("key"),
        "--pbkdf",
        "pbkdf2",
        "--pbkdf-force-iterations",
        "1000",
        &img_s,
    ]));

    let mut f = rw(&img);
    let (h2, vk2) = luks2::open(&mut f, KEY).unwrap();
    assert_ne!(
        vk1.to_vec(),
        vk2.to_vec(),
        "reencrypt must change the volume key"
    );
    assert_eq!(dumped_volume_key(&sc, &img_s), vk2.to_vec());
    let seg2 = h2.segment().clone();
    assert_eq!(seg2.sector_size, 4096);
    assert_eq!(seg2.offset, seg.offset);
    let mut back = vec![0u8; data_len];
    f.read_exact_at(&mut back, seg2.offset).unwrap();
    assert_ne!(back, cipher);
    seg2.crypt(&vk2, 0, &mut back, false).unwrap();
    assert!(
        back == plain,
        "data decrypted with the new key differs from what we wrote"
    );
    // A sector taken in the middle decrypts on its own (IV from its position).
    let at = 5 * 4096u64;
    let mut one = vec![0u8; 4096];
    f.read_exact_at(&mut one, seg2.offset + at).unwrap();
    seg2.crypt(&vk2, at, &mut one, false).unwrap();
    assert!(seg2.crypt(&vk2, 512, &mut one, false).is_err());
    assert_eq!(&one[..], &plain[at as usize..at as usize + 4096]);
}

fn cvmctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cvmctl"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn cvmctl_state_format_check_dump() {
    let sc = Scratch::new();
    sc.image("c.img", 32 << 20);
    let img = sc.s("c.img");
    let key = sc.s("key");
    let out = cvmctl(&["state", "format", &img, "--key-file", &key]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("cipher: aes-xts-plain64"), "{text}");
    assert!(test_passphrase(&sc, &img, "key"));

    let out = cvmctl(&["state", "check", &img, "--key-file", &key]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let uuid = text.lines().find_map(|l| l.strip_prefix("uuid: ")).unwrap();
    assert!(ok(&cryptsetup(&["luksUUID", &img])).contains(uuid));
    assert!(text.contains("data offset: 16777216"), "{text}");
    assert!(text.contains("keyslot 0: pbkdf2"), "{text}");

    let out = cvmctl(&["state", "check", &img, "--key-file", &sc.s("wrong")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("opens no keyslot"));

    let out = cvmctl(&["state", "dump", &img]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(uuid));

    // Not blank: refused, unless --force (then a new UUID).
    let out = cvmctl(&["state", "format", &img, "--key-file", &key]);
    assert!(!out.status.success());
    let out = cvmctl(&[
        "state",
        "format",
        &img,
        "--key-file",
        &key,
        "--pbkdf",
        "argon2id",
        "--force",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(uuid));
    assert!(test_passphrase(&sc, &img, "key"));

    // A tampered header fails check (and dump) with a reason.
    let f = rw(&sc.path("c.img"));
    f.write_all_at(b"X", 5000).unwrap();
    let out = cvmctl(&["state", "check", &img, "--key-file", &key]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("checksum"));
    assert!(!cvmctl(&["state", "dump", &img]).status.success());
}

/// What an operator may do with cryptsetup to a state disk and we must still open: a second
/// keyslot (argon2id), a label change and a keyslot priority (each bumps the seqid), a token.
#[test]
fn our_header_after_cryptsetup_maintenance_still_opens() {
    let sc = Scratch::new();
    let img = sc.image("m.img", 64 << 20);
    let img_s = sc.s("m.img");
    let mut f = rw(&img);
    luks2::format(&mut f, 64 << 20, KEY, &FormatOptions::default()).unwrap();
    let (_, vk) = luks2::open(&mut f, KEY).unwrap();
    std::fs::write(sc.path("second"), b"second-key-0123456789abcdef!!!!!").unwrap();
    ok(&cryptsetup(&[
        "luksAddKey",
        "--batch-mode",
        "--key-file",
        &sc.s("key"),
        "--pbkdf",
        "argon2id",
        "--pbkdf-force-iterations",
        "4",
        "--pbkdf-memory",
        "32768",
        &img_s,
        &sc.s("second"),
    ]));
    ok(&cryptsetup(&["config", "--label", "recovered", &img_s]));
    ok(&cryptsetup(&[
        "config",
        "--priority",
        "prefer",
        "--key-slot",
        "1",
        &img_s,
    ]));
    std::fs::write(
        sc.path("token.json"),
        br#"{"type":"cvm-note","keyslots":["0"],"note":"kbs"}"#,
    )
    .unwrap();
    ok(&cryptsetup(&[
        "token",
        "import",
        "--json-file",
        &sc.s("token.json"),
        &img_s,
    ]));
    let (h, vk0) = luks2::open(&mut f, KEY).unwrap();
    assert_eq!(vk0.to_vec(), vk.to_vec());
    assert_eq!(h.label(), "recovered");
    assert!(h.seqid() > 1);
    assert_eq!(h.keyslots().len(), 2);
    assert_eq!(h.keyslots()[1].priority, 2);
    assert_eq!(h.tokens(), 1);
    let (_, vk1) = luks2::open(&mut f, b"second-key-0123456789abcdef!!!!!").unwrap();
    assert_eq!(vk1.to_vec(), vk.to_vec());
}

/// `[state] integrity = true`: our header is what `cryptsetup luksFormat --integrity
/// hmac-sha256 --sector-size 4096` writes. cryptsetup cannot write one here (it formats
/// dm-integrity through the kernel at luksFormat, and the host has no device-mapper), so the
/// check is one way: cryptsetup reads ours, shows the integrity type, opens the keyslot and
/// dumps the same 96-byte volume key (XTS key, then HMAC key).
#[test]
fn our_integrity_header_passes_cryptsetup() {
    let sc = Scratch::new();
    let img = sc.image("integrity.img", 64 << 20);
    let mut f = rw(&img);
    let opts = FormatOptions {
        integrity: true,
        label: "cvm-state".into(),
        ..FormatOptions::default()
    };
    let h = luks2::format(&mut f, 64 << 20, KEY, &opts).unwrap();
    let img_s = sc.s("integrity.img");
    let dump = ok(&cryptsetup(&["luksDump", &img_s]));
    assert!(dump.contains(h.uuid()), "{dump}");
    assert!(dump.contains("integrity: hmac(sha256)"), "{dump}");
    assert!(dump.contains("sector: 4096"), "{dump}");
    assert!(dump.contains("Key:        768 bits"), "{dump}");
    assert!(test_passphrase(&sc, &img_s, "key"));
    assert!(!test_passphrase(&sc, &img_s, "wrong"));
    let (h2, vk) = luks2::open(&mut f, KEY).unwrap();
    assert_eq!(h2.segment().integrity.as_deref(), Some("hmac(sha256)"));
    assert_eq!(vk.len(), 96);
    assert_eq!(dumped_volume_key_of(&sc, &img_s, 96), vk.to_vec());
}

/// The host tool: `cvmctl state format --integrity`, then `check` and `dump` accept it.
#[test]
fn cvmctl_formats_and_checks_an_integrity_disk() {
    let sc = Scratch::new();
    sc.image("cvmctl.img", 64 << 20);
    let cvmctl = env!("CARGO_BIN_EXE_cvmctl");
    let run = |args: &[&str]| {
        let out = Command::new(cvmctl).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "cvmctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (img, key) = (sc.s("cvmctl.img"), sc.s("key"));
    let formatted = run(&["state", "format", "--integrity", "--key-file", &key, &img]);
    assert!(formatted.contains("integrity: hmac(sha256)"), "{formatted}");
    let checked = run(&["state", "check", "--key-file", &key, &img]);
    assert!(checked.contains("integrity: hmac(sha256)"), "{checked}");
    assert!(checked.contains("key: ok"), "{checked}");
    let dumped = run(&["state", "dump", &img]);
    assert!(dumped.contains("integrity: hmac(sha256)"), "{dumped}");
    let dump = ok(&cryptsetup(&["luksDump", &img]));
    assert!(dump.contains("integrity: hmac(sha256)"), "{dump}");
}
