//! dosfstools and mtools as oracles: the images we write are clean, list exactly what we put
//! and read back byte-identical; reproducibility; timestamps; refusals.

mod common;

use common::{TempDir, bytes, fsck_clean, list_all, mcopy, mdir, minfo, parse};
use cvm_fat::{Error, FatImage, FatTime, FatType};
use std::collections::BTreeMap;
use std::time::Instant;

const MIB: u64 = 1 << 20;

/// The files of the round-trip test for a volume with clusters of `cb` bytes: empty, exactly
/// one cluster, one byte more, a multi-MiB file, nested directories, and a directory whose
/// entries span three clusters.
fn fixture(cb: usize, big: usize) -> BTreeMap<String, Vec<u8>> {
    let mut f = BTreeMap::new();
    f.insert("/EFI/BOOT/BOOTX64.EFI".to_string(), bytes(big, 1));
    f.insert("/EFI/BOOT/EMPTY".to_string(), vec![]);
    f.insert("/ONE.CLU".to_string(), bytes(cb, 2));
    f.insert("/ONEPLUS.CLU".to_string(), bytes(cb + 1, 3));
    f.insert("/ONEMINUS.CLU".to_string(), bytes(cb - 1, 4));
    f.insert("/A/B/C/D/E/DEEP.BIN".to_string(), bytes(777, 5));
    f.insert("/EFI/LINUX/X.EFI".to_string(), bytes(4096, 6));
    // `.`, `..` and 2 × (entries per cluster) + 3 files: three clusters.
    let per = cb / 32;
    for i in 0..2 * per + 3 {
        f.insert(format!("/MANY/F{i:05}.DAT"), bytes(i % 50, 100 + i as u64));
    }
    f
}

fn build(size: u64, files: &BTreeMap<String, Vec<u8>>, time: FatTime) -> FatImage {
    let mut img = FatImage::new(size, "CVM ESP", time).unwrap();
    img.add_dir("/EMPTYDIR").unwrap();
    for (p, d) in files {
        img.add_file(p, d.clone()).unwrap();
    }
    img
}

/// All directories implied by the files, plus /EMPTYDIR, in `mdir -/ -b` form.
fn expected_listing(files: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    let mut v = vec!["/EMPTYDIR/".to_string()];
    for p in files.keys() {
        v.push(p.clone());
        let mut dir = p.as_str();
        while let Some((d, _)) = dir.rsplit_once('/') {
            if d.is_empty() {
                break;
            }
            v.push(format!("{d}/"));
            dir = d;
        }
    }
    v.sort();
    v.dedup();
    v
}

fn roundtrip(size: u64, big: usize, want: FatType) {
    let tmp = TempDir::new("roundtrip");
    let probe = FatImage::new(size, "CVM ESP", FatTime::MIN).unwrap();
    assert_eq!(probe.fat_type(), want);
    let files = fixture(probe.cluster_bytes() as usize, big);
    let img = build(size, &files, FatTime::MIN);
    let path = tmp.path("esp.img");
    let data = img.to_vec().unwrap();
    assert_eq!(data.len() as u64, size);
    std::fs::write(&path, &data).unwrap();

    let fsck = fsck_clean(&path);
    let bits = match want {
        FatType::Fat12 => "12 bit entries",
        FatType::Fat16 => "16 bit entries",
        FatType::Fat32 => "32 bit entries",
    };
    assert!(fsck.contains(bits), "{fsck}");
    assert!(fsck.contains("Media byte 0xf8"), "{fsck}");

    assert_eq!(list_all(&path), expected_listing(&files));
    for (p, d) in &files {
        assert_eq!(&mcopy(&path, p, &tmp), d, "{p} differs");
    }
    let listing = mdir(&path, "/EFI/BOOT");
    assert!(
        listing.contains("Volume in drive : is CVM ESP"),
        "{listing}"
    );
    let id = img.volume_id();
    let serial = format!("{:04X}-{:04X}", id >> 16, id & 0xFFFF);
    assert!(listing.contains(&serial), "{serial} not in {listing}");
    let info = minfo(&path);
    assert!(info.contains("media descriptor byte: 0xf8"), "{info}");
    assert!(info.contains("fats: 2"), "{info}");
    assert!(info.contains(&format!("serial number: {id:08X}")), "{info}");

    // Our own decoding agrees: every file's chain is contiguous and as long as its size needs.
    let parsed = parse(&data);
    let cb = parsed.spc * 512;
    for (p, d) in &files {
        let (_, chain) = parsed.chains.iter().find(|(q, _)| q == p).unwrap();
        assert_eq!(chain.len() as u64, (d.len() as u64).div_ceil(cb), "{p}");
        assert!(chain.windows(2).all(|w| w[1] == w[0] + 1), "{p} fragmented");
    }
    let (_, many) = parsed.chains.iter().find(|(q, _)| q == "/MANY").unwrap();
    assert_eq!(many.len(), 3, "/MANY spans three clusters");
}

#[test]
fn roundtrip_fat32() {
    roundtrip(64 * MIB, 5 * MIB as usize, FatType::Fat32);
}

#[test]
fn roundtrip_fat32_4k_clusters() {
    roundtrip(300 * MIB, 3 * MIB as usize, FatType::Fat32);
}

#[test]
fn roundtrip_fat16() {
    roundtrip(16 * MIB, 3 * MIB as usize, FatType::Fat16);
}

#[test]
fn roundtrip_fat12() {
    roundtrip(2 * MIB, MIB as usize, FatType::Fat12);
}

/// The fields fatgen103 and UEFI require, read straight from the bytes.
#[test]
fn boot_sector_fsinfo_and_fats() {
    let files = fixture(512, 100_000);
    let img = build(64 * MIB, &files, FatTime::MIN);
    let data = img.to_vec().unwrap();
    let s = |n: usize| &data[n * 512..(n + 1) * 512];
    let p = parse(&data);
    assert_eq!(p.bits, 32);
    assert_eq!(&s(0)[510..], &[0x55, 0xAA]);
    assert_eq!(s(0)[0], 0xEB);
    assert_eq!(s(0)[2], 0x90);
    assert_eq!(s(0)[21], 0xF8, "media");
    assert_eq!(p.fats, 2);
    assert_eq!(p.root_entries, 0);
    assert_eq!(&s(0)[17..19], &[0, 0], "RootEntCnt 0 on FAT32");
    assert_eq!(&s(0)[19..21], &[0, 0], "TotSec16 0 on FAT32");
    assert_eq!(&s(0)[22..24], &[0, 0], "FATSz16 0 on FAT32");
    assert_eq!(u16::from_le_bytes([s(0)[48], s(0)[49]]), 1, "FSInfo sector");
    assert_eq!(
        u16::from_le_bytes([s(0)[50], s(0)[51]]),
        6,
        "backup boot sector"
    );
    assert_eq!(s(0)[66], 0x29);
    assert_eq!(&s(0)[71..82], b"CVM ESP    ");
    assert_eq!(&s(0)[82..90], b"FAT32   ");
    assert_eq!(&data[67..71], &img.volume_id().to_le_bytes());
    assert_eq!(s(6), s(0), "backup boot sector");
    assert_eq!(s(7), s(1), "backup FSInfo");
    let info = s(1);
    assert_eq!(&info[0..4], b"RRaA");
    assert_eq!(&info[484..488], b"rrAa");
    assert_eq!(&info[508..512], &[0, 0, 0x55, 0xAA]);
    let used: u64 = p.chains.iter().map(|(_, c)| c.len() as u64).sum();
    let free = u32::from_le_bytes(info[488..492].try_into().unwrap());
    assert_eq!(u64::from(free), p.clusters - used);
    assert_eq!(u64::from(free), img.free_clusters());
    let next_free = u32::from_le_bytes(info[492..496].try_into().unwrap());
    assert_eq!(u64::from(next_free), used + 2, "first free cluster");
    // Both FATs are identical; FAT[0] carries the media byte, FAT[1] is end-of-chain.
    let fat_len = (p.fat_sectors * 512) as usize;
    let fat1 = &data[(p.reserved * 512) as usize..][..fat_len];
    let fat2 = &data[(p.reserved * 512) as usize + fat_len..][..fat_len];
    assert_eq!(fat1, fat2);
    assert_eq!(
        &fat1[..8],
        &[0xF8, 0xFF, 0xFF, 0x0F, 0xFF, 0xFF, 0xFF, 0x0F]
    );
    // Every chain ends with the end-of-chain mark 0x0FFFFFFF.
    for (path, chain) in &p.chains {
        if let Some(&last) = chain.last() {
            let at = last as usize * 4;
            assert_eq!(&fat1[at..at + 4], &[0xFF, 0xFF, 0xFF, 0x0F], "{path}");
        }
    }
    // The data region starts on a cluster boundary and the label is the root's first entry.
    assert_eq!(p.first_data % p.spc, 0);
    assert_eq!(p.entries[0].0, "/CVM ESP");
    assert_eq!(p.entries[0].1[11], 0x08);
}

#[test]
fn fat16_and_fat12_boot_sectors() {
    for (size, fs) in [(16 * MIB, b"FAT16   "), (MIB, b"FAT12   ")] {
        let img = FatImage::new(size, "SMALL", FatTime::MIN).unwrap();
        let data = img.to_vec().unwrap();
        assert_eq!(&data[54..62], fs);
        assert_eq!(data[38], 0x29);
        assert_eq!(&data[43..54], b"SMALL      ");
        assert_eq!(&data[510..512], &[0x55, 0xAA]);
        assert_eq!(u16::from_le_bytes([data[17], data[18]]), 512);
        let p = parse(&data);
        let fat = &data[512..];
        match p.bits {
            16 => assert_eq!(&fat[..4], &[0xF8, 0xFF, 0xFF, 0xFF]),
            12 => assert_eq!(&fat[..3], &[0xF8, 0xFF, 0xFF]),
            b => panic!("{b}"),
        }
    }
}

#[test]
fn reproducible() {
    let files = fixture(512, 300_000);
    let a = build(64 * MIB, &files, FatTime::MIN).to_vec().unwrap();
    let b = build(64 * MIB, &files, FatTime::MIN).to_vec().unwrap();
    assert!(a == b, "two builds differ");
    // Insertion order does not matter.
    let mut img = FatImage::new(64 * MIB, "CVM ESP", FatTime::MIN).unwrap();
    for (p, d) in files.iter().rev() {
        img.add_file(p, d.clone()).unwrap();
    }
    img.add_dir("/EMPTYDIR").unwrap();
    assert!(
        img.to_vec().unwrap() == a,
        "insertion order changed the image"
    );
    // write_to gives the same bytes as to_vec.
    let mut c = Vec::new();
    build(64 * MIB, &files, FatTime::MIN)
        .write_to(&mut c)
        .unwrap();
    assert!(c == a);

    // A one-byte change of any file (first, middle or last byte) changes the serial and image.
    let id = build(64 * MIB, &files, FatTime::MIN).volume_id();
    for (p, d) in &files {
        if d.is_empty() {
            continue;
        }
        for at in [0, d.len() / 2, d.len() - 1] {
            let mut changed = files.clone();
            changed.get_mut(p).unwrap()[at] ^= 0x01;
            let img = build(64 * MIB, &changed, FatTime::MIN);
            assert_ne!(img.volume_id(), id, "{p}[{at}]");
            let bytes = img.to_vec().unwrap();
            assert!(bytes != a);
            assert_eq!(&bytes[67..71], &img.volume_id().to_le_bytes());
        }
    }
    // So do the metadata that the serial covers.
    let mut grown = files.clone();
    grown.get_mut("/EFI/BOOT/EMPTY").unwrap().push(0);
    assert_ne!(build(64 * MIB, &grown, FatTime::MIN).volume_id(), id);
    let t = FatTime::new(1980, 1, 1, 0, 0, 2).unwrap();
    assert_ne!(build(64 * MIB, &files, t).volume_id(), id);
    assert_ne!(build(65 * MIB, &files, FatTime::MIN).volume_id(), id);
    let mut h = build(64 * MIB, &files, FatTime::MIN);
    h.set_hidden_sectors(2048);
    assert_ne!(h.volume_id(), id);
    assert_eq!(h.to_vec().unwrap()[28..32], 2048u32.to_le_bytes());
}

/// The serial is the documented function of the input (FatImage::volume_id's docs).
#[test]
fn volume_id_rule() {
    use sha2::{Digest, Sha256};
    let mut img = FatImage::new(64 * MIB, "ESP", FatTime::MIN).unwrap();
    img.add_file("/EFI/BOOT/BOOTX64.EFI", b"abc".to_vec())
        .unwrap();
    let mut h = Sha256::new();
    h.update(b"cvm-fat volume-id v1\0");
    h.update((64 * MIB).to_le_bytes());
    h.update(b"ESP        ");
    h.update(0x0021u16.to_le_bytes());
    h.update(0u16.to_le_bytes());
    h.update(0u32.to_le_bytes());
    for (t, p) in [(b'D', "EFI"), (b'D', "EFI/BOOT")] {
        h.update([t]);
        h.update((p.len() as u16).to_le_bytes());
        h.update(p.as_bytes());
    }
    h.update([b'F']);
    h.update(20u16.to_le_bytes());
    h.update(b"EFI/BOOT/BOOTX64.EFI");
    h.update(3u64.to_le_bytes());
    h.update(b"abc");
    let d = h.finalize();
    assert_eq!(
        img.volume_id(),
        u32::from_le_bytes([d[0], d[1], d[2], d[3]])
    );
}

#[test]
fn timestamps_are_the_epoch() {
    let tmp = TempDir::new("time");
    let files = fixture(512, 10_000);
    for (time, shown) in [
        (FatTime::MIN, "1980-01-01   0:00"),
        (
            FatTime::from_unix(1_715_953_531).unwrap(),
            "2024-05-17  13:45",
        ),
    ] {
        let img = build(64 * MIB, &files, time);
        let data = img.to_vec().unwrap();
        let path = tmp.path("t.img");
        std::fs::write(&path, &data).unwrap();
        // mdir shows the write time to the minute for every entry, `.` and `..` included.
        let out = mdir(&path, "/EFI/BOOT");
        let rows: Vec<&str> = out
            .lines()
            .filter(|l| l.contains("<DIR>") || l.contains("EFI") || l.contains("EMPTY"))
            .filter(|l| !l.contains("Directory for"))
            .collect();
        assert_eq!(rows.len(), 4, "{out}");
        for r in rows {
            assert!(r.contains(shown), "{r:?} lacks {shown:?}");
        }
        // Every field of every entry, decoded: creation (with tenths), write and access.
        let (date, t) = (time.fat_date(), time.fat_time());
        let p = parse(&data);
        assert!(p.entries.len() > files.len());
        for (path, e) in &p.entries {
            let f = |at: usize| u16::from_le_bytes([e[at], e[at + 1]]);
            assert_eq!(e[13], 0, "{path} CrtTimeTenth");
            assert_eq!((f(14), f(16)), (t, date), "{path} creation");
            assert_eq!(f(18), date, "{path} access");
            assert_eq!((f(22), f(24)), (t, date), "{path} write");
        }
        // `.` and `..` too: scan every directory cluster for them.
        let cb = (p.spc * 512) as usize;
        for (path, chain) in &p.chains {
            let Some((_, e)) = p.entries.iter().find(|(q, _)| q == path) else {
                continue; // the root
            };
            if e[11] & 0x10 == 0 {
                continue;
            }
            let at = ((p.first_data + (chain[0] - 2) * p.spc) * 512) as usize;
            let dots = &data[at..at + cb];
            assert_eq!(&dots[..11], b".          ");
            assert_eq!(&dots[32..43], b"..         ");
            for d in [&dots[..32], &dots[32..64]] {
                assert_eq!(u16::from_le_bytes([d[22], d[23]]), t);
                assert_eq!(u16::from_le_bytes([d[24], d[25]]), date);
            }
        }
    }
}

#[test]
fn refuses_bad_names() {
    let mut img = FatImage::new(64 * MIB, "ESP", FatTime::MIN).unwrap();
    for bad in [
        "/efi/boot/bootx64.efi",
        "/EFI/BOOT/BootX64.efi",
        "/EFI/BOOT/LONGFILENAME.EFI",
        "/EFI/BOOT/BOOTX64.EFI2",
        "/EFI/BOOT/BOOT X64.EFI",
        "/EFI/BOOT/A.B.C",
        "/EFI//BOOTX64.EFI",
        "/EFI/BOOT/",
        "/EFI/./BOOTX64.EFI",
        "/EFI/../BOOTX64.EFI",
        "/",
        "",
        "/EFI/BOOT/NUL",
        "/EFI/BOOT/BOOTX64.EF\u{e9}",
    ] {
        let e = img.add_file(bad, b"x".to_vec()).unwrap_err();
        assert!(matches!(e, Error::InvalidPath { .. }), "{bad:?}: {e}");
        let e = img.add_dir(bad).unwrap_err();
        assert!(matches!(e, Error::InvalidPath { .. }), "{bad:?}: {e}");
    }
    let e = img.add_file("/EFI/BOOT/bootx64.efi", vec![]).unwrap_err();
    assert!(e.to_string().contains("upper case"), "{e}");
    for bad in ["", "esp", "TWELVECHARSX", " ESP", "A.B"] {
        assert!(matches!(
            FatImage::new(64 * MIB, bad, FatTime::MIN),
            Err(Error::InvalidLabel { .. })
        ));
    }
    // Nothing was added by the refused calls.
    assert_eq!(img.free_clusters(), u64::from(img.cluster_count()) - 1);
}

#[test]
fn refuses_duplicates() {
    let mut img = FatImage::new(64 * MIB, "ESP", FatTime::MIN).unwrap();
    img.add_file("/EFI/BOOT/BOOTX64.EFI", b"a".to_vec())
        .unwrap();
    let free = img.free_clusters();
    let dup = |r: Result<(), Error>| matches!(r, Err(Error::Duplicate { .. }));
    assert!(dup(img.add_file("/EFI/BOOT/BOOTX64.EFI", b"b".to_vec())));
    assert!(dup(img.add_file("EFI/BOOT/BOOTX64.EFI", b"b".to_vec())));
    assert!(dup(img.add_file("/EFI/BOOT", b"b".to_vec())));
    assert!(dup(img.add_dir("/EFI/BOOT/BOOTX64.EFI")));
    assert!(matches!(
        img.add_file("/EFI/BOOT/BOOTX64.EFI/X", vec![]),
        Err(Error::NotADirectory { .. })
    ));
    assert!(matches!(
        img.add_dir("/EFI/BOOT/BOOTX64.EFI/X/Y"),
        Err(Error::NotADirectory { .. })
    ));
    // An existing directory may be named again; it changes nothing.
    img.add_dir("/EFI/BOOT").unwrap();
    assert_eq!(img.free_clusters(), free);
    let once = img.to_vec().unwrap();
    let mut again = FatImage::new(64 * MIB, "ESP", FatTime::MIN).unwrap();
    again
        .add_file("/EFI/BOOT/BOOTX64.EFI", b"a".to_vec())
        .unwrap();
    assert!(again.to_vec().unwrap() == once);
}

#[test]
fn refuses_bad_sizes() {
    for size in [
        0,
        512,
        35 * 512,
        513,
        64 * MIB + 1,
        (u64::from(u32::MAX) + 1) * 512,
        u64::MAX,
    ] {
        assert!(
            matches!(
                FatImage::new(size, "ESP", FatTime::MIN),
                Err(Error::InvalidSize { .. })
            ),
            "{size}"
        );
    }
    // The smallest volume: one data cluster, FAT12.
    let tmp = TempDir::new("tiny");
    let mut img = FatImage::new(36 * 512, "TINY", FatTime::MIN).unwrap();
    assert_eq!(img.cluster_count(), 1);
    img.add_file("/A", bytes(512, 9)).unwrap();
    let path = tmp.path("tiny.img");
    std::fs::write(&path, img.to_vec().unwrap()).unwrap();
    fsck_clean(&path);
    assert_eq!(mcopy(&path, "/A", &tmp), bytes(512, 9));
}

#[test]
fn refuses_what_does_not_fit() {
    // A file larger than the volume.
    let mut img = FatImage::new(40 * MIB, "ESP", FatTime::MIN).unwrap();
    let e = img
        .add_file("/EFI/BOOT/BOOTX64.EFI", vec![0; 41 << 20])
        .unwrap_err();
    assert!(matches!(e, Error::NoSpace { .. }), "{e}");
    // A file larger than FAT's 32-bit size field (allocated lazily by the OS, never touched).
    let e = img
        .add_file("/HUGE", vec![0u8; u32::MAX as usize + 1])
        .unwrap_err();
    assert!(matches!(e, Error::FileTooLarge { .. }), "{e}");

    // Fill a volume exactly: every cluster used is fine and fsck-clean; one byte more is not.
    let tmp = TempDir::new("full");
    let mut img = FatImage::new(40 * MIB, "ESP", FatTime::MIN).unwrap();
    img.add_file("/EFI/BOOT/BOOTX64.EFI", bytes(1000, 1))
        .unwrap();
    // Adding /FILL to the root does not grow it (2 entries in a 512-byte cluster).
    let room = img.free_clusters() * img.cluster_bytes();
    let e = img
        .add_file("/FILL", vec![0; room as usize + 1])
        .unwrap_err();
    assert!(
        matches!(e, Error::NoSpace { needed, free, .. } if needed == free + 1),
        "{e}"
    );
    img.add_file("/FILL", bytes(room as usize, 2)).unwrap();
    assert_eq!(img.free_clusters(), 0);
    assert!(matches!(
        img.add_file("/ONEMORE", b"x".to_vec()),
        Err(Error::NoSpace { .. })
    ));
    assert!(matches!(img.add_dir("/D"), Err(Error::NoSpace { .. })));
    // A zero-byte file needs no cluster, and fits while the root cluster has room.
    img.add_file("/ZERO", vec![]).unwrap();
    let path = tmp.path("full.img");
    let data = img.to_vec().unwrap();
    std::fs::write(&path, &data).unwrap();
    fsck_clean(&path);
    let info = &data[512..1024];
    assert_eq!(&info[488..496], &[0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
    assert_eq!(mcopy(&path, "/FILL", &tmp), bytes(room as usize, 2));

    // Directory growth is counted: with one free cluster, the root (512-byte clusters, 16
    // entries each) takes the label, BIG and Z1..Z14 in its first cluster; Z15 needs the last
    // free cluster, which holds Z15..Z30; Z31 would need a third.
    let mut img = FatImage::new(40 * MIB, "ESP", FatTime::MIN).unwrap();
    let room = (img.free_clusters() - 1) * img.cluster_bytes();
    img.add_file("/BIG", vec![0; room as usize]).unwrap();
    for i in 1..=14 {
        img.add_file(&format!("/Z{i}"), vec![]).unwrap();
    }
    assert_eq!(img.free_clusters(), 1);
    img.add_file("/Z15", vec![]).unwrap();
    assert_eq!(img.free_clusters(), 0);
    for i in 16..=30 {
        img.add_file(&format!("/Z{i}"), vec![]).unwrap();
    }
    assert!(matches!(
        img.add_file("/Z31", vec![]),
        Err(Error::NoSpace {
            needed: 1,
            free: 0,
            ..
        })
    ));
    let path = tmp.path("grown.img");
    std::fs::write(&path, img.to_vec().unwrap()).unwrap();
    fsck_clean(&path);
    assert_eq!(list_all(&path).len(), 31);
    img.to_vec().unwrap();
}

#[test]
fn refuses_full_directories() {
    // The fixed FAT16 root holds 512 entries, the label being one.
    let mut img = FatImage::new(16 * MIB, "ESP", FatTime::MIN).unwrap();
    for i in 0..511 {
        img.add_file(&format!("/F{i}"), vec![]).unwrap();
    }
    let e = img.add_file("/F511", vec![]).unwrap_err();
    assert!(matches!(e, Error::DirectoryFull { max: 512, .. }), "{e}");
    assert!(matches!(
        img.add_file("/D/X", vec![]),
        Err(Error::DirectoryFull { .. })
    ));
    // A FAT32 directory holds 65,536 entries, `.` and `..` included.
    let mut img = FatImage::new(64 * MIB, "ESP", FatTime::MIN).unwrap();
    for i in 0..65_534 {
        img.add_file(&format!("/D/F{i}"), vec![]).unwrap();
    }
    let e = img.add_file("/D/G", vec![]).unwrap_err();
    assert!(matches!(e, Error::DirectoryFull { max: 65_536, .. }), "{e}");
    // (fsck.fat compares names pairwise; 65,536 entries would take it minutes.)
    let p = parse(&img.to_vec().unwrap());
    assert_eq!(p.entries.len(), 1 + 1 + 65_534);
    let (_, d) = p.chains.iter().find(|(q, _)| q == "/D").unwrap();
    assert_eq!(d.len(), 65_536 * 32 / 512);
}

/// Figures: a 64 MiB ESP with a 20 MB UKI.
#[test]
fn time_to_write_64mib_esp() {
    let tmp = TempDir::new("figure");
    let uki = bytes(20_000_000, 42);
    let t = Instant::now();
    let mut img = FatImage::new(64 * MIB, "ESP", FatTime::MIN).unwrap();
    img.add_file("/EFI/BOOT/BOOTX64.EFI", uki.clone()).unwrap();
    let path = tmp.path("esp.img");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    img.write_to(&mut f).unwrap();
    drop(f);
    let to_file = t.elapsed();
    let t = Instant::now();
    let v = img.to_vec().unwrap();
    let to_vec = t.elapsed();
    eprintln!(
        "64 MiB ESP with a 20 MB file: write_to(file) {:.0} ms, to_vec {:.0} ms",
        to_file.as_secs_f64() * 1e3,
        to_vec.as_secs_f64() * 1e3
    );
    assert!(std::fs::read(&path).unwrap() == v);
    fsck_clean(&path);
    assert!(mcopy(&path, "/EFI/BOOT/BOOTX64.EFI", &tmp) == uki);
}
