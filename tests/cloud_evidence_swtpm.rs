//! Cloud evidence against a real TPM (swtpm): Azure's HCL-report refresh and AK, GCP's AK
//! from its NV template with its certificate, each verified by the dev KBS's checks.
//!
//! Azure's paravisor is played by [`Paravisor`], a transport between the agent's TPM client and
//! swtpm with the same NV indices, sizes and protocol as Azure's: the HCL report in NV
//! 0x01400001 (2600 bytes, the boot-time report until the guest asks for another), the guest's
//! report data in NV 0x01400002 (64 bytes, defined by the guest if absent, as `az-cvm-vtpm`
//! does), the AK at persistent handle 0x81000003. When a TPM2_NV_Write to 0x01400002 succeeds,
//! it makes a new HCL report whose runtime data carries those 64 bytes as `user-data`
//! (upper-case hex, as Azure writes it) and the AK at 0x81000003 as `HCLAkPub`.
//!
//! swtpm caps NV indices at 2048 bytes, so the double serves 0x01400001 itself, on the wire:
//! TPM2_NV_ReadPublic (TPMS_NV_PUBLIC with nameAlg SHA-256, the size 2600 and the name the TPM
//! would compute) and TPM2_NV_Read with a password session (ranges checked, TPM_RC_NV_RANGE
//! beyond the end); every other command goes to swtpm. Its limits: the attributes it reports
//! for 0x01400001 (platform-created, written, owner and auth read, no DA) are our best
//! knowledge of Azure's, not read from an Azure VM; the hardware report inside is the real
//! fixture's, not re-signed (no AMD or Intel key here), so its REPORT_DATA is not the hash of
//! the new runtime data and a verifier refuses the binding, which the tests assert; it answers
//! at once (Azure's refresh goes through the paravisor and the PSP/TDX module).

use base64::Engine as _;
use cvm_agent::evidence::{self, AzureHost, EvidenceError};
use cvm_agent::kbs::protocol::Tee;
use cvm_agent::measure::{Event, Measurer};
use cvm_agent::tee::azure::{AzSnpVtpmEvidence, AzTdxVtpmEvidence, AzureError, HclReport};
use cvm_agent::tee::detect::TeeKind;
use cvm_agent::tee::tpm::TpmEvidence;
use cvm_agent::tpm::{
    AZURE_AK_HANDLE, GCE_AK_CERT_NV_INDEX_RSA, GCE_AK_TEMPLATE_NV_INDEX_RSA, HashAlg, TcpTransport,
    Tpm, TpmError, Transport,
};
use cvm_devkbs::Policy;
use cvm_devkbs::verify::{self, AkStore, VerifyError};
use cvm_testkit::swtpm::start;

const HCL_INDEX: u32 = 0x0140_0001;
const REPORT_DATA_INDEX: u32 = 0x0140_0002;
const TPM_CC_NV_WRITE: u32 = 0x0000_0137;
const TPM_CC_NV_READ: u32 = 0x0000_014E;
const TPM_CC_NV_READ_PUBLIC: u32 = 0x0000_0169;
/// Azure's HCL report index size.
const HCL_INDEX_SIZE: usize = 2600;
/// PLATFORMCREATE | WRITTEN | NO_DA | AUTHREAD | OWNERREAD | PPREAD | PPWRITE.
const HCL_INDEX_ATTRIBUTES: u32 =
    0x4000_0000 | 0x2000_0000 | 0x0200_0000 | 0x0004_0000 | 0x0002_0000 | 0x0001_0000 | 0x1;
/// OWNERWRITE | OWNERREAD | AUTHREAD.
const OWNER_RW_AUTH_READ: u32 = 0x0000_0002 | 0x0002_0000 | 0x0004_0000;

fn fixture(path: &str) -> Vec<u8> {
    let p = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// Azure's paravisor, as far as the guest's vTPM protocol goes (module docs).
struct Paravisor {
    inner: TcpTransport,
    /// The fixture HCL report the new ones are made from.
    boot_report: Vec<u8>,
    /// `HCLAkPub`'s modulus (base64url) in the reports it writes.
    ak_n: String,
    /// Off: a paravisor that never refreshes the report.
    refresh: bool,
    refreshes: usize,
    /// The contents of NV 0x01400001 (padded to its size).
    hcl_nv: Vec<u8>,
}

impl Paravisor {
    /// Provisions swtpm as Azure's host would: the AK at 0x81000003 (`ak_template` made
    /// primary), the boot-time HCL report (the fixture) in 0x01400001.
    fn provision(mut tpm: Tpm<TcpTransport>, boot_report: Vec<u8>) -> Tpm<Paravisor> {
        let template = cvm_agent::tpm::ak_template_bytes().unwrap();
        let ak = tpm.ak_from_template(&template).unwrap();
        tpm.make_persistent(ak.handle, AZURE_AK_HANDLE).unwrap();
        tpm.flush_context(ak.handle).unwrap();
        let mut hcl_nv = boot_report.clone();
        hcl_nv.resize(HCL_INDEX_SIZE, 0);
        let ak_n = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&ak.rsa_modulus);
        Tpm::new(Paravisor {
            inner: tpm.into_transport(),
            boot_report,
            ak_n,
            refresh: true,
            refreshes: 0,
            hcl_nv,
        })
    }

    /// The boot report with `user_data` and this vTPM's AK in its runtime data.
    fn report_for(&self, user_data: &[u8]) -> Vec<u8> {
        let r = &self.boot_report;
        let var_len = u32::from_le_bytes(r[0x4c0 + 16..0x4c0 + 20].try_into().unwrap()) as usize;
        let start = 0x4c0 + 20;
        let json = std::str::from_utf8(&r[start..start + var_len]).unwrap();
        let hcl = HclReport::parse(r).unwrap();
        let old_n = hcl.runtime_data().unwrap().keys[0].n.clone();
        let old_user = hcl.runtime_data().unwrap().user_data.unwrap();
        let upper: String = user_data.iter().map(|b| format!("{b:02X}")).collect();
        let new = json
            .replacen(&old_n, &self.ak_n, 1)
            .replacen(&old_user, &upper, 1);
        assert_eq!(new.len(), json.len(), "same-size runtime data");
        let mut out = r.clone();
        out[start..start + var_len].copy_from_slice(new.as_bytes());
        out
    }
}

/// A TPM response: tag, size, code, body.
fn frame(tag: u16, code: u32, body: &[u8]) -> Vec<u8> {
    let mut out = tag.to_be_bytes().to_vec();
    out.extend_from_slice(&((10 + body.len()) as u32).to_be_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn tpm2b(data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(data);
    out
}

impl Paravisor {
    /// TPM2_NV_ReadPublic of 0x01400001: TPMS_NV_PUBLIC and its name.
    fn read_public(&self) -> Vec<u8> {
        use sha2::Digest as _;
        let mut public = HCL_INDEX.to_be_bytes().to_vec();
        public.extend_from_slice(&0x000Bu16.to_be_bytes());
        public.extend_from_slice(&HCL_INDEX_ATTRIBUTES.to_be_bytes());
        public.extend_from_slice(&tpm2b(&[]));
        public.extend_from_slice(&(HCL_INDEX_SIZE as u16).to_be_bytes());
        let mut name = 0x000Bu16.to_be_bytes().to_vec();
        name.extend_from_slice(&sha2::Sha256::digest(&public));
        let mut body = tpm2b(&public);
        body.extend_from_slice(&tpm2b(&name));
        frame(0x8001, 0, &body)
    }

    /// TPM2_NV_Read of 0x01400001 with a password session: size and offset after the
    /// authorization area.
    fn read(&self, command: &[u8]) -> Vec<u8> {
        let auth_size = u32::from_be_bytes(command[18..22].try_into().unwrap()) as usize;
        let at = 22 + auth_size;
        let size = u16::from_be_bytes(command[at..at + 2].try_into().unwrap()) as usize;
        let offset = u16::from_be_bytes(command[at + 2..at + 4].try_into().unwrap()) as usize;
        let Some(data) = self.hcl_nv.get(offset..offset + size) else {
            // TPM_RC_NV_RANGE
            return frame(0x8001, 0x146, &[]);
        };
        let params = tpm2b(data);
        let mut body = (params.len() as u32).to_be_bytes().to_vec();
        body.extend_from_slice(&params);
        // Password session answer: empty nonce, continueSession, empty HMAC.
        body.extend_from_slice(&[0, 0, 1, 0, 0]);
        frame(0x8002, 0, &body)
    }
}

impl Transport for Paravisor {
    fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>, TpmError> {
        let u32_at = |b: &[u8], at: usize| {
            b.get(at..at + 4)
                .map(|s| u32::from_be_bytes(s.try_into().unwrap()))
        };
        let cc = u32_at(command, 6);
        if cc == Some(TPM_CC_NV_READ_PUBLIC) && u32_at(command, 10) == Some(HCL_INDEX) {
            return Ok(self.read_public());
        }
        if cc == Some(TPM_CC_NV_READ) && u32_at(command, 14) == Some(HCL_INDEX) {
            return Ok(self.read(command));
        }
        let response = self.inner.transact(command)?;
        let wrote_report_data = cc == Some(TPM_CC_NV_WRITE)
            && u32_at(command, 14) == Some(REPORT_DATA_INDEX)
            && u32_at(&response, 6) == Some(0);
        if wrote_report_data && self.refresh {
            let user_data = Tpm::new(&mut self.inner).nv_read(REPORT_DATA_INDEX)?;
            let mut report = self.report_for(&user_data);
            report.resize(HCL_INDEX_SIZE, 0);
            self.hcl_nv = report;
            self.refreshes += 1;
        }
        Ok(response)
    }
}

/// Azure's host services with fixed answers, recording what was asked.
#[derive(Default)]
struct Host {
    vcek: Vec<u8>,
    td_quote: Vec<u8>,
    td_reports: Vec<Vec<u8>>,
}

impl AzureHost for Host {
    fn fetch_vcek(&mut self) -> Result<Vec<u8>, String> {
        Ok(self.vcek.clone())
    }
    fn fetch_td_quote(&mut self, td_report: &[u8]) -> Result<Vec<u8>, String> {
        self.td_reports.push(td_report.to_vec());
        Ok(self.td_quote.clone())
    }
}

const DIGEST: [u8; 48] = [0x42; 48];

#[test]
fn azure_snp_evidence_refreshes_the_hcl_report_and_quotes_with_its_ak() {
    let (_swtpm, tpm) = start();
    let mut tpm = Paravisor::provision(tpm, fixture("az-snp-vtpm/hcl-report.bin"));
    let vcek_pem = fixture("az-snp-vtpm/vcek.pem");
    let mut host = Host {
        vcek: vcek_pem.clone(),
        ..Host::default()
    };
    // The agent's log so far and a firmware log go along, as in `tpm` evidence.
    let mut log = Measurer::new(&[HashAlg::Sha256]).unwrap();
    log.record(Event::mode(cvm_agent::cmdline::Mode::Production))
        .unwrap();
    let firmware = b"firmware log".to_vec();
    let value = evidence::azure_evidence(
        TeeKind::AzSnpVtpm,
        &mut tpm,
        &DIGEST,
        &mut host,
        Some(log.log()),
        Some(firmware.clone()),
    )
    .unwrap();
    assert_eq!(tpm.transport().refreshes, 1);
    // The guest defined NV 0x01400002 as az-cvm-vtpm does and wrote the padded digest there.
    let public = tpm.nv_read_public(REPORT_DATA_INDEX).unwrap();
    assert_eq!(public.data_size, 64);
    assert!(public.owner_write() && public.owner_read());
    let mut padded = DIGEST.to_vec();
    padded.resize(64, 0);
    assert_eq!(tpm.nv_read(REPORT_DATA_INDEX).unwrap(), padded);

    // Trustee's form: version 2, the refreshed report, the quote by the HCL's AK over the
    // digest itself, the VCEK as DER (the first certificate of THIM's PEM).
    let ev = AzSnpVtpmEvidence::from_json(value.to_string().as_bytes()).unwrap();
    assert_eq!(ev.version, 2);
    assert_eq!(ev.logs.cel_eventlog, Some(log.log().to_json()));
    assert_eq!(ev.logs.eventlog, Some(firmware));
    assert_eq!(
        value["eventlog"],
        base64::engine::general_purpose::STANDARD.encode(b"firmware log")
    );
    assert_eq!(
        ev.vcek,
        cvm_agent::tee::x509::pem_certificates(&vcek_pem).unwrap()[0]
    );
    let hcl = HclReport::parse(&ev.hcl_report).unwrap();
    assert_eq!(
        hcl.runtime_data().unwrap().user_data_bytes().unwrap(),
        padded
    );
    let ak = hcl.ak_pub().unwrap();
    let attest = ev.tpm_quote.to_quote().verify(&ak.verifier_key()).unwrap();
    assert_eq!(attest.extra_data, DIGEST);
    let pcrs = tpm
        .pcr_read(HashAlg::Sha256, &(0..24).collect::<Vec<_>>())
        .unwrap();
    assert_eq!(ev.tpm_quote.pcrs.len(), 24);
    assert_eq!(ev.tpm_quote.pcrs[0].to_vec(), pcrs[0].1);
    // The double's limit: the fixture's SNP report was not re-signed for the new runtime
    // data, so a verifier stops at the binding, before the VCEK.
    assert!(matches!(ev.verify(), Err(AzureError::Binding)));

    // The same through the agent's entry point, with the host services as its cloud input.
    let value = evidence::collect_on(
        TeeKind::AzSnpVtpm,
        std::path::Path::new("/nonexistent"),
        Some(&mut tpm),
        &DIGEST,
        None,
        &mut evidence::CloudInputs {
            gcp_ak: false,
            azure: Some(&mut host),
        },
    )
    .unwrap();
    assert_eq!(value["version"], 2);
    assert_eq!(tpm.transport().refreshes, 2);

    // A paravisor that does not refresh the report: the stale one is refused by name.
    tpm.transport_mut().refresh = false;
    let err = evidence::azure_evidence(
        TeeKind::AzSnpVtpm,
        &mut tpm,
        &[0x17; 48],
        &mut host,
        None,
        None,
    )
    .unwrap_err();
    assert!(matches!(err, EvidenceError::HclStale(_)), "{err}");
    assert!(err.to_string().contains("did not refresh"), "{err}");
    // An HCL report of the other flavour.
    tpm.transport_mut().refresh = true;
    let err =
        evidence::azure_evidence(TeeKind::AzTdxVtpm, &mut tpm, &DIGEST, &mut host, None, None)
            .unwrap_err();
    assert!(matches!(err, EvidenceError::HclKind { .. }), "{err}");
}

#[test]
fn azure_tdx_evidence_gets_the_td_quote_of_the_hcl_tdreport() {
    let (_swtpm, tpm) = start();
    let mut tpm = Paravisor::provision(tpm, fixture("az-tdx-vtpm/hcl-report.bin"));
    let mut host = Host {
        td_quote: fixture("az-tdx-vtpm/td-quote.bin"),
        ..Host::default()
    };
    let mut log = Measurer::new(&[HashAlg::Sha256]).unwrap();
    log.record(Event::mode(cvm_agent::cmdline::Mode::Production))
        .unwrap();
    let value = evidence::azure_evidence(
        TeeKind::AzTdxVtpm,
        &mut tpm,
        &DIGEST,
        &mut host,
        Some(log.log()),
        None,
    )
    .unwrap();
    let ev = AzTdxVtpmEvidence::from_json(value.to_string().as_bytes()).unwrap();
    assert_eq!(ev.version, 1);
    assert_eq!(ev.logs.cel_eventlog, Some(log.log().to_json()));
    // No firmware log (direct kernel boot): no member.
    assert_eq!(ev.logs.eventlog, None);
    assert!(value.get("eventlog").is_none());
    assert_eq!(ev.td_quote, host.td_quote);
    // The host was asked for a quote of exactly the TDREPORT in the refreshed HCL report.
    assert_eq!(
        host.td_reports,
        vec![ev.hcl_report[0x20..0x20 + 1024].to_vec()]
    );
    let hcl = HclReport::parse(&ev.hcl_report).unwrap();
    let attest = ev
        .tpm_quote
        .to_quote()
        .verify(&hcl.ak_pub().unwrap().verifier_key())
        .unwrap();
    assert_eq!(attest.extra_data, DIGEST);
    assert!(matches!(ev.verify(), Err(AzureError::Binding)));
}

/// A second key at 0x81000003 than the one the HCL report names is refused before quoting.
#[test]
fn azure_ak_must_be_the_hcl_reports() {
    let (_swtpm, tpm) = start();
    let mut tpm = Paravisor::provision(tpm, fixture("az-snp-vtpm/hcl-report.bin"));
    tpm.transport_mut().ak_n = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
        cvm_agent::tee::azure::HclReport::parse(&fixture("az-snp-vtpm/hcl-report.bin"))
            .unwrap()
            .ak_pub()
            .unwrap()
            .modulus,
    );
    let mut host = Host::default();
    let err =
        evidence::azure_evidence(TeeKind::AzSnpVtpm, &mut tpm, &DIGEST, &mut host, None, None)
            .unwrap_err();
    assert!(matches!(err, EvidenceError::AzureAkMismatch), "{err}");
}

/// The agent's measurements so far, extended into `tpm` (mode only: enough for claims).
fn measured(tpm: &mut Tpm<TcpTransport>) -> Measurer {
    let mut log = Measurer::new(&[HashAlg::Sha256]).unwrap();
    let event = Event::mode(cvm_agent::cmdline::Mode::Production);
    let pcr = event.pcr();
    let digests = log.record(event).unwrap();
    tpm.pcr_extend(pcr, &digests).unwrap();
    log
}

/// An rcgen view of an RSA SubjectPublicKeyInfo, so the test CA can certify the vTPM's key.
struct RsaSpki(Vec<u8>);

impl rcgen::PublicKeyData for RsaSpki {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_RSA_SHA256
    }
}

struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    params: rcgen::CertificateParams,
}

fn ca(name: &str) -> Ca {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    Ca { cert, key, params }
}

/// A certificate from `ca` for the RSA key `spki` (DER SubjectPublicKeyInfo).
fn ak_cert(ca: &Ca, spki: &[u8]) -> Vec<u8> {
    use x509_cert::der::Decode as _;
    let info = x509_cert::spki::SubjectPublicKeyInfoOwned::from_der(spki).unwrap();
    let key = RsaSpki(info.subject_public_key.raw_bytes().to_vec());
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "vTPM AK");
    let issuer = rcgen::Issuer::from_params(&ca.params, &ca.key);
    params.signed_by(&key, &issuer).unwrap().der().to_vec()
}

/// GCP: the AK made from the template in NV 0x01c10001 quotes, its certificate from NV
/// 0x01c10000 goes along as `ak_cert`, and the dev KBS trusts the AK through the test CA
/// (policy `ak_ca`) without listing it. Refused: a certificate from another CA, a certificate
/// for another key (by the agent before quoting, and by the KBS when swapped in), a policy
/// without `ak_ca`, and no certificate at all.
#[test]
fn gcp_ak_from_the_nv_template_chains_to_the_ca() {
    let (_swtpm, mut tpm) = start();
    let template = cvm_agent::tpm::ak_template_bytes().unwrap();
    // The "cloud" learns the key its template gives and certifies it.
    let ak = tpm.ak_from_template(&template).unwrap();
    tpm.flush_context(ak.handle).unwrap();
    let google = ca("test AK CA");
    let cert = ak_cert(&google, &ak.spki_der);
    for (index, data) in [
        (GCE_AK_TEMPLATE_NV_INDEX_RSA, &template),
        (GCE_AK_CERT_NV_INDEX_RSA, &cert),
    ] {
        tpm.nv_define_space(index, OWNER_RW_AUTH_READ, data.len() as u16)
            .unwrap();
        tpm.nv_write(index, data).unwrap();
    }
    let log = measured(&mut tpm);
    let digest = [0x33u8; 48];
    let report_data = evidence::report_data_for(TeeKind::Tpm, &digest).unwrap();
    let mut ev = evidence::gcp_tpm_evidence(&mut tpm, &report_data).unwrap();
    assert_eq!(
        ev.ak_public, ak.spki_der,
        "the template gives the same key again"
    );
    assert_eq!(ev.ak_cert.as_deref(), Some(&cert[..]));
    ev.cel_eventlog = Some(log.log().to_json());
    let json = serde_json::to_value(&ev).unwrap();
    // Trustee's tpm verifier reads the same JSON (the extra member is ignored by it).
    assert!(json["ak_cert"].is_string());
    let parsed = TpmEvidence::from_json(json.to_string().as_bytes()).unwrap();
    assert_eq!(parsed, ev);

    // The agent's entry point on GCP uses this AK too.
    let value = evidence::collect_on(
        TeeKind::Tpm,
        std::path::Path::new("/nonexistent"),
        Some(&mut tpm),
        &digest,
        Some(log.log()),
        &mut evidence::CloudInputs {
            gcp_ak: true,
            azure: None,
        },
    )
    .unwrap();
    assert_eq!(value["ak_public"], json["ak_public"]);
    assert_eq!(value["ak_cert"], json["ak_cert"]);

    let pem = |c: &rcgen::Certificate| c.pem();
    let dir = tempfile::tempdir().unwrap();
    let policy_with = |ca_pem: Option<String>| {
        let mut text = String::from("require_initdata = false\n");
        if let Some(ca_pem) = ca_pem {
            std::fs::write(dir.path().join("ak-ca.pem"), ca_pem).unwrap();
            text.push_str("ak_ca = \"ak-ca.pem\"\n");
        }
        Policy::parse(&text, dir.path()).unwrap()
    };
    let run = |json: &serde_json::Value, policy: &Policy| {
        verify::verify(Tee::Tpm, json, &digest, None, policy, &AkStore::new(policy))
    };
    let policy = policy_with(Some(pem(&google.cert)));
    let v = run(&json, &policy).unwrap();
    assert_eq!(v.claims["ak-trust"], "certified");
    assert_eq!(v.claims["mode"], "production");

    // Another CA did not sign it.
    let other = ca("another CA");
    let err = run(&json, &policy_with(Some(pem(&other.cert)))).unwrap_err();
    assert!(
        matches!(&err, VerifyError::AkCert(why) if why.contains("no ak_ca signed")),
        "{err}"
    );
    // A genuine certificate, but for another key than ak_public: another vTPM's AK.
    let (_swtpm2, mut tpm2) = start();
    let other_ak = tpm2.ak_from_template(&template).unwrap();
    tpm2.flush_context(other_ak.handle).unwrap();
    assert_ne!(other_ak.spki_der, ak.spki_der);
    let foreign = ak_cert(&google, &other_ak.spki_der);
    let mut swapped = json.clone();
    swapped["ak_cert"] = base64::engine::general_purpose::STANDARD
        .encode(&foreign)
        .into();
    let err = run(&swapped, &policy).unwrap_err();
    assert!(
        matches!(&err, VerifyError::AkCert(why) if why.contains("another key")),
        "{err}"
    );
    // No CA configured; no certificate and not listed.
    let err = run(&json, &policy_with(None)).unwrap_err();
    assert!(
        matches!(&err, VerifyError::AkCert(why) if why.contains("no ak_ca")),
        "{err}"
    );
    let mut bare = json.clone();
    bare.as_object_mut().unwrap().remove("ak_cert");
    let err = run(&bare, &policy).unwrap_err();
    assert!(matches!(err, VerifyError::AkNotTrusted(_)), "{err}");

    // ak_trust = "certified": the certified AK passes; the same AK listed but without its
    // certificate (the agent's fallback when the template is missing) is refused.
    let ak_hex = cvm_agent::hex::encode(&ev.ak_sha256());
    std::fs::write(dir.path().join("ak-ca.pem"), pem(&google.cert)).unwrap();
    let parse = |rest: &str| {
        Policy::parse(
            &format!(
                "require_initdata = false\nak_ca = \"ak-ca.pem\"\ntrusted_aks = [\"{ak_hex}\"]\n{rest}"
            ),
            dir.path(),
        )
        .unwrap()
    };
    let listed = parse("");
    assert_eq!(run(&bare, &listed).unwrap().claims["ak-trust"], "listed");
    let certified = parse("ak_trust = \"certified\"\n");
    let v = run(&json, &certified).unwrap();
    assert_eq!(v.claims["ak-trust"], "certified");
    let err = run(&bare, &certified).unwrap_err();
    assert!(matches!(err, VerifyError::AkNotCertified(_)), "{err}");
    let err = run(&swapped, &certified).unwrap_err();
    assert!(
        matches!(&err, VerifyError::AkCert(why) if why.contains("another key")),
        "{err}"
    );

    // The agent refuses a certificate in NV that names another key, before quoting: the
    // second vTPM holds the first one's certificate.
    for (index, data) in [
        (GCE_AK_TEMPLATE_NV_INDEX_RSA, &template),
        (GCE_AK_CERT_NV_INDEX_RSA, &cert),
    ] {
        tpm2.nv_define_space(index, OWNER_RW_AUTH_READ, data.len() as u16)
            .unwrap();
        tpm2.nv_write(index, data).unwrap();
    }
    let err = evidence::gcp_tpm_evidence(&mut tpm2, &report_data).unwrap_err();
    assert!(matches!(err, EvidenceError::AkCertMismatch), "{err}");
}
