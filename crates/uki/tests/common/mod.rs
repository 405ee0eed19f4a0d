//! Shared helpers of the integration tests: input files, a reproducible test initrd, temporary
//! directories and running the oracle tools. A missing input or tool fails the test (with the
//! package to install), it never skips it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use cvm_uki::{Uki, UkiInputs};

/// The systemd-stub (Debian 12: systemd-boot-efi 252). `CVM_UKI_STUB` overrides it.
pub fn stub_path() -> PathBuf {
    std::env::var_os("CVM_UKI_STUB")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/lib/systemd/boot/efi/linuxx64.efi.stub".into())
}

/// The guest kernel (Debian 12 cloud kernel 6.1, fetched by scripts/setup.sh into .cache).
/// `CVM_UKI_KERNEL` overrides it.
pub fn kernel_path() -> PathBuf {
    std::env::var_os("CVM_UKI_KERNEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/kernel/vmlinuz")
        })
}

/// busybox-static's binary, the test initrd's only program.
pub const BUSYBOX: &str = "/bin/busybox";

pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}); the tests need the systemd-boot-efi and busybox-static \
             packages and the kernel from scripts/setup.sh",
            path.display()
        )
    })
}

pub fn stub() -> Vec<u8> {
    read(&stub_path())
}

pub fn kernel() -> Vec<u8> {
    read(&kernel_path())
}

/// Runs `cmd`, fails the test unless it exits 0, returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is the tool installed?)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("tool output is UTF-8")
}

/// A directory under the system's temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "cvm-uki-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    pub fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, data).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("CVM_UKI_KEEP_TMP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// One entry of a cpio archive.
pub enum Entry<'a> {
    Dir(&'a str),
    File(&'a str, u32, &'a [u8]),
    CharDev(&'a str, u32, u32, u32),
}

/// A cpio "newc" archive (what the kernel unpacks as initramfs) with fixed metadata: owner 0,
/// mtime 0, inode numbers in order. The same entries give the same bytes.
pub fn cpio_newc(entries: &[Entry<'_>]) -> Vec<u8> {
    fn header(out: &mut Vec<u8>, ino: u32, mode: u32, rdev: (u32, u32), name: &str, data: &[u8]) {
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            1, // nlink
            0, // mtime
            data.len() as u32,
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // check
        ];
        out.extend_from_slice(b"070701");
        for f in fields {
            out.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
        out.extend_from_slice(data);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let ino = i as u32 + 1;
        match e {
            Entry::Dir(n) => header(&mut out, ino, 0o040755, (0, 0), n, &[]),
            Entry::File(n, mode, data) => header(&mut out, ino, 0o100000 | mode, (0, 0), n, data),
            Entry::CharDev(n, mode, maj, min) => {
                header(&mut out, ino, 0o020000 | mode, (*maj, *min), n, &[])
            }
        }
    }
    header(&mut out, 0, 0, (0, 0), "TRAILER!!!", &[]);
    out
}

pub const EVENTLOG_BEGIN: &str = "=== CVM-UKI EVENTLOG BEGIN ===";
pub const EVENTLOG_END: &str = "=== CVM-UKI EVENTLOG END ===";
pub const PCRS_BEGIN: &str = "=== CVM-UKI PCRS BEGIN ===";
pub const PCRS_END: &str = "=== CVM-UKI PCRS END ===";

/// The test initrd's /init: mounts sysfs and securityfs, prints the firmware's event log
/// (base64) and every PCR of every bank between markers, powers off. The TPM drivers
/// (tpm_crb, tpm_tis) are built into Debian's 6.1 cloud kernel (modules.builtin), so no module
/// is loaded.
pub fn init_script() -> String {
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t securityfs securityfs /sys/kernel/security
i=0
while [ ! -e /sys/kernel/security/tpm0/binary_bios_measurements ] && [ $i -lt 100 ]; do
  sleep 0.1; i=$((i+1))
done
echo "{EVENTLOG_BEGIN}"
base64 < /sys/kernel/security/tpm0/binary_bios_measurements
echo "{EVENTLOG_END}"
echo "{PCRS_BEGIN}"
for d in /sys/class/tpm/tpm0/pcr-*; do
  b=${{d##*/pcr-}}
  n=0
  while [ $n -lt 24 ]; do
    echo "PCR $b $n $(cat $d/$n)"
    n=$((n+1))
  done
done
echo "{PCRS_END}"
poweroff -f
"#
    )
}

/// The test initrd: busybox-static, /init, /dev/console. Reproducible.
pub fn test_initrd() -> Vec<u8> {
    let busybox = read(Path::new(BUSYBOX));
    let init = init_script();
    cpio_newc(&[
        Entry::Dir("bin"),
        Entry::Dir("dev"),
        Entry::CharDev("dev/console", 0o600, 5, 1),
        Entry::Dir("proc"),
        Entry::Dir("sys"),
        Entry::File("bin/busybox", 0o755, &busybox),
        Entry::File("init", 0o755, init.as_bytes()),
    ])
}

pub const TEST_OSREL: &[u8] =
    b"NAME=\"cvm-uki test\"\nID=cvm-uki-test\nVERSION_ID=1\nPRETTY_NAME=\"cvm-uki test UKI\"\n";
/// With a tab inside and a newline at the end, as a file written by `echo` has: systemd-stub
/// turns control characters into spaces before it hands the line on (and Linux measures that).
pub const TEST_CMDLINE: &[u8] = b"console=ttyS0\tquiet loglevel=1 panic=-1\n";

/// The inputs of the test UKI: (stub, kernel, initrd).
pub struct TestInputs {
    pub stub: Vec<u8>,
    pub kernel: Vec<u8>,
    pub initrd: Vec<u8>,
}

impl TestInputs {
    pub fn load() -> TestInputs {
        TestInputs {
            stub: stub(),
            kernel: kernel(),
            initrd: test_initrd(),
        }
    }

    pub fn inputs(&self) -> UkiInputs<'_> {
        let mut i = UkiInputs::new(&self.stub, &self.kernel);
        i.osrel = Some(TEST_OSREL);
        i.cmdline = Some(TEST_CMDLINE);
        i.initrd = Some(&self.initrd);
        i
    }

    pub fn build(&self) -> Uki {
        Uki::build(&self.inputs()).expect("test UKI builds")
    }
}

/// Parses `PCR <bank> <n> <hex>` lines into (bank, n, bytes).
pub fn parse_pcr_lines(text: &str) -> Vec<(String, u32, Vec<u8>)> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            if w.next()? != "PCR" {
                return None;
            }
            let bank = w.next()?.to_string();
            let n = w.next()?.parse().ok()?;
            let hex = w.next()?;
            Some((bank, n, unhex(hex)?))
        })
        .collect()
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The text between two marker lines of a serial log (markers excluded), `\r` removed.
pub fn between<'a>(log: &'a str, begin: &str, end: &str) -> Option<&'a str> {
    let s = log.find(begin)? + begin.len();
    let e = s + log[s..].find(end)?;
    Some(&log[s..e])
}

/// `sha256 <hex> <what>` lines naming the test UKI's inputs and the UKI itself, so a fixture
/// says exactly what was booted.
pub fn inputs_manifest(t: &TestInputs, uki: &[u8]) -> String {
    use cvm_uki::HashAlg;
    use cvm_uki::hash::hex;
    let h = |d: &[u8]| hex(&HashAlg::Sha256.digest(d));
    format!(
        "sha256 {} stub {}\nsha256 {} kernel {}\nsha256 {} busybox {}\nsha256 {} initrd (tests/common test_initrd)\nsha256 {} uki\n",
        h(&t.stub),
        stub_path().display(),
        h(&t.kernel),
        std::fs::canonicalize(kernel_path())
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default(),
        h(&read(Path::new(BUSYBOX))),
        BUSYBOX,
        h(&t.initrd),
        h(uki),
    )
}
