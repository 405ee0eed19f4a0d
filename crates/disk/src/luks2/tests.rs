use super::*;
use proptest::prelude::*;
use std::io::Cursor;

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
/// Smallest device we format: metadata + one data sector.
const DEV_SIZE: u64 = DATA_OFFSET + 4096;

fn hex(s: &str) -> Vec<u8> {
    cvm_text::hex::decode(s).unwrap()
}

/// A device whose first bytes are `head` and the rest zeros, so hostile-input tests need not
/// copy 16 MiB per case.
#[derive(Clone)]
struct Sparse {
    head: Vec<u8>,
    size: u64,
    pos: u64,
}

impl Read for Sparse {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (self.size.saturating_sub(self.pos)).min(buf.len() as u64) as usize;
        let from = self.pos.min(self.head.len() as u64) as usize;
        let have = (self.head.len() - from).min(n);
        buf[..have].copy_from_slice(&self.head[from..from + have]);
        buf[have..n].fill(0);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Sparse {
    fn seek(&mut self, p: SeekFrom) -> io::Result<u64> {
        self.pos = match p {
            SeekFrom::Start(o) => o,
            SeekFrom::End(o) => self.size.checked_add_signed(o).unwrap_or(0),
            SeekFrom::Current(o) => self.pos.checked_add_signed(o).unwrap_or(0),
        };
        Ok(self.pos)
    }
}

fn formatted(opts: &FormatOptions) -> (Sparse, Header) {
    let mut dev = Cursor::new(vec![0u8; DEV_SIZE as usize]);
    let h = format(&mut dev, DEV_SIZE, KEY, opts).unwrap();
    let mut head = dev.into_inner();
    head.truncate(1 << 20);
    (
        Sparse {
            head,
            size: DEV_SIZE,
            pos: 0,
        },
        h,
    )
}

fn pbkdf2_disk() -> Sparse {
    formatted(&FormatOptions::default()).0
}

/// Rewrites one copy's JSON (`at` = 0 or HDR_SIZE) and fixes its checksum, as a forger would.
fn rewrite_copy(dev: &mut Sparse, at: usize, f: &dyn Fn(&mut serde_json::Value)) {
    let area = &mut dev.head[at..at + HDR_SIZE as usize];
    let end = area[4096..].iter().position(|&c| c == 0).unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&area[4096..4096 + end]).unwrap();
    f(&mut v);
    let text = serde_json::to_vec(&v).unwrap();
    area[4096..].fill(0);
    area[4096..4096 + text.len()].copy_from_slice(&text);
    fix_checksum(dev, at);
}

fn fix_checksum(dev: &mut Sparse, at: usize) {
    let area = &mut dev.head[at..at + HDR_SIZE as usize];
    let c = binary::checksum(area);
    area[448..480].copy_from_slice(&c);
}

fn rewrite(dev: &mut Sparse, f: &dyn Fn(&mut serde_json::Value)) {
    rewrite_copy(dev, 0, f);
    rewrite_copy(dev, HDR_SIZE as usize, f);
}

/// A named JSON mutation.
type Case = (&'static str, Box<dyn Fn(&mut serde_json::Value)>);

fn open_err(dev: &mut Sparse) -> Luks2Error {
    open(dev, KEY).map(|_| ()).unwrap_err()
}

// ---------------------------------------------------------------- primitives

const K256: &str = "27182818284590452353602874713526624977572470936999595749669676273141592653589793238462643383279502884197169399375105820974944592";

/// IEEE P1619/D16 XTS-AES-256 vectors 10 and 11 (512-byte units, tweaks 0xff and 0xffff). The
/// full 512-byte ciphertexts: vector 10 as published; vector 11 as published in its first
/// blocks and reproduced in full with OpenSSL's aes-256-xts.
#[test]
fn xts_ieee1619_vectors_10_and_11() {
    let pt: Vec<u8> = (0..512).map(|i| i as u8).collect();
    let v10 = "1c3b3a102f770386e4836c99e370cf9bea00803f5e482357a4ae12d414a3e63b5d31e276f8fe4a8d66b317f9ac683f44680a86ac35adfc3345befecb4bb188fd5776926c49a3095eb108fd1098baec70aaa66999a72a82f27d848b21d4a741b0c5cd4d5fff9dac89aeba122961d03a757123e9870f8acf1000020887891429ca2a3e7a7d7df7b10355165c8b9a6d0a7de8b062c4500dc4cd120c0f7418dae3d0b5781c34803fa75421c790dfe1de1834f280d7667b327f6c8cd7557e12ac3a0f93ec05c52e0493ef31a12d3d9260f79a289d6a379bc70c50841473d1a8cc81ec583e9645e07b8d9670655ba5bbcfecc6dc3966380ad8fecb17b6ba02469a020a84e18e8f84252070c13e9f1f289be54fbc481457778f616015e1327a02b140f1505eb309326d68378f8374595c849d84f4c333ec4423885143cb47bd71c5edae9be69a2ffeceb1bec9de244fbe15992b11b77c040f12bd8f6a975a44a0f90c29a9abc3d4d893927284c58754cce294529f8614dcd2aba991925fedc4ae74ffac6e333b93eb4aff0479da9a410e4450e0dd7ae4c6e2910900575da401fc07059f645e8b7e9bfdef33943054ff84011493c27b3429eaedb4ed5376441a77ed43851ad77f16f541dfd269d50d6a5f14fb0aab1cbb4c1550be97f7ab4066193c4caa773dad38014bd2092fa755c824bb5e54c4f36ffda9fcea70b9c6e693e148c151";
    let v11 = "77a31251618a15e6b92d1d66dffe7b50b50bad552305ba0217a610688eff7e11e1d0225438e093242d6db274fde801d4cae06f2092c728b2478559df58e837c2469ee4a4fa794e4bbc7f39bc026e3cb72c33b0888f25b4acf56a2a9804f1ce6d3d6e1dc6ca181d4b546179d55544aa7760c40d06741539c7e3cd9d2f6650b2013fd0eeb8c2b8e3d8d240ccae2d4c98320a7442e1c8d75a42d6e6cfa4c2eca1798d158c7aecdf82490f24bb9b38e108bcda12c3faf9a21141c3613b58367f922aaa26cd22f23d708dae699ad7cb40a8ad0b6e2784973dcb605684c08b8d6998c69aac049921871ebb65301a4619ca80ecb485a31d744223ce8ddc2394828d6a80470c092f5ba413c3378fa6054255c6f9df4495862bbb3287681f931b687c888abf844dfc8fc28331e579928cd12bd2390ae123cf03818d14dedde5c0c24c8ab018bfca75ca096f2d531f3d1619e785f1ada437cab92e980558b3dce1474afb75bfedbf8ff54cb2618e0244c9ac0d3c66fb51598cd2db11f9be39791abe447c63094f7c453b7ff87cb5bb36b7c79efb0872d17058b83b15ab0866ad8a58656c5a7e20dbdf308b2461d97c0ec0024a2715055249cf3b478ddd4740de654f75ca686e0d7345c69ed50cdc2a8b332b1f8824108ac937eb050585608ee734097fc09054fbff89eeaeea791f4a7ab1f9868294a4f9e27b42af8100cb9d59cef9645803";
    let key: [u8; 64] = hex(K256).try_into().unwrap();
    let xts = Xts::new(&key);
    for (tweak, ct) in [(0xffu128, v10), (0xffff, v11)] {
        let mut buf = pt.clone();
        xts.encrypt_unit(tweak, &mut buf);
        assert_eq!(buf, hex(ct), "tweak {tweak:#x}");
        xts.decrypt_unit(tweak, &mut buf);
        assert_eq!(buf, pt);
    }
    // plain64 with 4096-byte sectors: the second sector's IV is 8 (512-byte units).
    let mut run = vec![7u8; 8192];
    xts.crypt_sectors(4096, 0xf8, &mut run, true);
    let mut one = vec![7u8; 4096];
    xts.encrypt_unit(0x100, &mut one);
    assert_eq!(&run[4096..], &one[..]);
}

/// RFC 7914 §11, the PBKDF2-HMAC-SHA256 vectors.
#[test]
fn pbkdf2_sha256_rfc7914() {
    let mut out = [0u8; 64];
    crypto::pbkdf2_sha256(b"passwd", b"salt", 1, &mut out);
    assert_eq!(
        out.to_vec(),
        hex(
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783"
        )
    );
    crypto::pbkdf2_sha256(b"Password", b"NaCl", 80000, &mut out);
    assert_eq!(
        out.to_vec(),
        hex(
            "4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56a1d425a1225833549adb841b51c9b3176a272bdebba1d078478f62b397f33c8d"
        )
    );
}

#[test]
fn af_split_merge_round_trip() {
    let key: Vec<u8> = (0..64).collect();
    let random: Vec<u8> = (0..64 * 3999).map(|i| (i * 7 + 3) as u8).collect();
    let m = crypto::af_split(&key, 4000, &random);
    assert_eq!(m.len(), 64 * 4000);
    assert_eq!(&m[..64 * 3999], &random[..]);
    assert_eq!(&crypto::af_merge(&m, 64, 4000)[..], &key[..]);
    // Any damaged stripe changes the merged key (that is the point of AF).
    let mut bad = m.clone();
    bad[100] ^= 1;
    assert_ne!(&crypto::af_merge(&bad, 64, 4000)[..], &key[..]);
    // A key length that is not a multiple of the SHA-256 size diffuses the short tail too.
    let k20 = [9u8; 20];
    let m20 = crypto::af_split(&k20, 5, &[1u8; 80]);
    assert_eq!(&crypto::af_merge(&m20, 20, 5)[..], &k20[..]);
}

#[test]
fn header_checksum_is_over_the_area_with_the_field_zeroed() {
    let dev = pbkdf2_disk();
    let area = &dev.head[..HDR_SIZE as usize];
    let mut zeroed = area.to_vec();
    zeroed[448..512].fill(0);
    use sha2::Digest;
    let want = sha2::Sha256::digest(&zeroed);
    assert_eq!(&area[448..480], &want[..]);
    assert_eq!(binary::checksum(area), <[u8; 32]>::from(want));
}

// ---------------------------------------------------------------- format / open

#[test]
fn format_open_round_trip_pbkdf2() {
    let (mut dev, h) = formatted(&FormatOptions {
        label: "state".into(),
        ..FormatOptions::default()
    });
    let (h2, vk) = open(&mut dev, KEY).unwrap();
    assert_eq!(h, h2);
    assert!(h2.check_volume_key(&vk));
    assert_eq!(h2.label(), "state");
    assert_eq!(h2.uuid().len(), 36);
    let s = h2.segment();
    assert_eq!(
        (s.offset, s.size, s.sector_size, s.iv_tweak),
        (DATA_OFFSET, None, 4096, 0)
    );
    assert_eq!(s.cipher, "aes-xts-plain64");
    assert_eq!(s.data_size(DEV_SIZE), 4096);
    let params = s.dm_crypt_params(&vk, "254:0");
    assert!(params.starts_with("aes-xts-plain64 "));
    assert!(params.ends_with(" 0 254:0 32768 1 sector_size:4096"));
    assert_eq!(params[16..144], cvm_text::hex::encode(&vk[..]));
    assert_eq!(h2.keyslots().len(), 1);
    assert_eq!(h2.keyslots()[0].area_offset, 32768);
    assert_eq!(h2.keyslots()[0].area_size, 258048);
    // The rest of the keyslots area is zero.
    assert!(dev.head[32768 + 258048..].iter().all(|&c| c == 0));
    assert!(matches!(
        open_err_key(&mut dev, b"wrong key"),
        Luks2Error::WrongKey
    ));
}

fn open_err_key(dev: &mut Sparse, key: &[u8]) -> Luks2Error {
    open(dev, key).map(|_| ()).unwrap_err()
}

#[test]
fn format_open_round_trip_argon2id() {
    let opts = FormatOptions {
        kdf: Kdf::Argon2 {
            id: true,
            time: 1,
            memory: 64,
            cpus: 1,
        },
        ..FormatOptions::default()
    };
    let (mut dev, _) = formatted(&opts);
    let (h, vk) = open(&mut dev, KEY).unwrap();
    assert_eq!(h.keyslots()[0].kdf, opts.kdf);
    assert!(h.check_volume_key(&vk));
    assert!(matches!(
        open_err_key(&mut dev, b"nope"),
        Luks2Error::WrongKey
    ));
}

#[test]
fn format_refuses_small_or_unaligned_devices() {
    let mut dev = Cursor::new(Vec::new());
    let o = FormatOptions::default();
    assert!(matches!(
        format(&mut dev, DATA_OFFSET, KEY, &o),
        Err(Luks2Error::TooSmall { .. })
    ));
    assert!(matches!(
        format(&mut dev, DEV_SIZE + 512, KEY, &o),
        Err(Luks2Error::Unaligned(_))
    ));
}

#[test]
fn two_formats_differ() {
    let a = formatted(&FormatOptions::default()).1;
    let b = formatted(&FormatOptions::default()).1;
    assert_ne!(a.uuid(), b.uuid());
}

// ---------------------------------------------------------------- validation rules

#[test]
fn a_flipped_byte_in_either_copy_is_a_checksum_error() {
    for (at, which) in [
        (20usize, Which::Primary),
        (4100, Which::Primary),
        (HDR_SIZE as usize + 30, Which::Secondary),
        (HDR_SIZE as usize + 5000, Which::Secondary),
    ] {
        let mut dev = pbkdf2_disk();
        dev.head[at] ^= 0x01;
        let e = open_err(&mut dev);
        assert!(
            matches!(e, Luks2Error::Checksum { which: w } if w == which),
            "byte {at}: {e}"
        );
    }
    // The magic and version are checked before the checksum.
    let mut dev = pbkdf2_disk();
    dev.head[0] = b'X';
    assert!(matches!(
        open_err(&mut dev),
        Luks2Error::BadMagic {
            which: Which::Primary
        }
    ));
    let mut dev = pbkdf2_disk();
    dev.head[HDR_SIZE as usize] = b'X';
    assert!(matches!(
        open_err(&mut dev),
        Luks2Error::BadMagic {
            which: Which::Secondary
        }
    ));
    let mut dev = pbkdf2_disk();
    dev.head[7] = 1;
    assert!(matches!(
        open_err(&mut dev),
        Luks2Error::BadVersion { version: 1, .. }
    ));
    let mut dev = pbkdf2_disk();
    dev.head[13] = 0x50; // hdr_size 0x5000
    assert!(matches!(
        open_err(&mut dev),
        Luks2Error::BadHeaderSize { .. }
    ));
}

#[test]
fn bad_binary_fields_with_valid_checksums() {
    // hdr_offset of the primary not 0.
    let mut dev = pbkdf2_disk();
    dev.head[263] = 1;
    fix_checksum(&mut dev, 0);
    assert!(matches!(
        open_err(&mut dev),
        Luks2Error::BadField {
            field: "hdr_offset",
            ..
        }
    ));
    // Padding.
    let mut dev = pbkdf2_disk();
    dev.head[1000] = 1;
    fix_checksum(&mut dev, 0);
    assert!(matches!(
        open_err(&mut dev),
        Luks2Error::BadField {
            field: "padding",
            ..
        }
    ));
    // Label with no NUL.
    let mut dev = pbkdf2_disk();
    dev.head[24..72].fill(b'a');
    fix_checksum(&mut dev, 0);
    assert!(matches!(
        open_err(&mut dev),
        Luks2Error::BadField { field: "label", .. }
    ));
    // Bytes after the JSON terminator.
    let mut dev = pbkdf2_disk();
    dev.head[HDR_SIZE as usize - 1] = b' ';
    fix_checksum(&mut dev, 0);
    assert!(matches!(open_err(&mut dev), Luks2Error::Json(_)));
    // Checksum algorithm.
    let mut dev = pbkdf2_disk();
    dev.head[72..78].copy_from_slice(b"sha512");
    fix_checksum(&mut dev, 0);
    assert!(matches!(open_err(&mut dev), Luks2Error::Unsupported(_)));
}

#[test]
fn seqid_rules() {
    // Same seqid, different label: refused.
    let mut dev = pbkdf2_disk();
    let s = HDR_SIZE as usize;
    dev.head[s + 24] = b'x';
    fix_checksum(&mut dev, s);
    assert!(matches!(open_err(&mut dev), Luks2Error::HeadersDisagree(_)));
    // Same seqid, different JSON: refused.
    let mut dev = pbkdf2_disk();
    rewrite_copy(&mut dev, s, &|v| {
        v["config"]["flags"] = serde_json::json!(["allow-discards"])
    });
    assert!(matches!(open_err(&mut dev), Luks2Error::HeadersDisagree(_)));
    // Secondary newer: it wins (an interrupted update).
    let mut dev = pbkdf2_disk();
    dev.head[s + 24] = b'x';
    dev.head[s + 23] = 2;
    fix_checksum(&mut dev, s);
    let (h, _) = open(&mut dev, KEY).unwrap();
    assert_eq!((h.seqid(), h.label()), (2, "x"));
    // Primary newer: it wins.
    let mut dev = pbkdf2_disk();
    dev.head[23] = 9;
    dev.head[24] = b'p';
    fix_checksum(&mut dev, 0);
    let h = read_header(&mut dev).unwrap();
    assert_eq!((h.seqid(), h.label()), (9, "p"));
    // The newer copy must still be valid: a newer but broken secondary is an error, not skipped.
    let mut dev = pbkdf2_disk();
    dev.head[s + 23] = 2;
    assert!(matches!(
        open_err(&mut dev),
        Luks2Error::Checksum {
            which: Which::Secondary
        }
    ));
}

#[test]
fn json_garbage_and_schema() {
    for text in [&b"{not json"[..], b"[]", b"{}", b"\xff\xfe"] {
        let mut dev = pbkdf2_disk();
        for at in [0, HDR_SIZE as usize] {
            dev.head[at + 4096..at + HDR_SIZE as usize].fill(0);
            dev.head[at + 4096..at + 4096 + text.len()].copy_from_slice(text);
            fix_checksum(&mut dev, at);
        }
        assert!(
            matches!(open_err(&mut dev), Luks2Error::Json(_)),
            "{text:?}"
        );
    }
    let cases: Vec<Case> = vec![
        (
            "unknown top-level field",
            Box::new(|v| v["extra"] = 1.into()),
        ),
        (
            "unknown keyslot field",
            Box::new(|v| v["keyslots"]["0"]["x"] = 1.into()),
        ),
        (
            "id not canonical",
            Box::new(|v| {
                let k = v["keyslots"]["0"].clone();
                v["keyslots"] = serde_json::json!({ "00": k });
            }),
        ),
        (
            "number not string",
            Box::new(|v| v["segments"]["0"]["offset"] = 16777216.into()),
        ),
        (
            "bad base64",
            Box::new(|v| v["digests"]["0"]["salt"] = "!!".into()),
        ),
        (
            "short digest",
            Box::new(|v| v["digests"]["0"]["digest"] = "AAAA".into()),
        ),
        (
            "digest not bound",
            Box::new(|v| v["digests"]["0"]["keyslots"] = serde_json::json!([])),
        ),
        (
            "json_size",
            Box::new(|v| v["config"]["json_size"] = "4096".into()),
        ),
        (
            "argon2 fields in pbkdf2",
            Box::new(|v| v["keyslots"]["0"]["kdf"]["time"] = 4.into()),
        ),
        (
            "no iterations",
            Box::new(|v| {
                v["keyslots"]["0"]["kdf"]
                    .as_object_mut()
                    .unwrap()
                    .remove("iterations");
            }),
        ),
        (
            "short salt",
            Box::new(|v| v["keyslots"]["0"]["kdf"]["salt"] = "AAAA".into()),
        ),
        (
            "bad token",
            Box::new(|v| v["tokens"]["0"] = serde_json::json!({"type": "x", "keyslots": ["5"]})),
        ),
    ];
    for (name, f) in cases {
        let mut dev = pbkdf2_disk();
        rewrite(&mut dev, &*f);
        let e = open(&mut dev, KEY).map(|_| ()).expect_err(name);
        assert!(
            matches!(e, Luks2Error::Json(_) | Luks2Error::Layout(_)),
            "{name}: {e}"
        );
    }
    // Duplicate ids (the JSON text, since a Value cannot hold them).
    let mut dev = pbkdf2_disk();
    for at in [0, HDR_SIZE as usize] {
        let area = &mut dev.head[at + 4096..at + HDR_SIZE as usize];
        let end = area.iter().position(|&c| c == 0).unwrap();
        let text = String::from_utf8(area[..end].to_vec()).unwrap();
        let text = text.replace("\"tokens\":{}", "\"tokens\":{\"0\":{\"type\":\"a\",\"keyslots\":[]},\"0\":{\"type\":\"a\",\"keyslots\":[]}}");
        area.fill(0);
        area[..text.len()].copy_from_slice(text.as_bytes());
        fix_checksum(&mut dev, at);
    }
    let e = open_err(&mut dev);
    assert!(
        matches!(&e, Luks2Error::Json(m) if m.contains("duplicate")),
        "{e}"
    );
}

#[test]
fn unsupported_things_are_named() {
    let cases: Vec<Case> = vec![
        (
            "aes-cbc-essiv",
            Box::new(|v| v["segments"]["0"]["encryption"] = "aes-cbc-essiv:sha256".into()),
        ),
        (
            "serpent",
            Box::new(|v| v["keyslots"]["0"]["area"]["encryption"] = "serpent-xts-plain64".into()),
        ),
        (
            "key_size",
            Box::new(|v| v["keyslots"]["0"]["key_size"] = 32.into()),
        ),
        (
            "sha1",
            Box::new(|v| v["keyslots"]["0"]["kdf"]["hash"] = "sha1".into()),
        ),
        (
            "iterations",
            Box::new(|v| v["keyslots"]["0"]["kdf"]["iterations"] = 4_000_000_000u32.into()),
        ),
        (
            "stripes",
            Box::new(|v| v["keyslots"]["0"]["af"]["stripes"] = 2.into()),
        ),
        (
            "reencrypt",
            Box::new(|v| {
                v["keyslots"]["1"] = serde_json::json!({"type": "reencrypt", "mode": "encrypt"})
            }),
        ),
        (
            "mandatory",
            Box::new(|v| {
                v["config"]["requirements"] =
                    serde_json::json!({"mandatory": ["online-reencrypt-v2"]})
            }),
        ),
        (
            "integrity",
            Box::new(|v| {
                v["segments"]["0"]["integrity"] = serde_json::json!({"type": "hmac(sha256)"})
            }),
        ),
        (
            "linear segment",
            Box::new(|v| v["segments"]["0"]["type"] = "linear".into()),
        ),
        (
            "two segments",
            Box::new(|v| v["segments"]["1"] = v["segments"]["0"].clone()),
        ),
        (
            "config flag",
            Box::new(|v| v["config"]["flags"] = serde_json::json!(["made-up"])),
        ),
        (
            "sector 8192",
            Box::new(|v| v["segments"]["0"]["sector_size"] = 8192.into()),
        ),
        (
            "argon2 memory",
            Box::new(|v| {
                let salt = v["keyslots"]["0"]["kdf"]["salt"].clone();
                v["keyslots"]["0"]["kdf"] = serde_json::json!({"type": "argon2id", "time": 4,
                "memory": MAX_ARGON2_MEMORY_KIB + 1, "cpus": 1, "salt": salt});
            }),
        ),
        (
            "argon2d",
            Box::new(|v| {
                let salt = v["keyslots"]["0"]["kdf"]["salt"].clone();
                v["keyslots"]["0"]["kdf"] = serde_json::json!({"type": "argon2d", "time": 4,
                "memory": 64, "cpus": 1, "salt": salt});
            }),
        ),
    ];
    for (name, f) in cases {
        let mut dev = pbkdf2_disk();
        rewrite(&mut dev, &*f);
        let e = open_err(&mut dev);
        assert!(matches!(e, Luks2Error::Unsupported(_)), "{name}: {e}");
    }
}

#[test]
fn layout_rules() {
    let cases: Vec<Case> = vec![
        (
            "overlapping keyslots",
            Box::new(|v| {
                let mut k = v["keyslots"]["0"].clone();
                k["area"]["offset"] = "36864".into();
                v["keyslots"]["1"] = k;
                v["digests"]["0"]["keyslots"] = serde_json::json!(["0", "1"]);
            }),
        ),
        (
            "keyslot in the header",
            Box::new(|v| v["keyslots"]["0"]["area"]["offset"] = "16384".into()),
        ),
        (
            "keyslot past the keyslots area",
            Box::new(|v| v["keyslots"]["0"]["area"]["offset"] = "16642048".into()),
        ),
        (
            "keyslot area too small",
            Box::new(|v| v["keyslots"]["0"]["area"]["size"] = "4096".into()),
        ),
        (
            "segment beyond the device",
            Box::new(|v| v["segments"]["0"]["size"] = "8192".into()),
        ),
        (
            "segment starts beyond the device",
            Box::new(|v| v["segments"]["0"]["offset"] = "33554432".into()),
        ),
        (
            "segment in the keyslots area",
            Box::new(|v| v["segments"]["0"]["offset"] = "1048576".into()),
        ),
        (
            "segment unaligned",
            Box::new(|v| v["segments"]["0"]["offset"] = "16777728".into()),
        ),
        (
            "keyslots_size beyond device",
            Box::new(|v| v["config"]["keyslots_size"] = "99999997952".into()),
        ),
    ];
    for (name, f) in cases {
        let mut dev = pbkdf2_disk();
        rewrite(&mut dev, &*f);
        let e = open_err(&mut dev);
        assert!(matches!(e, Luks2Error::Layout(_)), "{name}: {e}");
    }
    // A device truncated after the headers.
    let mut dev = pbkdf2_disk();
    dev.size = 40 << 10;
    assert!(matches!(open_err(&mut dev), Luks2Error::Layout(_)));
    dev.size = 20 << 10;
    assert!(matches!(open_err(&mut dev), Luks2Error::TooSmall { .. }));
}

#[test]
fn every_bound_keyslot_is_tried_and_priority_ignore_is_skipped() {
    // Keyslot 0 copied to id 5 with a second, garbage area: the key still opens through 0.
    let mut dev = pbkdf2_disk();
    rewrite(&mut dev, &|v| {
        let mut k = v["keyslots"]["0"].clone();
        k["area"]["offset"] = "1048576".into();
        k["priority"] = 2.into();
        v["keyslots"]["5"] = k;
        v["digests"]["0"]["keyslots"] = serde_json::json!(["0", "5"]);
    });
    let (h, _) = open(&mut dev, KEY).unwrap();
    assert_eq!(h.keyslots().len(), 2);
    // Only an ignored slot: nothing to try.
    let mut dev = pbkdf2_disk();
    rewrite(&mut dev, &|v| v["keyslots"]["0"]["priority"] = 0.into());
    assert!(matches!(open_err(&mut dev), Luks2Error::NoUsableKeyslot));
    // Damaged keyslot material: the key no longer opens it.
    let mut dev = pbkdf2_disk();
    dev.head[40000] ^= 1;
    assert!(matches!(open_err(&mut dev), Luks2Error::WrongKey));
}

#[test]
fn probe_kinds() {
    let mut z = Sparse {
        head: vec![],
        size: 4 << 20,
        pos: 0,
    };
    assert_eq!(probe(&mut z).unwrap(), Kind::Zeroed);
    assert_eq!(probe(&mut pbkdf2_disk()).unwrap(), Kind::Luks2);
    let mut d = z.clone();
    d.head = vec![0; 2048];
    d.head[1080] = 0x53;
    d.head[1081] = 0xef;
    assert!(matches!(probe(&mut d).unwrap(), Kind::Foreign(w) if w.contains("ext")));
    let mut d = z.clone();
    d.head = b"LUKS\xba\xbe\x00\x01".to_vec();
    assert!(matches!(probe(&mut d).unwrap(), Kind::Foreign(w) if w.contains("LUKS1")));
    let mut d = z.clone();
    d.head = vec![0; 1 << 20];
    d.head[(1 << 20) - 1] = 1;
    assert!(matches!(probe(&mut d).unwrap(), Kind::Foreign(_)));
    // Past the first MiB does not count.
    let mut d = z.clone();
    d.head = vec![0; (1 << 20) + 1];
    d.head[1 << 20] = 1;
    assert_eq!(probe(&mut d).unwrap(), Kind::Zeroed);
}

// ---------------------------------------------------------------- hostile input

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn open_never_panics_on_random_bytes(head in proptest::collection::vec(any::<u8>(), 0..40000), size in 0u64..(40 << 20)) {
        let mut d = Sparse { head, size, pos: 0 };
        let _ = open(&mut d, KEY);
        let _ = probe(&mut d);
    }

    #[test]
    fn open_never_panics_on_truncated_headers(cut in 0usize..(HDR_SIZE as usize * 2 + 4096)) {
        let mut d = pbkdf2_base().clone();
        d.head.truncate(cut);
        d.size = cut as u64;
        prop_assert!(open(&mut d, KEY).is_err());
    }

    /// Fuzz-like: flip bytes of a real header, in the binary part or the JSON text, and
    /// re-checksum so the mutation reaches the JSON and layout checks.
    #[test]
    fn open_never_panics_on_mutated_headers(
        muts in proptest::collection::vec((0usize..(HDR_SIZE as usize), any::<u8>()), 1..6),
        json_only in any::<bool>(),
        rechecksum in any::<bool>(),
    ) {
        let mut d = pbkdf2_base().clone();
        let json_len = d.head[4096..].iter().position(|&c| c == 0).unwrap();
        for (at, v) in muts {
            let at = if json_only { 4096 + at % (json_len + 1) } else { at };
            d.head[at] = v;
            d.head[HDR_SIZE as usize + at] = v;
        }
        if rechecksum {
            fix_checksum(&mut d, 0);
            fix_checksum(&mut d, HDR_SIZE as usize);
        }
        let _ = open(&mut d, KEY);
    }
}

fn pbkdf2_base() -> &'static Sparse {
    static BASE: std::sync::OnceLock<Sparse> = std::sync::OnceLock::new();
    BASE.get_or_init(pbkdf2_disk)
}

// ---------------------------------------------------------------- integrity

fn integrity_disk() -> (Sparse, Header) {
    formatted(&FormatOptions {
        integrity: true,
        ..FormatOptions::default()
    })
}

#[test]
fn integrity_format_open_round_trip() {
    let (mut dev, h) = integrity_disk();
    let (h2, vk) = open(&mut dev, KEY).unwrap();
    assert_eq!(h, h2);
    assert_eq!(vk.len(), MAX_KEY_SIZE);
    assert!(h2.check_volume_key(&vk));
    // A prefix of the right key is not the key.
    assert!(!h2.check_volume_key(&vk[..KEY_SIZE]));
    let s = h2.segment();
    assert_eq!(s.integrity.as_deref(), Some("hmac(sha256)"));
    assert_eq!(s.key_size(), 96);
    assert_eq!((s.offset, s.sector_size, s.size), (DATA_OFFSET, 4096, None));
    // 96 * 4000 bytes of AF material in whole 4 KiB blocks.
    assert_eq!(h2.keyslots()[0].area_size, 385024);
    assert!(dev.head[32768 + 385024..].iter().all(|&c| c == 0));
    // The JSON says what cryptsetup writes: keyslot key 96 bytes, area key 64.
    let end = dev.head[4096..].iter().position(|&c| c == 0).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&dev.head[4096..4096 + end]).unwrap();
    assert_eq!(
        v["segments"]["0"]["integrity"],
        serde_json::json!({"type": "hmac(sha256)", "journal_encryption": "none",
            "journal_integrity": "none"})
    );
    assert_eq!(v["keyslots"]["0"]["key_size"], 96);
    assert_eq!(v["keyslots"]["0"]["area"]["key_size"], 64);

    assert_eq!(
        s.dm_integrity_params("254:0", true),
        "254:0 32768 32 J 2 block_size:4096 fix_padding"
    );
    assert_eq!(
        s.dm_integrity_params("254:0", false),
        "254:0 32768 32 D 2 block_size:4096 fix_padding"
    );
    let params = s.dm_crypt_params(&vk, "253:0");
    let cipher = "capi:authenc(hmac(sha256),xts(aes))-plain64 ";
    assert!(params.starts_with(cipher), "{}", &params[..50]);
    // The whole key, XTS key first, then the HMAC key: dm-crypt splits off the last 32 bytes.
    assert_eq!(
        params[cipher.len()..cipher.len() + 192],
        cvm_text::hex::encode(&vk[..])
    );
    assert!(params.ends_with(" 0 253:0 0 2 integrity:32:aead sector_size:4096"));
    // Host-side data access makes no sense between dm-integrity's tags.
    let mut buf = [0u8; 4096];
    assert!(s.crypt(&vk, 0, &mut buf, true).is_err());
    assert!(matches!(
        open_err_key(&mut dev, b"wrong key"),
        Luks2Error::WrongKey
    ));
}

#[test]
fn integrity_format_zeroes_the_integrity_superblock() {
    let mut dev = Cursor::new(vec![0xa5u8; (DATA_OFFSET + (1 << 20)) as usize]);
    let size = dev.get_ref().len() as u64;
    format(
        &mut dev,
        size,
        KEY,
        &FormatOptions {
            integrity: true,
            ..FormatOptions::default()
        },
    )
    .unwrap();
    let d = dev.into_inner();
    let at = DATA_OFFSET as usize;
    assert!(
        d[at..at + INTEGRITY_SB_WIPE as usize]
            .iter()
            .all(|&c| c == 0)
    );
    assert_eq!(d[at + INTEGRITY_SB_WIPE as usize], 0xa5);
    // Without integrity the data area is left alone.
    let mut dev = Cursor::new(vec![0xa5u8; size as usize]);
    format(&mut dev, size, KEY, &FormatOptions::default()).unwrap();
    assert_eq!(dev.into_inner()[at], 0xa5);
}

#[test]
fn integrity_strictness() {
    let cases: Vec<Case> = vec![
        (
            "hmac(sha512)",
            Box::new(|v| v["segments"]["0"]["integrity"]["type"] = "hmac(sha512)".into()),
        ),
        (
            "aead",
            Box::new(|v| v["segments"]["0"]["integrity"]["type"] = "aead".into()),
        ),
        (
            "journal encryption",
            Box::new(|v| v["segments"]["0"]["integrity"]["journal_encryption"] = "ctr(aes)".into()),
        ),
        (
            "journal integrity",
            Box::new(|v| {
                v["segments"]["0"]["integrity"]["journal_integrity"] = "hmac(sha256)".into()
            }),
        ),
        (
            "missing journal field",
            Box::new(|v| {
                v["segments"]["0"]["integrity"]
                    .as_object_mut()
                    .unwrap()
                    .remove("journal_integrity");
            }),
        ),
        (
            "extra field",
            Box::new(|v| v["segments"]["0"]["integrity"]["key_size"] = 32.into()),
        ),
        (
            "integrity as a string",
            Box::new(|v| v["segments"]["0"]["integrity"] = "hmac(sha256)".into()),
        ),
        (
            "integrity dropped (keyslot key is 96 bytes)",
            Box::new(|v| {
                v["segments"]["0"]
                    .as_object_mut()
                    .unwrap()
                    .remove("integrity");
            }),
        ),
        (
            "keyslot key 64 bytes with integrity",
            Box::new(|v| v["keyslots"]["0"]["key_size"] = 64.into()),
        ),
        (
            "area key 96 bytes",
            Box::new(|v| v["keyslots"]["0"]["area"]["key_size"] = 96.into()),
        ),
    ];
    for (name, f) in cases {
        let mut dev = integrity_disk().0;
        rewrite(&mut dev, &*f);
        let e = open_err(&mut dev);
        assert!(matches!(e, Luks2Error::Unsupported(_)), "{name}: {e}");
    }
    // The exact cryptsetup object on a disk without a 96-byte key is refused too.
    let mut dev = pbkdf2_disk();
    rewrite(&mut dev, &|v| {
        v["segments"]["0"]["integrity"] = serde_json::json!({"type": "hmac(sha256)",
            "journal_encryption": "none", "journal_integrity": "none"})
    });
    assert!(matches!(open_err(&mut dev), Luks2Error::Unsupported(_)));
}
