//! The primitives LUKS2 needs, and only in the variants we accept: AES-256-XTS with cryptsetup's
//! `plain64` IV, the LUKS1 anti-forensic splitter with SHA-256 diffusion, PBKDF2-HMAC-SHA256 and
//! Argon2i/Argon2id.
//!
//! XTS is written here on top of the `aes` block cipher rather than taken from a crate: the
//! XTS crates on crates.io track an older `cipher` than the `aes` already in the tree, and the
//! mode is a dozen lines (whole 16-byte blocks only, so no ciphertext stealing: every unit we
//! encrypt is 512 bytes or a multiple of it). It is held to IEEE 1619 vectors in the tests.

use aes::Aes256;
use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

/// AES-256-XTS key: two AES-256 keys.
pub const XTS_KEY_SIZE: usize = 64;

/// An AES-256-XTS key schedule (data key, tweak key). `aes` zeroizes its round keys on drop.
pub struct Xts {
    data: Aes256,
    tweak: Aes256,
}

impl Xts {
    pub fn new(key: &[u8; XTS_KEY_SIZE]) -> Xts {
        // Both halves are exactly 32 bytes, so `new_from_slice` cannot fail; `expect`-free
        // anyway by going through fixed arrays.
        let mut k1 = Zeroizing::new([0u8; 32]);
        let mut k2 = Zeroizing::new([0u8; 32]);
        k1.copy_from_slice(&key[..32]);
        k2.copy_from_slice(&key[32..]);
        Xts {
            data: Aes256::new(&(*k1).into()),
            tweak: Aes256::new(&(*k2).into()),
        }
    }

    /// Encrypts one data unit in place. `unit` must be a multiple of 16 bytes (callers pass
    /// whole sectors); a trailing partial block is left untouched, which no caller produces.
    pub fn encrypt_unit(&self, tweak: u128, unit: &mut [u8]) {
        self.unit(tweak, unit, true)
    }

    pub fn decrypt_unit(&self, tweak: u128, unit: &mut [u8]) {
        self.unit(tweak, unit, false)
    }

    fn unit(&self, tweak: u128, unit: &mut [u8], encrypt: bool) {
        let mut t = aes::Block::from(tweak.to_le_bytes());
        self.tweak.encrypt_block(&mut t);
        let mut t = u128::from_le_bytes(t.into());
        for chunk in unit.chunks_exact_mut(16) {
            let mut tb = t.to_le_bytes();
            let mut b = aes::Block::default();
            for ((o, c), k) in b.iter_mut().zip(chunk.iter()).zip(tb.iter()) {
                *o = c ^ k;
            }
            if encrypt {
                self.data.encrypt_block(&mut b);
            } else {
                self.data.decrypt_block(&mut b);
            }
            for ((c, o), k) in chunk.iter_mut().zip(b.iter()).zip(tb.iter()) {
                *c = o ^ k;
            }
            b.zeroize();
            tb.zeroize();
            // Multiply by α in GF(2^128), little-endian as XTS defines it.
            let carry = t >> 127;
            t = (t << 1) ^ (carry * 0x87);
        }
        t.zeroize();
    }

    /// dm-crypt's `aes-xts-plain64`: `data` is a run of `sector_size`-byte sectors, the first of
    /// which has IV `first_iv`; the IV advances by `sector_size / 512` per sector (dm-crypt
    /// counts IVs in 512-byte units unless `iv_large_sectors` is set, which cryptsetup does not
    /// set for LUKS2). `plain64` is the IV as a 64-bit little-endian number.
    pub fn crypt_sectors(&self, sector_size: usize, first_iv: u64, data: &mut [u8], encrypt: bool) {
        // Never panic on a bad size (chunks of 0): callers validate, this only guards.
        if sector_size < 512 {
            return;
        }
        let step = (sector_size / 512) as u64;
        for (i, sector) in data.chunks_mut(sector_size).enumerate() {
            let iv = first_iv.wrapping_add((i as u64).wrapping_mul(step));
            self.unit(u128::from(iv), sector, encrypt);
        }
    }
}

/// LUKS1's diffuser (cryptsetup `af.c`): each SHA-256-sized block `i` of `buf` becomes
/// `SHA-256(be32(i) ‖ block)`, the last, shorter block truncated.
fn diffuse(buf: &mut [u8]) {
    for (i, block) in buf.chunks_mut(32).enumerate() {
        let mut h = Sha256::new();
        h.update((i as u32).to_be_bytes());
        h.update(&*block);
        let mut out = h.finalize();
        let n = block.len();
        block.copy_from_slice(&out[..n]);
        out.zeroize();
    }
}

/// AF split: `random` holds `(stripes - 1) × key.len()` random bytes, which become the first
/// stripes; returns all `stripes × key.len()` bytes.
pub fn af_split(key: &[u8], stripes: usize, random: &[u8]) -> Zeroizing<Vec<u8>> {
    let n = key.len();
    let mut out = Zeroizing::new(vec![0u8; n * stripes]);
    let mut d = Zeroizing::new(vec![0u8; n]);
    for (i, stripe) in out.chunks_mut(n).take(stripes - 1).enumerate() {
        stripe.copy_from_slice(&random[i * n..(i + 1) * n]);
        xor_into(&mut d, stripe);
        diffuse(&mut d);
    }
    if let Some(last) = out.chunks_mut(n).nth(stripes - 1) {
        for ((o, a), b) in last.iter_mut().zip(d.iter()).zip(key) {
            *o = a ^ b;
        }
    }
    out
}

/// AF merge: the inverse of [`af_split`]. `material` must be `stripes × key_len` bytes
/// (callers check); shorter input gives a wrong key, never a panic.
pub fn af_merge(material: &[u8], key_len: usize, stripes: usize) -> Zeroizing<Vec<u8>> {
    let mut d = Zeroizing::new(vec![0u8; key_len]);
    let mut chunks = material.chunks(key_len).take(stripes);
    for _ in 0..stripes.saturating_sub(1) {
        if let Some(s) = chunks.next() {
            xor_into(&mut d, s);
        }
        diffuse(&mut d);
    }
    if let Some(last) = chunks.next() {
        xor_into(&mut d, last);
    }
    d
}

fn xor_into(d: &mut [u8], s: &[u8]) {
    for (a, b) in d.iter_mut().zip(s) {
        *a ^= b;
    }
}

/// PBKDF2-HMAC-SHA256.
pub fn pbkdf2_sha256(password: &[u8], salt: &[u8], iterations: u32, out: &mut [u8]) {
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, out);
}

/// Argon2 as cryptsetup calls it (version 0x13, `memory` in KiB, `cpus` lanes).
pub fn argon2(
    id: bool,
    password: &[u8],
    salt: &[u8],
    time: u32,
    memory: u32,
    cpus: u32,
    out: &mut [u8],
) -> Result<(), String> {
    let params = argon2::Params::new(memory, time, cpus, Some(out.len()))
        .map_err(|e| format!("argon2 parameters: {e}"))?;
    let alg = if id {
        argon2::Algorithm::Argon2id
    } else {
        argon2::Algorithm::Argon2i
    };
    argon2::Argon2::new(alg, argon2::Version::V0x13, params)
        .hash_password_into(password, salt, out)
        .map_err(|e| format!("argon2: {e}"))
}
