use super::*;
use crate::gpt::Guid;
use proptest::prelude::*;
use std::path::Path;
use std::process::Command;

/// Deterministic filler (xorshift64*), so failures reproduce without a rand dependency.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
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

fn veritysetup(args: &[&str]) -> std::process::Output {
    Command::new("veritysetup")
        .args(args)
        .output()
        .expect("veritysetup (cryptsetup-bin) must be installed: these tests hold our tree to it")
}

fn tool_root_hash(stdout: &[u8]) -> String {
    let text = String::from_utf8_lossy(stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|| panic!("no root hash in veritysetup output:\n{text}"))
}

const UUID: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";

/// Formats `data` with veritysetup and with our code, and demands identical hash files and root
/// hashes; then lets veritysetup verify our hash file, and reject it after a data byte flip.
fn compare_with_veritysetup(dir: &Path, blocks: usize, salt: &[u8], seed: u64) {
    let data = pseudo_random(blocks * BLOCK_SIZE, seed);
    let data_path = dir.join(format!("data-{blocks}-{seed}.img"));
    let theirs = dir.join(format!("theirs-{blocks}-{seed}.img"));
    let ours = dir.join(format!("ours-{blocks}-{seed}.img"));
    std::fs::write(&data_path, &data).unwrap();
    let salt_arg = if salt.is_empty() {
        "-".to_string()
    } else {
        to_hex(salt)
    };
    let out = veritysetup(&[
        "format",
        &format!("--salt={salt_arg}"),
        &format!("--uuid={UUID}"),
        data_path.to_str().unwrap(),
        theirs.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let their_root = tool_root_hash(&out.stdout);

    let tree = build_hash_tree(&mut &data[..], blocks as u64, salt).unwrap();
    let area = tree.hash_area(UUID.parse().unwrap());
    let their_area = std::fs::read(&theirs).unwrap();
    assert_eq!(
        tree.root_hash_hex(),
        their_root,
        "{blocks} blocks: root hash"
    );
    assert_eq!(
        area.len(),
        their_area.len(),
        "{blocks} blocks: hash area size"
    );
    if let Some(i) = (0..area.len()).find(|&i| area[i] != their_area[i]) {
        panic!("{blocks} blocks: hash areas differ first at byte {i}");
    }
    assert_eq!(tree.hash_area_len(), area.len() as u64);
    let sb = parse(&their_area).unwrap();
    assert_eq!(sb.hash_area_size(), area.len() as u64);
    assert_eq!(sb.salt(), salt);

    std::fs::write(&ours, &area).unwrap();
    let verify = |root: &str| {
        veritysetup(&[
            "verify",
            data_path.to_str().unwrap(),
            ours.to_str().unwrap(),
            root,
        ])
        .status
        .success()
    };
    assert!(
        verify(&tree.root_hash_hex()),
        "{blocks} blocks: verify failed"
    );
    let mut flipped = data;
    let at = flipped.len() - 1 - (seed as usize % flipped.len());
    flipped[at] ^= 0x01;
    std::fs::write(&data_path, &flipped).unwrap();
    assert!(
        !verify(&tree.root_hash_hex()),
        "{blocks} blocks: verify accepted flipped byte {at}"
    );
}

#[test]
fn identical_to_veritysetup() {
    let dir = tempfile::tempdir().unwrap();
    let salt32 = pseudo_random(32, 7);
    // 1: no tree; 2, 128: one level; 129: two levels (crosses a level boundary); 300: a
    // partial last block on two levels; 16385: three levels.
    for (blocks, seed) in [(1, 1), (2, 2), (128, 3), (129, 4), (300, 5), (16385, 6)] {
        compare_with_veritysetup(dir.path(), blocks, &salt32, seed);
    }
    // Salt edge cases: none, one byte, the maximum.
    compare_with_veritysetup(dir.path(), 129, &[], 8);
    compare_with_veritysetup(dir.path(), 3, &[0xab], 9);
    compare_with_veritysetup(dir.path(), 300, &pseudo_random(256, 10), 10);
}

#[test]
fn level_sizes() {
    assert_eq!(level_blocks(1), Vec::<u64>::new());
    assert_eq!(level_blocks(2), [1]);
    assert_eq!(level_blocks(128), [1]);
    assert_eq!(level_blocks(129), [2, 1]);
    assert_eq!(level_blocks(128 * 128), [128, 1]);
    assert_eq!(level_blocks(128 * 128 + 1), [129, 2, 1]);
    assert_eq!(level_blocks(MAX_DATA_BLOCKS).len(), 8);
}

fn sample_superblock() -> Superblock {
    Superblock::new(UUID.parse().unwrap(), 300, &[1, 2, 3]).unwrap()
}

#[test]
fn superblock_round_trip_and_layout() {
    let sb = sample_superblock();
    let bytes = sb.to_bytes();
    assert_eq!(&bytes[..8], b"verity\0\0");
    assert_eq!(&bytes[16..32], UUID.parse::<Guid>().unwrap().as_bytes());
    assert_eq!(&bytes[32..38], b"sha256");
    assert_eq!(bytes[72..80], 300u64.to_le_bytes());
    assert_eq!(bytes[80..82], 3u16.to_le_bytes());
    assert_eq!(&bytes[88..91], &[1, 2, 3]);
    assert_eq!(parse(&bytes).unwrap(), sb);
    // A whole hash block is fine; only the first 512 bytes are the superblock.
    let mut block = bytes.to_vec();
    block.resize(BLOCK_SIZE, 0);
    assert_eq!(parse(&block).unwrap(), sb);
    assert_eq!(sb.data_size(), 300 * 4096);
    assert_eq!(sb.hash_area_size(), 5 * 4096);
}

/// systemd-repart before v255 (mkosi's bookworm images) formats verity with 512-byte blocks:
/// veritysetup's superblock and hash file with other block sizes must parse to the sizes and
/// the dm table veritysetup itself uses.
#[test]
fn smaller_blocks_as_veritysetup_writes_them() {
    let dir = tempfile::tempdir().unwrap();
    let data_path = dir.path().join("data.img");
    std::fs::write(&data_path, pseudo_random(1000 * 512 + 512 * 7, 5)).unwrap();
    for (dbs, hbs) in [(512u32, 512u32), (1024, 2048), (4096, 512), (2048, 4096)] {
        let hash_path = dir.path().join(format!("hash-{dbs}-{hbs}.img"));
        let blocks = 1007 * 512 / dbs as usize;
        let out = veritysetup(&[
            "format",
            &format!("--data-block-size={dbs}"),
            &format!("--hash-block-size={hbs}"),
            &format!("--data-blocks={blocks}"),
            &format!("--uuid={UUID}"),
            data_path.to_str().unwrap(),
            hash_path.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{out:?}");
        let root = tool_root_hash(&out.stdout);
        let hash_file = std::fs::read(&hash_path).unwrap();
        let sb = parse(&hash_file).unwrap();
        assert_eq!((sb.data_block_size(), sb.hash_block_size()), (dbs, hbs));
        assert_eq!(sb.data_blocks(), blocks as u64);
        assert_eq!(sb.data_size(), blocks as u64 * u64::from(dbs));
        assert_eq!(sb.hash_area_size(), hash_file.len() as u64, "{dbs}/{hbs}");
        let table = sb.dm_table("/dev/a", "/dev/b", &from_hex(&root).unwrap(), &[]);
        assert!(
            table.contains(&format!(
                " /dev/a /dev/b {dbs} {hbs} {blocks} 1 sha256 {root} "
            )),
            "{table}"
        );
        assert_eq!(
            Superblock::with_block_sizes(UUID.parse().unwrap(), blocks as u64, sb.salt(), dbs, hbs)
                .unwrap()
                .to_bytes()[..],
            hash_file[..SUPERBLOCK_SIZE]
        );
    }
}

#[test]
fn superblock_rejects_everything_else() {
    let good = sample_superblock().to_bytes();
    let with = |at: usize, v: &[u8]| {
        let mut b = good;
        b[at..at + v.len()].copy_from_slice(v);
        parse(&b)
    };
    assert!(matches!(
        parse(&good[..511]),
        Err(VerityError::ShortSuperblock { len: 511 })
    ));
    assert!(matches!(with(0, b"Verity"), Err(VerityError::BadMagic)));
    assert!(matches!(with(6, b"\0x"), Err(VerityError::BadMagic)));
    assert!(matches!(
        with(8, &2u32.to_le_bytes()),
        Err(VerityError::BadVersion(2))
    ));
    assert!(matches!(
        with(12, &0u32.to_le_bytes()),
        Err(VerityError::BadHashType(0))
    ));
    assert!(matches!(with(32, b"sha1\0\0"), Err(VerityError::BadAlgorithm(a)) if a == "sha1"));
    assert!(matches!(
        with(32, b"sha512"),
        Err(VerityError::BadAlgorithm(_))
    ));
    // "sha256" followed by garbage instead of NULs.
    assert!(matches!(with(38, b"x"), Err(VerityError::BadAlgorithm(_))));
    assert!(matches!(with(63, b"x"), Err(VerityError::BadAlgorithm(_))));
    for bad in [0u32, 256, 3072, 8192] {
        assert!(matches!(
            with(64, &bad.to_le_bytes()),
            Err(VerityError::BadBlockSize { which: "data", size }) if size == bad
        ));
        assert!(matches!(
            with(68, &bad.to_le_bytes()),
            Err(VerityError::BadBlockSize { which: "hash", size }) if size == bad
        ));
    }
    assert!(matches!(
        with(72, &0u64.to_le_bytes()),
        Err(VerityError::BadDataBlocks(0))
    ));
    assert!(matches!(
        with(72, &u64::MAX.to_le_bytes()),
        Err(VerityError::BadDataBlocks(_))
    ));
    assert!(matches!(
        with(80, &257u16.to_le_bytes()),
        Err(VerityError::SaltTooLong(257))
    ));
    assert!(matches!(
        with(82, &[1]),
        Err(VerityError::NonZeroPadding(82))
    ));
    // A salt byte beyond salt_size, and the trailing padding.
    assert!(matches!(
        with(91, &[1]),
        Err(VerityError::NonZeroPadding(91))
    ));
    assert!(matches!(
        with(511, &[1]),
        Err(VerityError::NonZeroPadding(511))
    ));
    // A salt of exactly 256 bytes is the maximum and fills the field.
    let max = Superblock::new(Guid::ZERO, 1, &[0xff; 256]).unwrap();
    assert_eq!(parse(&max.to_bytes()).unwrap(), max);
    assert!(matches!(
        Superblock::new(Guid::ZERO, 1, &[0; 257]),
        Err(VerityError::SaltTooLong(257))
    ));
}

#[test]
fn dm_table_line() {
    let sb = sample_superblock();
    assert_eq!(
        sb.dm_table("/dev/vda1", "/dev/vda2", &[0xaa; 32], &[]),
        format!(
            "0 2400 verity 1 /dev/vda1 /dev/vda2 4096 4096 300 1 sha256 {} 010203",
            "aa".repeat(32)
        )
    );
    let nosalt = Superblock::new(Guid::ZERO, 1, &[]).unwrap();
    assert!(
        nosalt
            .dm_table(
                "a",
                "b",
                &[0; 32],
                &["panic_on_corruption", "use_fec_from_device /dev/x"]
            )
            .ends_with(" - 3 panic_on_corruption use_fec_from_device /dev/x")
    );
}

#[test]
fn build_errors() {
    let data = vec![0u8; 3 * BLOCK_SIZE - 1];
    assert!(matches!(
        build_hash_tree(&mut &data[..], 3, b"s"),
        Err(VerityError::ShortData { got, expected }) if got == data.len() as u64 && expected == 3 * 4096
    ));
    assert!(matches!(
        build_hash_tree(&mut &data[..], 0, b"s"),
        Err(VerityError::BadDataBlocks(0))
    ));
    assert!(matches!(
        build_hash_tree(&mut &data[..], 1, &[0; 300]),
        Err(VerityError::SaltTooLong(300))
    ));
    // A tree bigger than memory is an error, not an abort.
    assert!(matches!(
        build_hash_tree(&mut &data[..], MAX_DATA_BLOCKS, b""),
        Err(VerityError::TooLarge { .. })
    ));
    struct Failing;
    impl std::io::Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk on fire"))
        }
    }
    assert!(matches!(
        build_hash_tree(&mut Failing, 2, b""),
        Err(VerityError::Read { offset: 0, .. })
    ));
    // Extra data after the covered blocks is not read.
    let more = pseudo_random(5 * BLOCK_SIZE, 11);
    let a = build_hash_tree(&mut &more[..], 2, b"x").unwrap();
    let b = build_hash_tree(&mut &more[..2 * BLOCK_SIZE], 2, b"x").unwrap();
    assert_eq!(a, b);
}

#[test]
fn single_block_root_is_the_block_digest() {
    use sha2::{Digest, Sha256};
    let data = pseudo_random(BLOCK_SIZE, 12);
    let tree = build_hash_tree(&mut &data[..], 1, b"salt").unwrap();
    let expect: [u8; 32] = Sha256::new()
        .chain_update(b"salt")
        .chain_update(&data)
        .finalize()
        .into();
    assert_eq!(tree.root_hash(), &expect);
    assert!(tree.tree().is_empty());
    assert_eq!(tree.hash_area_len(), BLOCK_SIZE as u64);
}

#[test]
fn derived_values_are_stable() {
    let salt = derive_salt(&[0; 32]);
    assert_eq!(salt, derive_salt(&[0; 32]));
    assert_ne!(salt, derive_salt(&[1; 32]));
    let data = pseudo_random(2 * BLOCK_SIZE, 13);
    let t1 = build_hash_tree(&mut &data[..], 2, &salt).unwrap();
    let t2 = build_hash_tree(&mut &data[..], 2, &salt).unwrap();
    assert_eq!(t1.default_uuid(), t2.default_uuid());
    assert_eq!(from_hex(&t1.root_hash_hex()).unwrap(), t1.root_hash());
    assert_eq!(from_hex("AbCd"), Some(vec![0xab, 0xcd]));
    for bad in ["a", "zz", "+1", "é1"] {
        assert_eq!(from_hex(bad), None, "{bad}");
    }
}

proptest! {
    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let _ = parse(&bytes);
    }

    #[test]
    fn parse_of_mutated_superblock_is_exact(
        edits in proptest::collection::vec((0usize..512, any::<u8>()), 1..8),
    ) {
        let mut b = sample_superblock().to_bytes();
        for (at, v) in edits {
            b[at] = v;
        }
        // Accepted means canonical: nothing in the 512 bytes escaped the parser.
        if let Ok(sb) = parse(&b) {
            prop_assert_eq!(sb.to_bytes(), b);
        }
    }
}
