//! Prediction and replay end to end: what `cvmctl measure` predicts is what a replay of the
//! agent's log gives, PCR 8 is Trustee's value, and nothing is accepted after the separator.

use clap::Parser;
use cvm_initdata::Mode;
use cvm_initdata::{InitData, RestartPolicy};
use cvm_measure::{Event, EventLog, Facts, Measurer, predict};
use cvm_tpm::HashAlg;
use cvmctl::measure::{MeasureArgs, ReplayArgs, measure_command, replay_command};
use serde_json::Value;
use sha2::{Digest, Sha256};

const INITDATA: &str = r#"version = "0.1.0"
algorithm = "sha256"

[data]
"launch.toml" = '''
[kbs]
url = "https://kbs.example:8080"

[workload]
image = "registry.example/app:1"
restart = "OnFailure"
'''
"policy.rego" = "package agent_policy"
"#;

const BANKS: [HashAlg; 4] = [
    HashAlg::Sha1,
    HashAlg::Sha256,
    HashAlg::Sha384,
    HashAlg::Sha512,
];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn facts() -> Facts {
    Facts {
        mode: Mode::Production,
        roothash: Some("ab".repeat(32)),
        image_version: Some("cvm-demo 1.0".into()),
        initdata: Some(INITDATA.as_bytes().to_vec()),
        state_disk: Some("partuuid=0b6a4a4c-8a3e-4b8e-9f4e-2f4f1e1d7a10".into()),
        workload_image: Some("registry.example/app:1".into()),
        workload_digest: Some(format!("sha256:{}", "cd".repeat(32))),
        restart_policy: Some(RestartPolicy::OnFailure),
        args: Some(vec!["/app".into(), "--port".into(), "8080".into()]),
        env: Some(vec!["PATH=/usr/bin".into(), "LOG=info".into()]),
        overrides: Some("{\"args\":true}".into()),
    }
}

#[derive(Parser)]
struct MeasureCli {
    #[command(flatten)]
    args: MeasureArgs,
}

#[derive(Parser)]
struct ReplayCli {
    #[command(flatten)]
    args: ReplayArgs,
}

#[test]
fn replaying_a_predicted_log_gives_the_predicted_pcrs() {
    let prediction = predict(&facts(), &BANKS).unwrap();
    assert_eq!(prediction.log.len(), 12);
    // Through the file format and back.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("measure.log");
    prediction.log.write(&path).unwrap();
    let log = EventLog::read(&path).unwrap();
    assert_eq!(log, prediction.log);
    assert_eq!(log.replay(&BANKS).unwrap(), prediction.pcrs);
    for alg in BANKS {
        assert_eq!(
            prediction.pcrs.get(alg, 15).unwrap().len(),
            alg.digest_len()
        );
        assert_eq!(prediction.pcrs.get(alg, 8).unwrap().len(), alg.digest_len());
    }
}

#[test]
fn the_agent_side_and_the_prediction_agree() {
    // The agent records as it goes; the host predicts from the facts. Same result.
    let mut m = Measurer::new(&[HashAlg::Sha256, HashAlg::Sha384]).unwrap();
    let f = facts();
    let mut extended: Vec<(u32, HashAlg, Vec<u8>)> = Vec::new();
    for event in f.events().unwrap() {
        let pcr = event.pcr();
        for (alg, digest) in m.record(event).unwrap() {
            extended.push((pcr, alg, digest));
        }
    }
    let prediction = predict(&f, &[HashAlg::Sha256, HashAlg::Sha384]).unwrap();
    assert_eq!(m.log(), &prediction.log);
    // A simulated TPM fed the returned digests ends where the prediction says.
    let mut pcr15 = vec![0u8; 32];
    for (pcr, alg, digest) in &extended {
        if *pcr == 15 && *alg == HashAlg::Sha256 {
            let mut h = Sha256::new();
            h.update(&pcr15);
            h.update(digest);
            pcr15 = h.finalize().to_vec();
        }
    }
    assert_eq!(
        prediction.pcrs.get(HashAlg::Sha256, 15).unwrap(),
        &pcr15[..]
    );
}

#[test]
fn pcr8_is_trustees_value_computed_independently() {
    // Trustee's tpm verifier: PCR8 == sha256(0x00 * 32 || sha256(init-data TOML)).
    let mut input = [0u8; 64];
    input[32..].copy_from_slice(&Sha256::digest(INITDATA.as_bytes()));
    let expected = Sha256::digest(input);

    let prediction = predict(&facts(), &[HashAlg::Sha256]).unwrap();
    assert_eq!(
        prediction.pcrs.get(HashAlg::Sha256, 8).unwrap(),
        &expected[..]
    );
    let init = InitData::parse(INITDATA.as_bytes()).unwrap();
    assert_eq!(init.pcr8_expected()[..], expected[..]);
    assert_eq!(init.digest()[..], Sha256::digest(INITDATA.as_bytes())[..]);
}

#[test]
fn nothing_is_recorded_or_accepted_after_the_separator() {
    let mut m = Measurer::new(&[HashAlg::Sha256]).unwrap();
    for event in facts().events().unwrap() {
        m.record(event).unwrap();
    }
    assert!(m.record(Event::overrides("forged").unwrap()).is_err());

    // A workload that forges a record after the separator, with the right digest.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("measure.log");
    let mut bytes = m.log().to_json_seq();
    let forged = format!(
        "\u{1e}{{\"pcr\":15,\"digests\":[{{\"hashAlg\":\"sha256\",\"digest\":\"{}\"}}],\"content_type\":\"cvm-agent\",\"content\":{{\"event\":\"overrides\",\"string\":\"forged\"}}}}\n",
        hex(&Sha256::digest(b"overrides:forged"))
    );
    bytes.extend_from_slice(forged.as_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let log = EventLog::read(&path).unwrap();
    assert!(log.verify().is_err());
    assert!(log.replay(&[HashAlg::Sha256]).is_err());
    let err = replay_command(&ReplayArgs {
        log: path,
        pcrs: None,
        banks: vec![],
    })
    .unwrap_err();
    assert!(
        err.to_string().contains("after the launch separator"),
        "{err}"
    );
}

#[test]
fn cvmctl_measure_then_replay() {
    let dir = tempfile::tempdir().unwrap();
    let initdata = dir.path().join("initdata.toml");
    std::fs::write(&initdata, INITDATA).unwrap();
    let cli = MeasureCli::try_parse_from([
        "measure",
        "--initdata",
        initdata.to_str().unwrap(),
        "--roothash",
        &"ab".repeat(32),
        "--mode",
        "debug",
        "--image-version",
        "cvm-demo 1.0",
        "--restart",
        "OnFailure",
        "--args",
        r#"["/app","--port","8080"]"#,
        "--env",
        r#"["LOG=info"]"#,
        "--banks",
        "sha256,sha384",
    ])
    .unwrap();
    let json = measure_command(&cli.args).unwrap();
    let out: Value = serde_json::from_str(&json).unwrap();
    let init = InitData::parse(INITDATA.as_bytes()).unwrap();
    assert_eq!(out["pcrs"]["sha256"]["8"], hex(&init.pcr8_expected()));
    assert!(out["pcrs"]["sha384"]["15"].is_string());
    assert_eq!(out["log"][0]["content"]["string"], "debug");
    assert_eq!(
        out["log"].as_array().unwrap().last().unwrap()["content"]["event"],
        "separator"
    );
    assert_eq!(out["initdata"]["host_data"], hex(&init.host_data()));
    assert_eq!(out["initdata"]["mrconfigid"], hex(&init.mrconfigid()));
    assert_eq!(out["initdata"]["tpm_binding"], true);

    // The guest's log, as the prediction's records in the file format.
    let log = EventLog::from_json(&out["log"]).unwrap();
    let log_path = dir.path().join("measure.log");
    std::fs::write(&log_path, log.to_json_seq()).unwrap();
    let prediction_path = dir.path().join("prediction.json");
    std::fs::write(&prediction_path, &json).unwrap();

    let replay = ReplayCli::try_parse_from([
        "replay",
        log_path.to_str().unwrap(),
        "--pcrs",
        prediction_path.to_str().unwrap(),
    ])
    .unwrap();
    let outcome = replay_command(&replay.args).unwrap();
    assert!(outcome.matches, "{}", outcome.json);
    let result: Value = serde_json::from_str(&outcome.json).unwrap();
    assert_eq!(result["pcrs"], out["pcrs"]);
    assert_eq!(result["separator"], true);

    // Expected values for another boot (production instead of debug) do not match.
    let other = dir.path().join("other.json");
    let mut production = cli.args.clone();
    production.mode = Mode::Production;
    std::fs::write(&other, measure_command(&production).unwrap()).unwrap();
    let outcome = replay_command(&ReplayArgs {
        log: log_path.clone(),
        pcrs: Some(other),
        banks: vec![],
    })
    .unwrap();
    assert!(!outcome.matches);
    let result: Value = serde_json::from_str(&outcome.json).unwrap();
    let mismatched: Vec<&Value> = result["mismatches"].as_array().unwrap().iter().collect();
    // PCR 15 differs in both banks; PCR 8 (init-data) is the same.
    assert_eq!(mismatched.len(), 2);
    assert!(mismatched.iter().all(|m| m["pcr"] == 15));

    // A bank the log has no digests for never matches.
    let sha1 = dir.path().join("sha1.json");
    std::fs::write(
        &sha1,
        format!("{{\"sha1\":{{\"15\":\"{}\"}}}}", "00".repeat(20)),
    )
    .unwrap();
    let outcome = replay_command(&ReplayArgs {
        log: log_path,
        pcrs: Some(sha1),
        banks: vec![],
    })
    .unwrap();
    assert!(!outcome.matches);
}

#[test]
fn measure_refuses_bad_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "version = \"0.2.0\"\nalgorithm = \"sha256\"\n[data]\n",
    )
    .unwrap();
    let cli = MeasureCli::try_parse_from(["measure", "--initdata", bad.to_str().unwrap()]).unwrap();
    assert!(measure_command(&cli.args).is_err());
    assert!(MeasureCli::try_parse_from(["measure", "--mode", "staging"]).is_err());
    assert!(MeasureCli::try_parse_from(["measure", "--banks", "md5"]).is_err());
    let cli = MeasureCli::try_parse_from(["measure", "--args", "not json"]).unwrap();
    assert!(measure_command(&cli.args).is_err());
    let cli = MeasureCli::try_parse_from(["measure", "--env", r#"["NOEQUALS"]"#]).unwrap();
    assert!(measure_command(&cli.args).is_err());
    let cli = MeasureCli::try_parse_from(["measure", "--roothash", "xyz"]).unwrap();
    assert!(measure_command(&cli.args).is_err());
    let cli = MeasureCli::try_parse_from(["measure", "--banks", "sha256,sha256"]).unwrap();
    assert!(measure_command(&cli.args).is_err());
    // --os-release gives the same value as --image-version.
    let os_release = dir.path().join("os-release");
    std::fs::write(
        &os_release,
        "ID=debian\nIMAGE_ID=cvm-demo\nIMAGE_VERSION=1.0\n",
    )
    .unwrap();
    let a = MeasureCli::try_parse_from(["measure", "--os-release", os_release.to_str().unwrap()])
        .unwrap();
    let b = MeasureCli::try_parse_from(["measure", "--image-version", "cvm-demo 1.0"]).unwrap();
    assert_eq!(
        measure_command(&a.args).unwrap(),
        measure_command(&b.args).unwrap()
    );
    assert!(
        MeasureCli::try_parse_from(["measure", "--os-release", "x", "--image-version", "y"])
            .is_err()
    );
    // Minimal: mode and separator only.
    let cli = MeasureCli::try_parse_from(["measure"]).unwrap();
    let out: Value = serde_json::from_str(&measure_command(&cli.args).unwrap()).unwrap();
    assert_eq!(out["log"].as_array().unwrap().len(), 2);
    assert!(out.get("initdata").is_none());
}
