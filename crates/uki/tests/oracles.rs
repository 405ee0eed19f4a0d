//! Our PE reader, UKI writer and PCR 11 prediction against independent tools on real files:
//! pesign (Authenticode SHA-1/SHA-256), a byte-range cut piped through coreutils' sha*sum
//! (Authenticode SHA-384/512, where the image's sections are contiguous), objdump (section
//! layout), the checksums the stub's and kernel's own build tools wrote, and
//! `systemd-measure calculate` 252 (PCR 11 in every bank).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::*;
use cvm_uki::hash::hex;
use cvm_uki::pe::{PeImage, pe_checksum, section_contents};
use cvm_uki::predict::pcr11_events;
use cvm_uki::{HashAlg, Uki, UkiInputs, authenticode, boot_pcrs, predict};

fn pesign_hash(path: &Path, alg: HashAlg) -> String {
    let out = run(Command::new("pesign")
        .args(["-h", "-d", alg.name(), "-i"])
        .arg(path));
    out.lines()
        .find_map(|l| l.strip_prefix("hash: "))
        .unwrap_or_else(|| panic!("no hash in pesign's output {out:?}"))
        .trim()
        .to_string()
}

/// The Authenticode digest computed without our parser: offsets from the DOS header's e_lfanew
/// (read with od), the image cut with head/tail and hashed with coreutils. Valid for images
/// whose sections follow each other without gaps from SizeOfHeaders on (the stub, the kernel,
/// our UKIs), which is why the test checks it against pesign first.
fn cut_hash(path: &Path, alg: HashAlg) -> String {
    let script = r#"
f="$1"; sum="$2"
pe=$(od -An -tu4 -j60 -N4 "$f" | tr -d ' ')
cs=$((pe + 24 + 64)); cd=$((pe + 24 + 144))
certsize=$(od -An -tu4 -j$((cd + 4)) -N4 "$f" | tr -d ' ')
len=$(wc -c < "$f")
{ head -c $cs "$f"; tail -c +$((cs + 5)) "$f" | head -c $((cd - cs - 4));
  tail -c +$((cd + 9)) "$f" | head -c $((len - cd - 8 - certsize)); } | "$sum" | cut -d' ' -f1
"#;
    run(Command::new("sh")
        .args(["-c", script, "sh"])
        .arg(path)
        .arg(format!("{}sum", alg.name())))
    .trim()
    .to_string()
}

fn check_authenticode(path: &Path) {
    let data = read(path);
    for alg in [HashAlg::Sha1, HashAlg::Sha256] {
        assert_eq!(
            hex(&authenticode(&data, alg).unwrap()),
            pesign_hash(path, alg),
            "{} {alg} vs pesign",
            path.display()
        );
    }
    // The cut oracle agrees with pesign, so it can stand in for it where pesign has no digest.
    assert_eq!(
        cut_hash(path, HashAlg::Sha256),
        pesign_hash(path, HashAlg::Sha256)
    );
    for alg in [HashAlg::Sha384, HashAlg::Sha512] {
        assert_eq!(
            hex(&authenticode(&data, alg).unwrap()),
            cut_hash(path, alg),
            "{} {alg} vs cut",
            path.display()
        );
    }
}

#[test]
fn authenticode_of_the_stub_matches_pesign() {
    check_authenticode(&stub_path());
}

#[test]
fn authenticode_of_the_signed_kernel_matches_pesign() {
    // Debian's vmlinuz is signed: the certificate table must be left out.
    let k = kernel();
    assert_ne!(
        PeImage::parse(&k).unwrap().cert_table.1,
        0,
        "kernel is signed"
    );
    check_authenticode(&kernel_path());
}

#[test]
fn checksum_matches_the_one_the_stub_and_kernel_were_built_with() {
    for path in [stub_path(), kernel_path()] {
        let d = read(&path);
        let img = PeImage::parse(&d).unwrap();
        assert_ne!(img.checksum, 0, "{} has a checksum", path.display());
        assert_eq!(
            pe_checksum(&d, img.checksum_offset),
            img.checksum,
            "{}",
            path.display()
        );
    }
}

#[test]
fn uki_is_reproducible_and_every_input_byte_counts() {
    let t = TestInputs::load();
    let start = Instant::now();
    let a = t.build();
    let elapsed = start.elapsed();
    let b = t.build();
    assert_eq!(a.bytes, b.bytes, "two builds differ");
    eprintln!(
        "UKI: {} bytes, built in {elapsed:?} (debug build)",
        a.bytes.len()
    );

    // One byte changed in any input changes the UKI (and its Authenticode digest).
    let digest = authenticode(&a.bytes, HashAlg::Sha256).unwrap();
    let flip = |v: &[u8], at: usize| {
        let mut v = v.to_vec();
        v[at] ^= 0x01;
        v
    };
    let stub2 = flip(&t.stub, 0x4000 + 17); // in .text
    let kernel2 = flip(&t.kernel, t.kernel.len() / 2);
    let initrd2 = flip(&t.initrd, t.initrd.len() - 1);
    let osrel2 = flip(TEST_OSREL, 0);
    let cmdline2 = flip(TEST_CMDLINE, TEST_CMDLINE.len() - 1);
    let variants: Vec<(&str, UkiInputs<'_>)> = vec![
        (
            "stub",
            UkiInputs {
                stub: &stub2,
                ..t.inputs()
            },
        ),
        (
            "kernel",
            UkiInputs {
                linux: &kernel2,
                ..t.inputs()
            },
        ),
        (
            "initrd",
            UkiInputs {
                initrd: Some(&initrd2),
                ..t.inputs()
            },
        ),
        (
            "osrel",
            UkiInputs {
                osrel: Some(&osrel2),
                ..t.inputs()
            },
        ),
        (
            "cmdline",
            UkiInputs {
                cmdline: Some(&cmdline2),
                ..t.inputs()
            },
        ),
    ];
    for (what, inputs) in variants {
        let u = Uki::build(&inputs).unwrap();
        assert_ne!(
            u.bytes, a.bytes,
            "changing the {what} did not change the UKI"
        );
        assert_ne!(
            authenticode(&u.bytes, HashAlg::Sha256).unwrap(),
            digest,
            "changing the {what} did not change the Authenticode digest"
        );
    }
}

#[test]
fn uki_layout_matches_objdump_and_digest_matches_pesign() {
    let t = TestInputs::load();
    let uki = t.build();
    let dir = TempDir::new("layout");
    let path = dir.write("uki.efi", &uki.bytes);

    // objdump -h: every section of ours at our VMA, size and file offset, the stub's first.
    let out = run(Command::new("objdump").arg("-h").arg(&path));
    let rows: Vec<(String, u64, u64, u64)> = out
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            if w.len() == 7 && w[0].parse::<u32>().is_ok() {
                let h = |s: &str| u64::from_str_radix(s, 16).unwrap();
                Some((w[1].to_string(), h(w[2]), h(w[3]), h(w[5])))
            } else {
                None
            }
        })
        .collect();
    let stub_img = PeImage::parse(&t.stub).unwrap();
    let n_stub = stub_img.sections.len();
    assert_eq!(uki.sections.len(), 4);
    assert_eq!(
        rows.len(),
        n_stub + uki.sections.len(),
        "objdump -h:\n{out}"
    );
    for (row, s) in rows.iter().zip(&stub_img.sections) {
        assert_eq!(row.0, s.name);
        assert_eq!(row.2, s.virtual_address as u64, "{}", s.name);
    }
    assert!(rows.iter().any(|r| r.0 == ".sdmagic") && rows.iter().any(|r| r.0 == ".sbat"));
    let last_stub_end = stub_img
        .sections
        .iter()
        .map(|s| s.virtual_address as u64 + s.virtual_size as u64)
        .max()
        .unwrap();
    for (row, p) in rows[n_stub..].iter().zip(&uki.sections) {
        assert_eq!(row.0, p.name);
        assert_eq!(row.1, p.virtual_size as u64, "{} size", p.name);
        assert_eq!(row.2, p.virtual_address as u64, "{} VMA", p.name);
        assert_eq!(
            row.3, p.pointer_to_raw_data as u64,
            "{} file offset",
            p.name
        );
        assert!(row.2 >= last_stub_end, "{} overlaps the stub", p.name);
        assert_eq!(row.2 % stub_img.section_alignment as u64, 0);
    }
    for w in rows[n_stub..].windows(2) {
        assert!(w[1].2 >= w[0].2 + w[0].1, "{} overlaps {}", w[1].0, w[0].0);
    }

    // objdump -p: SizeOfImage, checksum and timestamp as we wrote them.
    let p = run(Command::new("objdump").arg("-p").arg(&path));
    let field = |name: &str| {
        p.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in objdump -p"))
            .trim()
            .to_string()
    };
    let last = uki.sections.last().unwrap();
    let end = last.virtual_address as u64 + last.virtual_size as u64;
    let align = stub_img.section_alignment as u64;
    assert_eq!(
        u64::from_str_radix(&field("SizeOfImage"), 16).unwrap(),
        end.div_ceil(align) * align
    );
    assert_eq!(field("Time/Date"), "Thu Jan  1 00:00:00 1970");
    let img = PeImage::parse(&uki.bytes).unwrap();
    assert_eq!(
        u64::from_str_radix(&field("CheckSum"), 16).unwrap(),
        img.checksum as u64
    );

    // Contents read back, and the Authenticode digest as pesign and the cut oracle see it.
    assert_eq!(
        section_contents(&uki.bytes, ".linux").unwrap().unwrap(),
        t.kernel
    );
    assert_eq!(
        section_contents(&uki.bytes, ".initrd").unwrap().unwrap(),
        t.initrd
    );
    check_authenticode(&path);
    // sbverify reads it as an (unsigned) PE too.
    let sb = Command::new("sbverify")
        .arg("--list")
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&sb.stdout).to_string() + &String::from_utf8_lossy(&sb.stderr);
    assert!(
        text.contains("No signature table present"),
        "sbverify: {text}"
    );
}

/// Runs `systemd-measure calculate` (252) on the files and returns its PCR 11 for `bank`.
/// `--phase=` (empty) asks for the value after the stub alone, with no systemd-pcrphase word.
fn systemd_measure(dir: &TempDir, args: &[(&str, &[u8])], bank: HashAlg) -> String {
    let mut cmd = Command::new("/usr/lib/systemd/systemd-measure");
    cmd.args(["calculate", "--phase="]);
    cmd.arg(format!("--bank={}", bank.name()));
    for (opt, data) in args {
        let p = dir.write(&opt[2..], data);
        cmd.arg(format!("{opt}={}", p.display()));
    }
    let out = run(&mut cmd);
    let prefix = format!("11:{}=", bank.name());
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with(&prefix)).collect();
    assert_eq!(lines.len(), 1, "systemd-measure output {out:?}");
    lines[0][prefix.len()..].to_string()
}

#[test]
fn pcr11_matches_systemd_measure_in_every_bank() {
    let t = TestInputs::load();
    let uki = t.build();
    let dir = TempDir::new("measure");
    let args: [(&str, &[u8]); 4] = [
        ("--linux", &t.kernel),
        ("--osrel", TEST_OSREL),
        ("--cmdline", TEST_CMDLINE),
        ("--initrd", &t.initrd),
    ];
    for bank in HashAlg::ALL {
        let ours = boot_pcrs(&uki.bytes, bank, predict::BootPath::QemuKernel).unwrap();
        assert_eq!(
            hex(&ours.pcr11),
            systemd_measure(&dir, &args, bank),
            "{bank}"
        );
    }

    // A UKI with only .linux and .cmdline: systemd-measure sees the same two sections.
    let small = Uki::build(&UkiInputs {
        cmdline: Some(b"x"),
        ..UkiInputs::new(&t.stub, &t.kernel)
    })
    .unwrap();
    let ev = pcr11_events(&small.bytes, HashAlg::Sha256).unwrap();
    assert_eq!(ev.len(), 4);
    let ours = predict::replay(&ev, HashAlg::Sha256);
    assert_eq!(
        hex(&ours[11]),
        systemd_measure(
            &dir,
            &[("--linux", &t.kernel), ("--cmdline", b"x")],
            HashAlg::Sha256
        )
    );
}

#[test]
fn pcr11_follows_the_stubs_order_not_the_files() {
    // systemd-measure hashes in systemd's order whatever the order of its options, and so must
    // we whatever the order of the sections in the image: swapping two payloads' contents
    // changes PCR 11.
    let t = TestInputs::load();
    let a = t.build();
    let b = Uki::build(&UkiInputs {
        osrel: Some(TEST_CMDLINE),
        cmdline: Some(TEST_OSREL),
        ..t.inputs()
    })
    .unwrap();
    let pa = boot_pcrs(&a.bytes, HashAlg::Sha256, predict::BootPath::QemuKernel).unwrap();
    let pb = boot_pcrs(&b.bytes, HashAlg::Sha256, predict::BootPath::QemuKernel).unwrap();
    assert_ne!(pa.pcr11, pb.pcr11);
    assert_eq!(pa.pcr12, vec![0u8; 32]);
}
