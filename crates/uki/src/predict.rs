//! Predictions of the PCRs 4, 9, 11 and 12 after OVMF boots a UKI, with the events that make
//! them, so that a verifier can replay a firmware log against them and name the first event
//! that differs.
//!
//! Who measures what (each checked against a real boot: OVMF edk2-stable202211 as Debian 12's
//! `ovmf` 2022.11-6 builds it, systemd-stub 252, Linux 6.1; see `tests/qemu_boot.rs` and the
//! fixture in `tests/fixtures`):
//!
//! * **PCR 4** (firmware, TCG PC Client PFP 1.05, 3.3.4.5 and 10.4.4): edk2's `Tcg2Dxe` on the
//!   first ReadyToBoot signal measures `EV_EFI_ACTION` "Calling EFI Application from Boot
//!   Option" and then `EV_SEPARATOR` (digest of four zero bytes) into PCRs 0–7; edk2's
//!   `DxeTpm2MeasureBootLib` measures every PE image that `LoadImage()` loads from outside the
//!   firmware volume as `EV_EFI_BOOT_SERVICES_APPLICATION` with its Authenticode digest. That
//!   is first the UKI and then the kernel, because systemd-stub 252 (`linux.c`, `linux_exec`)
//!   hands `.linux` to `LoadImage()` from memory for a kernel with an EFI stub like 6.1's (the
//!   real logs show the kernel's own `EV_EFI_BOOT_SERVICES_APPLICATION`, digest = the
//!   Authenticode digest of `.linux`, signature table excluded). Where the ReadyToBoot pair
//!   falls depends on the boot path, see [`BootPath`]. The full order seen in both boots:
//!   PCR 4 (UKI, action, separator — or action, separator, UKI), the PCR 11 sections, PCR 4
//!   the kernel, PCR 9 LoadOptions, PCR 9 initrd.
//! * **PCR 9**: Linux's EFI stub (6.1 as Debian builds `6.1.0-57-cloud-amd64`) measures, as
//!   `EV_EVENT_TAG` events (TCG PFP 10.4.1), first its `LoadOptions` — the command line
//!   systemd-stub hands it, see [`stub_load_options`] — (tagged event id 0x8F3B22ED, data
//!   "LOADED_IMAGE::LoadOptions"), then the initrd it gets through the
//!   `LINUX_INITRD_MEDIA_GUID` `LoadFile2` protocol that systemd-stub installs for `.initrd`
//!   (id 0x8F3B22EC, "Linux initrd"), each with the digest of the bytes. Older kernels lack
//!   one or both; for a kernel without the LoadOptions event set
//!   [`Profile::linux_measures_load_options`] to false (not checked against a real boot).
//! * **PCR 11**: systemd-stub 252 (`stub.c`) measures each UKI section it knows, in the fixed
//!   order of `enum UnifiedSection` (`.linux`, `.osrel`, `.cmdline`, `.initrd`, `.splash`,
//!   `.dtb`, `.pcrpkey`; `.pcrsig` never), skipping absent or empty ones, as two `EV_IPL`
//!   events: the section name with its NUL, then the section's `VirtualSize` bytes.
//!   `systemd-measure calculate --phase=` (an empty phase: no systemd-pcrphase word, which
//!   our PID 1, not being systemd, never measures) computes the same value.
//! * **PCR 12**: systemd-stub 252 measures a command line that overrides `.cmdline` (only
//!   possible without Secure Boot), credentials (`*.cred`) and, into PCR 13, sysexts from the
//!   ESP. None of these is passed in our boots, so PCR 12 stays all zeros (also with QEMU's
//!   `-kernel`, where OVMF gives the UKI an empty `LoadOptions` string, which the stub ignores).
//!   A prediction with overrides is not provided.

use crate::eventlog::{
    EV_EFI_ACTION, EV_EFI_BOOT_SERVICES_APPLICATION, EV_EVENT_TAG, EV_IPL, EV_NO_ACTION,
    EV_SEPARATOR, Event, EventLog, event_type_name,
};
use crate::hash::{HashAlg, hex};
use crate::pe::{PeError, PeImage, authenticode_parsed};

/// The PCRs this module predicts.
pub const PREDICTED_PCRS: [u32; 4] = [4, 9, 11, 12];

/// The sections systemd-stub 252 measures into PCR 11, in its order.
pub const MEASURED_SECTIONS: [&str; 7] = [
    ".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrpkey",
];

/// edk2's `EFI_CALLING_EFI_APPLICATION`.
pub const CALLING_EFI_APPLICATION: &str = "Calling EFI Application from Boot Option";

/// What went wrong predicting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PredictError {
    #[error("UKI: {0}")]
    Uki(PeError),
    #[error("kernel (.linux): {0}")]
    Kernel(PeError),
    #[error("the UKI has no .linux section")]
    NoLinux,
}

/// How OVMF reaches the UKI; it decides where OVMF's ReadyToBoot events fall in PCR 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootPath {
    /// QEMU's `-kernel uki.efi`: OVMF's `TryRunningQemuKernel()` (PlatformBootManagerLib)
    /// first `LoadImage()`s the file from QEMU's kernel-loader file system (measured), then
    /// signals ReadyToBoot (the action and the separator), then starts it.
    QemuKernel,
    /// A UEFI boot option, e.g. the removable-media path `\EFI\BOOT\BOOTX64.EFI` on a disk:
    /// BDS's `EfiBootManagerBoot()` signals ReadyToBoot before it loads the image.
    BootOption,
}

/// What to predict for: the boot path and the kernel's behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    pub path: BootPath,
    /// Whether Linux's EFI stub measures its LoadOptions into PCR 9 (true for Debian's
    /// 6.1.0-57, seen in its log).
    pub linux_measures_load_options: bool,
}

impl Profile {
    /// `path` with the kernel measuring its LoadOptions, as Debian 12's kernel does.
    pub fn new(path: BootPath) -> Profile {
        Profile {
            path,
            linux_measures_load_options: true,
        }
    }
}

/// One event the boot is expected to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedEvent {
    pub pcr: u32,
    pub event_type: u32,
    /// The digest in the bank of the prediction.
    pub digest: Vec<u8>,
    /// What was measured, for messages.
    pub what: String,
}

impl std::fmt::Display for ExpectedEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PCR {} {} {} ({})",
            self.pcr,
            event_type_name(self.event_type),
            hex(&self.digest),
            self.what
        )
    }
}

/// The predicted PCR values in one bank and the events behind them (in log order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootPcrs {
    pub bank: HashAlg,
    pub pcr4: Vec<u8>,
    pub pcr9: Vec<u8>,
    pub pcr11: Vec<u8>,
    pub pcr12: Vec<u8>,
    pub events: Vec<ExpectedEvent>,
}

impl BootPcrs {
    /// The value of `pcr` (one of [`PREDICTED_PCRS`]).
    pub fn get(&self, pcr: u32) -> Option<&[u8]> {
        match pcr {
            4 => Some(&self.pcr4),
            9 => Some(&self.pcr9),
            11 => Some(&self.pcr11),
            12 => Some(&self.pcr12),
            _ => None,
        }
    }
}

/// The sections systemd-stub measures, as (name, contents as mapped), in its order.
fn measured_sections(uki: &[u8], img: &PeImage) -> Result<Vec<(&'static str, Vec<u8>)>, PeError> {
    let mut out = Vec::new();
    for name in MEASURED_SECTIONS {
        if let Some(s) = img.section(name) {
            let c = s.memory_contents(uki)?;
            if !c.is_empty() {
                out.push((name, c));
            }
        }
    }
    Ok(out)
}

/// The PCR 11 events of systemd-stub 252 for `uki`.
pub fn pcr11_events(uki: &[u8], bank: HashAlg) -> Result<Vec<ExpectedEvent>, PredictError> {
    let img = PeImage::parse(uki).map_err(PredictError::Uki)?;
    pcr11_events_parsed(uki, &img, bank)
}

fn pcr11_events_parsed(
    uki: &[u8],
    img: &PeImage,
    bank: HashAlg,
) -> Result<Vec<ExpectedEvent>, PredictError> {
    let mut ev = Vec::new();
    for (name, contents) in measured_sections(uki, img).map_err(PredictError::Uki)? {
        let mut n = name.as_bytes().to_vec();
        n.push(0);
        ev.push(ExpectedEvent {
            pcr: 11,
            event_type: EV_IPL,
            digest: bank.digest(&n),
            what: format!("section name {name}"),
        });
        ev.push(ExpectedEvent {
            pcr: 11,
            event_type: EV_IPL,
            digest: bank.digest(&contents),
            what: format!("section {name} ({} bytes)", contents.len()),
        });
    }
    Ok(ev)
}

/// The `LoadOptions` systemd-stub 252 gives the kernel for the `.cmdline` section `cmdline`
/// (when nothing overrides it): `xstrn8_to_16()` (UTF-8 up to the first NUL to UCS-2), then
/// `mangle_stub_cmdline()`: whitespace (every character up to 0x20, and 0x7F) at the start and
/// the end is dropped and each one inside becomes a space (runs are kept, not collapsed);
/// NUL-terminated UTF-16LE, and `linux_exec()` sets `LoadOptionsSize` to include the
/// terminator. Checked on a real boot: a `.cmdline` with a tab inside and a newline at the
/// end is measured with a space and without the newline. Non-ASCII command lines are untested.
pub fn stub_load_options(cmdline: &[u8]) -> Vec<u8> {
    let end = cmdline
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(cmdline.len());
    let text = String::from_utf8_lossy(&cmdline[..end]);
    let ws = |u: u16| u <= 0x20 || u == 0x7f;
    let units: Vec<u16> = text.encode_utf16().collect();
    let first = units.iter().position(|&u| !ws(u)).unwrap_or(units.len());
    let last = units.iter().rposition(|&u| !ws(u)).map_or(first, |p| p + 1);
    let mut out = Vec::with_capacity(2 * (last - first) + 2);
    for &u in &units[first..last] {
        let u = if ws(u) { 0x20 } else { u };
        out.extend_from_slice(&u.to_le_bytes());
    }
    out.extend_from_slice(&[0, 0]);
    out
}

/// Every event expected in PCRs 4, 9, 11 and 12 when OVMF boots `uki` by `path` (with the
/// default [`Profile`]), in the order of the log.
pub fn expected_events(
    uki: &[u8],
    bank: HashAlg,
    path: BootPath,
) -> Result<Vec<ExpectedEvent>, PredictError> {
    expected_events_for(uki, bank, &Profile::new(path))
}

/// [`expected_events`] for a [`Profile`].
pub fn expected_events_for(
    uki: &[u8],
    bank: HashAlg,
    profile: &Profile,
) -> Result<Vec<ExpectedEvent>, PredictError> {
    let img = PeImage::parse(uki).map_err(PredictError::Uki)?;
    let linux = img
        .section(".linux")
        .ok_or(PredictError::NoLinux)?
        .memory_contents(uki)
        .map_err(PredictError::Uki)?;
    let uki_app = ExpectedEvent {
        pcr: 4,
        event_type: EV_EFI_BOOT_SERVICES_APPLICATION,
        digest: authenticode_parsed(uki, &img, bank).map_err(PredictError::Uki)?,
        what: "the UKI (Authenticode)".into(),
    };
    let ready_to_boot = [
        ExpectedEvent {
            pcr: 4,
            event_type: EV_EFI_ACTION,
            digest: bank.digest(CALLING_EFI_APPLICATION.as_bytes()),
            what: CALLING_EFI_APPLICATION.into(),
        },
        ExpectedEvent {
            pcr: 4,
            event_type: EV_SEPARATOR,
            digest: bank.digest(&[0, 0, 0, 0]),
            what: "separator".into(),
        },
    ];
    let kimg = PeImage::parse(&linux).map_err(PredictError::Kernel)?;
    let kernel_app = ExpectedEvent {
        pcr: 4,
        event_type: EV_EFI_BOOT_SERVICES_APPLICATION,
        digest: authenticode_parsed(&linux, &kimg, bank).map_err(PredictError::Kernel)?,
        what: "the kernel from .linux (Authenticode)".into(),
    };
    let mut ev = Vec::new();
    match profile.path {
        BootPath::QemuKernel => {
            ev.push(uki_app);
            ev.extend(ready_to_boot);
        }
        BootPath::BootOption => {
            ev.extend(ready_to_boot);
            ev.push(uki_app);
        }
    }
    // The stub measures its sections before it loads the kernel.
    ev.extend(pcr11_events_parsed(uki, &img, bank)?);
    ev.push(kernel_app);
    if profile.linux_measures_load_options
        && let Some(s) = img.section(".cmdline")
    {
        let cmdline = s.memory_contents(uki).map_err(PredictError::Uki)?;
        if !cmdline.is_empty() {
            ev.push(ExpectedEvent {
                pcr: 9,
                event_type: EV_EVENT_TAG,
                digest: bank.digest(&stub_load_options(&cmdline)),
                what: "LOADED_IMAGE::LoadOptions (the .cmdline as UTF-16)".into(),
            });
        }
    }
    if let Some(s) = img.section(".initrd") {
        let initrd = s.memory_contents(uki).map_err(PredictError::Uki)?;
        if !initrd.is_empty() {
            ev.push(ExpectedEvent {
                pcr: 9,
                event_type: EV_EVENT_TAG,
                digest: bank.digest(&initrd),
                what: format!("Linux initrd ({} bytes)", initrd.len()),
            });
        }
    }
    Ok(ev)
}

/// Replays `events` (all of one bank) from the PCRs' reset values ([`crate::eventlog::initial_pcrs`]); returns
/// PCRs 0–23.
pub fn replay(events: &[ExpectedEvent], bank: HashAlg) -> Vec<Vec<u8>> {
    let mut pcrs = crate::eventlog::initial_pcrs(bank);
    for e in events {
        if let Some(p) = pcrs.get_mut(e.pcr as usize) {
            *p = bank.extend(p, &e.digest);
        }
    }
    pcrs
}

/// The predicted PCRs 4, 9, 11, 12 in `bank` after OVMF boots `uki` by `path`.
pub fn boot_pcrs(uki: &[u8], bank: HashAlg, path: BootPath) -> Result<BootPcrs, PredictError> {
    boot_pcrs_for(uki, bank, &Profile::new(path))
}

/// [`boot_pcrs`] for a [`Profile`].
pub fn boot_pcrs_for(
    uki: &[u8],
    bank: HashAlg,
    profile: &Profile,
) -> Result<BootPcrs, PredictError> {
    let events = expected_events_for(uki, bank, profile)?;
    let mut pcrs = replay(&events, bank);
    Ok(BootPcrs {
        bank,
        pcr4: std::mem::take(&mut pcrs[4]),
        pcr9: std::mem::take(&mut pcrs[9]),
        pcr11: std::mem::take(&mut pcrs[11]),
        pcr12: std::mem::take(&mut pcrs[12]),
        events,
    })
}

/// The first difference between the predicted events and a firmware log's events in the
/// predicted PCRs (4, 9, 11, 12; `EV_NO_ACTION` events are not extended and are skipped).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("event {position} of PCRs 4/9/11/12: expected {expected}, the log has {actual}")]
    Differs {
        position: usize,
        expected: Box<ExpectedEvent>,
        actual: String,
    },
    #[error("event {position} of PCRs 4/9/11/12: expected {expected}, the log ends")]
    Missing {
        position: usize,
        expected: Box<ExpectedEvent>,
    },
    #[error("event {position} of PCRs 4/9/11/12: the log has {actual}, not predicted")]
    Unexpected { position: usize, actual: String },
}

fn describe(e: &Event, bank: HashAlg) -> String {
    format!(
        "{} {}",
        e.describe(),
        e.digest(bank)
            .map_or("(no digest in this bank)".into(), hex)
    )
}

/// Compares `expected` (of `bank`) with the log's events in PCRs 4, 9, 11 and 12, in order.
pub fn first_mismatch(
    expected: &[ExpectedEvent],
    log: &EventLog,
    bank: HashAlg,
) -> Option<Mismatch> {
    let actual: Vec<&Event> = log
        .events
        .iter()
        .filter(|e| PREDICTED_PCRS.contains(&e.pcr) && e.event_type != EV_NO_ACTION)
        .collect();
    for (i, want) in expected.iter().enumerate() {
        let Some(got) = actual.get(i) else {
            return Some(Mismatch::Missing {
                position: i,
                expected: Box::new(want.clone()),
            });
        };
        if got.pcr != want.pcr
            || got.event_type != want.event_type
            || got.digest(bank) != Some(want.digest.as_slice())
        {
            return Some(Mismatch::Differs {
                position: i,
                expected: Box::new(want.clone()),
                actual: describe(got, bank),
            });
        }
    }
    actual.get(expected.len()).map(|got| Mismatch::Unexpected {
        position: expected.len(),
        actual: describe(got, bank),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make_log(events: &[(u32, u32, &[u8])]) -> Vec<u8> {
        EventLog::with_events(&[HashAlg::Sha1, HashAlg::Sha256], events).encode()
    }

    fn utf16z(s: &str) -> Vec<u8> {
        let mut v: Vec<u8> = s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
        v.extend_from_slice(&[0, 0]);
        v
    }

    #[test]
    fn load_options_are_mangled_like_systemd_stub() {
        assert_eq!(stub_load_options(b"a b"), utf16z("a b"));
        assert_eq!(stub_load_options(b" \ta\tb  c\n\n"), utf16z("a b  c"));
        assert_eq!(stub_load_options(b"a\0b"), utf16z("a"));
        assert_eq!(stub_load_options(b"\n"), utf16z(""));
        assert_eq!(stub_load_options("é".as_bytes()), utf16z("é"));
    }

    #[test]
    fn first_mismatch_names_extra_and_missing_events() {
        let bank = HashAlg::Sha256;
        let sep = ExpectedEvent {
            pcr: 4,
            event_type: EV_SEPARATOR,
            digest: bank.digest(&[0, 0, 0, 0]),
            what: "separator".into(),
        };
        let log = EventLog::parse(&make_log(&[
            (0, EV_SEPARATOR, &[0, 0, 0, 0]),
            (4, EV_SEPARATOR, &[0, 0, 0, 0]),
            (9, EV_EVENT_TAG, b"x"),
        ]))
        .unwrap();
        // PCR 0 is not compared; the PCR 9 event was not predicted.
        match first_mismatch(std::slice::from_ref(&sep), &log, bank) {
            Some(Mismatch::Unexpected {
                position: 1,
                actual,
            }) => {
                assert!(actual.contains("PCR 9 EV_EVENT_TAG"), "{actual}")
            }
            m => panic!("{m:?}"),
        }
        let two = [sep.clone(), sep.clone(), sep];
        assert!(matches!(
            first_mismatch(&two, &log, bank),
            Some(Mismatch::Differs { position: 1, .. })
        ));
        let pcrs = replay(&two, bank);
        assert_eq!(pcrs[17], vec![0xff; 32]);
        assert_eq!(pcrs[9], vec![0; 32]);
    }
}
