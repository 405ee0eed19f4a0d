//! Hostile input: the init-data and event-log parsers return errors, never panic.

use cvm_initdata::{InitData, LaunchConfig};
use cvm_measure::EventLog;
use cvm_tpm::HashAlg;
use proptest::prelude::*;

const VALID_INITDATA: &str = "version = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[data]\n\"launch.toml\" = '''\n[kbs]\nurl = \"https://kbs\"\n[workload]\nimage = \"a\"\nenv = { A = \"1\" }\n[network]\nmode = \"dhcp\"\n'''\n";

const VALID_LOG: &str = "\u{1e}{\"recnum\":0,\"pcr\":15,\"digests\":[{\"hashAlg\":\"sha256\",\"digest\":\"5ad4da24dc9e1ad61f420eb08425b21cae9c6a8c65243a9af498492c4397d92d\"}],\"content_type\":\"cvm-agent\",\"content\":{\"event\":\"mode\",\"string\":\"production\"}}\n";

/// Byte edits of a valid input reach deeper into the parser than random bytes do.
fn mutate(base: &[u8], edits: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    let mut bytes = base.to_vec();
    for &(at, byte) in edits {
        if !bytes.is_empty() {
            let i = at % bytes.len();
            bytes[i] = byte;
        }
    }
    if let Some(cut) = cut {
        bytes.truncate(cut % (bytes.len() + 1));
    }
    bytes
}

fn exercise_initdata(bytes: &[u8]) {
    if let Ok(init) = InitData::parse(bytes) {
        let _ = init.digest();
        let _ = init.host_data();
        let _ = init.mrconfigid();
        let _ = init.pcr8_expected();
        let _ = init.launch();
    }
}

fn exercise_log(bytes: &[u8]) {
    if let Ok(log) = EventLog::parse(bytes) {
        let _ = log.verify();
        let _ = log.replay(&[HashAlg::Sha256]);
        let _ = log.replay(&log.banks());
        assert_eq!(
            EventLog::parse(&log.to_json_seq()).as_ref().ok(),
            Some(&log)
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn initdata_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        exercise_initdata(&bytes);
    }

    #[test]
    fn initdata_parse_survives_mutations(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        cut in proptest::option::of(any::<usize>()),
    ) {
        exercise_initdata(&mutate(VALID_INITDATA.as_bytes(), &edits, cut));
    }

    #[test]
    fn launch_parse_never_panics(text in "[\\[\\]a-z_=\"'{}\\n ,./:0-9-]{0,200}") {
        let _ = LaunchConfig::parse(&text);
    }

    #[test]
    fn eventlog_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        exercise_log(&bytes);
    }

    #[test]
    fn eventlog_parse_survives_mutations(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        cut in proptest::option::of(any::<usize>()),
    ) {
        exercise_log(&mutate(VALID_LOG.as_bytes(), &edits, cut));
    }
}

#[test]
fn the_mutation_bases_are_valid() {
    let init = InitData::parse(VALID_INITDATA.as_bytes()).unwrap();
    assert!(init.launch().unwrap().is_some());
    // A real digest, so mutations also reach verify and replay.
    let log = EventLog::parse(VALID_LOG.as_bytes()).unwrap();
    assert_eq!(log.len(), 1);
    log.replay(&[HashAlg::Sha256]).unwrap();
}
