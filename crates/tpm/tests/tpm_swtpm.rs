//! The TPM client against a real TPM 2.0: swtpm's raw TCP data channel on 127.0.0.1.
//!
//! The unit tests prove the parser against canned bytes; this proves the bytes we send are what
//! a real TPM expects and that its real answers parse. A missing swtpm fails the test on
//! purpose: a silently skipped TPM test would let a broken client through CI.

use cvm_tpm::verify::{self, AkPublic, QuoteError};
use cvm_tpm::{AK_HANDLE, HashAlg, TPM_RC_HANDLE, TcpTransport, Tpm, TpmError, Transport};
use sha2::Digest;

use cvm_testkit as common;

use common::swtpm::start;

#[test]
fn swtpm_pcr_banks_and_pcr_read() {
    let (swtpm, mut tpm) = start();

    // swtpm already ran Startup(CLEAR) itself, so this exercises the TPM_RC_INITIALIZE path.
    tpm.startup_clear()
        .expect("Startup(CLEAR) on a started TPM");
    tpm.startup_clear().expect("Startup(CLEAR) twice");

    let banks = tpm.pcr_banks().expect("GetCapability(TPM_CAP_PCRS)");
    let sha256 = banks
        .iter()
        .find(|bank| bank.alg == HashAlg::Sha256)
        .unwrap_or_else(|| panic!("no sha256 bank in {banks:?}"));
    assert!(sha256.is_active(), "{banks:?}");
    assert_eq!(sha256.pcrs, (0..=23).collect::<Vec<u32>>(), "{banks:?}");

    let all: Vec<u32> = (0..=23).collect();
    let values = tpm
        .pcr_read(HashAlg::Sha256, &all)
        .expect("PCR_Read sha256 0..=23");
    assert_eq!(
        values.iter().map(|(pcr, _)| *pcr).collect::<Vec<_>>(),
        all,
        "PCR indices"
    );
    for (pcr, digest) in &values {
        assert_eq!(digest.len(), 32, "sha256 PCR {pcr}");
    }
    assert_eq!(values[0].1, vec![0u8; 32], "PCR 0 of a fresh TPM");

    // Every active bank reads in full (more than 8 PCRs, so the continuation loop runs
    // against real partial answers), with digests of that bank's length.
    for bank in banks.iter().filter(|bank| bank.is_active()) {
        let values = tpm
            .pcr_read(bank.alg, &bank.pcrs)
            .unwrap_or_else(|e| panic!("PCR_Read {}: {e:?}", bank.alg));
        assert_eq!(values.len(), bank.pcrs.len(), "{}", bank.alg);
        assert!(
            values
                .iter()
                .all(|(_, digest)| digest.len() == bank.alg.digest_len()),
            "{}",
            bank.alg
        );
    }

    // The same values twice in a row: nothing extends behind our back.
    let again = tpm.pcr_read(HashAlg::Sha256, &all).expect("PCR_Read again");
    assert_eq!(again, values);

    drop(tpm);
    drop(swtpm);
}

/// The extend rule of a PCR bank: new = H(old ‖ digest).
fn extended(alg: HashAlg, old: &[u8], digest: &[u8]) -> Vec<u8> {
    let data = [old, digest].concat();
    match alg {
        HashAlg::Sha1 => sha1::Sha1::digest(&data).to_vec(),
        HashAlg::Sha256 => sha2::Sha256::digest(&data).to_vec(),
        HashAlg::Sha384 => sha2::Sha384::digest(&data).to_vec(),
        HashAlg::Sha512 => sha2::Sha512::digest(&data).to_vec(),
        HashAlg::Sm3_256 => panic!("no SM3 here"),
    }
}

#[test]
fn swtpm_pcr_extend_in_every_active_bank() {
    let (_swtpm, mut tpm) = start();
    let banks: Vec<HashAlg> = tpm
        .pcr_banks()
        .expect("GetCapability")
        .into_iter()
        .filter(|bank| bank.is_active())
        .map(|bank| bank.alg)
        .collect();
    assert!(banks.contains(&HashAlg::Sha256), "{banks:?}");

    for round in 0..2u8 {
        let old: Vec<Vec<u8>> = banks
            .iter()
            .map(|&alg| tpm.pcr_read(alg, &[15]).expect("PCR_Read 15")[0].1.clone())
            .collect();
        let digests: Vec<(HashAlg, Vec<u8>)> = banks
            .iter()
            .map(|&alg| {
                let digest = (0..alg.digest_len())
                    .map(|i| u8::try_from(i).unwrap() ^ round ^ 0xA5)
                    .collect();
                (alg, digest)
            })
            .collect();
        tpm.pcr_extend(15, &digests).expect("PCR_Extend 15");
        for ((alg, digest), old) in digests.iter().zip(&old) {
            let new = tpm.pcr_read(*alg, &[15]).expect("PCR_Read 15")[0].1.clone();
            assert_eq!(new, extended(*alg, old, digest), "{alg} round {round}");
            assert_ne!(&new, old, "{alg}");
        }
    }

    // A digest of the wrong length never reaches the TPM, and the PCR stays as it was.
    let before = tpm.pcr_read(HashAlg::Sha256, &[15]).unwrap();
    let err = tpm
        .pcr_extend(15, &[(HashAlg::Sha256, vec![0; 20])])
        .unwrap_err();
    assert_eq!(err.command(), Some("PCR_Extend"));
    assert_eq!(tpm.pcr_read(HashAlg::Sha256, &[15]).unwrap(), before);
}

#[test]
fn swtpm_get_random() {
    let (_swtpm, mut tpm) = start();
    let a = tpm.get_random(200).expect("GetRandom 200");
    let b = tpm.get_random(200).expect("GetRandom 200");
    assert_eq!(a.len(), 200);
    assert_ne!(a, b);
    assert!(a.iter().any(|&byte| byte != 0));
}

/// Flips one bit of `bytes[i]`.
fn flipped(bytes: &[u8], i: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[i] ^= 0x01;
    out
}

#[test]
fn swtpm_attestation_key_and_quote() {
    let (swtpm, mut tpm) = start();

    let ak = tpm.attestation_key().expect("attestation key (created)");
    assert_eq!(ak.handle, AK_HANDLE);
    assert_eq!(ak.rsa_modulus.len(), 256);
    assert_eq!(ak.rsa_exponent, 65537);
    // The second call finds the persisted key; a new connection, as on the next boot.
    drop(tpm);
    let mut tpm = Tpm::new(TcpTransport::connect(swtpm.addr).expect("reconnect"));
    let again = tpm.attestation_key().expect("attestation key (persisted)");
    assert_eq!(again, ak);

    let nonce = tpm.get_random(32).expect("GetRandom");
    let all: Vec<u32> = (0..=23).collect();
    let quote = tpm.quote(&ak, &nonce, &all).expect("Quote");
    let pcrs = tpm.pcr_read(HashAlg::Sha256, &all).expect("PCR_Read");
    assert_eq!(
        verify::rsassa_signature(&quote.signature_raw).unwrap(),
        quote.signature
    );

    let spki = AkPublic::SpkiDer(&ak.spki_der);
    let attest = verify::verify_quote(&spki, &quote.attest, &quote.signature, &nonce, &pcrs)
        .expect("the quote verifies");
    assert_eq!(attest.extra_data, nonce);
    verify::verify_quote(
        &ak.verifier_key(),
        &quote.attest,
        &quote.signature,
        &nonce,
        &pcrs,
    )
    .expect("the quote verifies with modulus and exponent");
    // PCR values in any order are fine.
    let mut shuffled = pcrs.clone();
    shuffled.reverse();
    verify::verify_quote(&spki, &quote.attest, &quote.signature, &nonce, &shuffled)
        .expect("order of the given PCR values does not matter");

    let err = verify::verify_quote(
        &spki,
        &quote.attest,
        &quote.signature,
        &flipped(&nonce, 31),
        &pcrs,
    )
    .unwrap_err();
    assert!(matches!(err, QuoteError::NonceMismatch), "{err:?}");

    let mut wrong_pcr = pcrs.clone();
    wrong_pcr[8].1 = flipped(&wrong_pcr[8].1, 0);
    let err = verify::verify_quote(&spki, &quote.attest, &quote.signature, &nonce, &wrong_pcr)
        .unwrap_err();
    assert!(matches!(err, QuoteError::PcrDigestMismatch), "{err:?}");

    let err = verify::verify_quote(&spki, &quote.attest, &quote.signature, &nonce, &pcrs[..23])
        .unwrap_err();
    assert!(
        matches!(err, QuoteError::SelectionMismatch { .. }),
        "{err:?}"
    );

    for i in [0, 100, 255] {
        let err = verify::verify_quote(
            &spki,
            &quote.attest,
            &flipped(&quote.signature, i),
            &nonce,
            &pcrs,
        )
        .unwrap_err();
        assert!(matches!(err, QuoteError::BadSignature), "byte {i}: {err:?}");
    }
    // A changed message (here: its clock) no longer matches its signature.
    let clock_at = 6 + 2 + attest.qualified_signer.len() + 2 + nonce.len() + 7;
    let err = verify::verify_quote(
        &spki,
        &flipped(&quote.attest, clock_at),
        &quote.signature,
        &nonce,
        &pcrs,
    )
    .unwrap_err();
    assert!(matches!(err, QuoteError::BadSignature), "{err:?}");

    // Extending a quoted PCR makes the old values stale for a fresh quote.
    tpm.pcr_extend(15, &[(HashAlg::Sha256, vec![7; 32])])
        .and_then(|()| {
            let banks = tpm.pcr_banks()?;
            // Keep the other banks in step, as the agent does.
            let others: Vec<(HashAlg, Vec<u8>)> = banks
                .iter()
                .filter(|b| b.is_active() && b.alg != HashAlg::Sha256)
                .map(|b| (b.alg, vec![7; b.alg.digest_len()]))
                .collect();
            tpm.pcr_extend(15, &others)
        })
        .expect("PCR_Extend");
    let fresh = tpm.quote(&ak, &nonce, &all).expect("Quote");
    let err =
        verify::verify_quote(&spki, &fresh.attest, &fresh.signature, &nonce, &pcrs).unwrap_err();
    assert!(matches!(err, QuoteError::PcrDigestMismatch), "{err:?}");
}

#[test]
fn swtpm_nv_read_of_an_absent_index() {
    let (_swtpm, mut tpm) = start();
    let err = tpm.nv_read(0x0140_0001).unwrap_err();
    assert_eq!(err.response_base(), Some(TPM_RC_HANDLE), "{err:?}");
    assert_eq!(err.command(), Some("NV_ReadPublic"));
    let shown = format!("{err} ({})", std::error::Error::source(&err).unwrap());
    assert_eq!(shown, "NV_ReadPublic failed (TPM_RC_HANDLE, handle 1)");
    let err = tpm.nv_read_public(0x01C0_0002).unwrap_err();
    assert_eq!(err.response_base(), Some(TPM_RC_HANDLE), "{err:?}");
}

/// A password-session command frame for swtpm, built by hand (what a hostile host could send
/// before the agent starts).
fn raw_command(cc: u32, handles: &[u32], params: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for handle in handles {
        body.extend_from_slice(&handle.to_be_bytes());
    }
    body.extend_from_slice(&9u32.to_be_bytes());
    body.extend_from_slice(&[0x40, 0, 0, 0x09, 0, 0, 0x01, 0, 0]);
    body.extend_from_slice(params);
    let mut out = vec![0x80, 0x02];
    out.extend_from_slice(&u32::try_from(10 + body.len()).unwrap().to_be_bytes());
    out.extend_from_slice(&cc.to_be_bytes());
    out.extend_from_slice(&body);
    out
}

fn response_code(response: &[u8]) -> u32 {
    u32::from_be_bytes(response[6..10].try_into().unwrap())
}

#[test]
fn swtpm_planted_key_at_the_ak_handle_is_refused() {
    let (swtpm, tpm) = start();
    drop(tpm);
    let mut raw = TcpTransport::connect(swtpm.addr).expect("connect");
    // Our template with `restricted` cleared: a key that would sign anything.
    let template = [
        0x00, 0x01, 0x00, 0x0B, 0x00, 0x04, 0x00, 0x72, 0x00, 0x00, 0x00, 0x10, 0x00, 0x14, 0x00,
        0x0B, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    let mut params = vec![0x00, 0x04, 0x00, 0x00, 0x00, 0x00];
    params.extend_from_slice(&u16::try_from(template.len()).unwrap().to_be_bytes());
    params.extend_from_slice(&template);
    params.extend_from_slice(&[0x00, 0x00, 0x00, 0x00, 0x00, 0x00]);
    let created = raw
        .transact(&raw_command(0x131, &[0x4000_000B], &params))
        .expect("CreatePrimary");
    assert_eq!(response_code(&created), 0, "CreatePrimary");
    let handle = u32::from_be_bytes(created[10..14].try_into().unwrap());
    let evicted = raw
        .transact(&raw_command(
            0x120,
            &[0x4000_0001, handle],
            &AK_HANDLE.to_be_bytes(),
        ))
        .expect("EvictControl");
    assert_eq!(response_code(&evicted), 0, "EvictControl");
    drop(raw);

    let mut tpm = Tpm::new(TcpTransport::connect(swtpm.addr).expect("reconnect"));
    let err = tpm.attestation_key().unwrap_err();
    let TpmError::Command { command, source } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(*command, "ReadPublic");
    assert!(
        matches!(
            **source,
            TpmError::ForeignKey {
                handle: AK_HANDLE,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(source.to_string().contains("objectAttributes"), "{source}");
}

/// NV define, write in more than one 1024-byte chunk, read back; a platform AK made from a
/// template, made persistent, read back as the same key, quoting; an index handle refused.
#[test]
fn swtpm_nv_write_and_platform_aks() {
    let (_swtpm, mut tpm) = start();
    let index = 0x01c1_0000;
    // OWNERWRITE | OWNERREAD | AUTHREAD.
    tpm.nv_define_space(index, 0x0000_0002 | 0x0002_0000 | 0x0004_0000, 2000)
        .expect("NV_DefineSpace");
    let data: Vec<u8> = (0..2000u32).map(|i| (i * 7) as u8).collect();
    tpm.nv_write(index, &data).expect("NV_Write");
    assert_eq!(tpm.nv_read(index).unwrap(), data);
    let public = tpm.nv_read_public(index).unwrap();
    assert!(public.is_written() && public.owner_write() && !public.auth_write());
    assert!(tpm.nv_write(index, &vec![0; 2001]).is_err());
    assert!(tpm.nv_write(0x8100_0003, &[0]).is_err());

    let template = cvm_tpm::ak_template_bytes().unwrap();
    let ak = tpm.ak_from_template(&template).expect("CreatePrimary");
    tpm.make_persistent(ak.handle, cvm_tpm::AZURE_AK_HANDLE)
        .expect("EvictControl");
    tpm.flush_context(ak.handle).unwrap();
    let persistent = tpm.persistent_ak(cvm_tpm::AZURE_AK_HANDLE).unwrap();
    assert_eq!(persistent.spki_der, ak.spki_der);
    let quote = tpm.quote(&persistent, b"nonce", &[0, 8, 15]).unwrap();
    let pcrs = tpm.pcr_read(HashAlg::Sha256, &[0, 8, 15]).unwrap();
    let attest = verify::verify_quote(
        &persistent.verifier_key(),
        &quote.attest,
        &quote.signature,
        b"nonce",
        &pcrs,
    )
    .unwrap();
    assert_eq!(attest.extra_data, b"nonce");
    // Nothing at another persistent handle.
    let err = tpm.persistent_ak(0x8100_0009).unwrap_err();
    assert_eq!(err.response_base(), Some(TPM_RC_HANDLE), "{err}");
}
