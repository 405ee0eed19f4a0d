//! Property test: random file sets on FAT12, FAT16 and FAT32 volumes are fsck.fat-clean and
//! read back by mtools exactly (names, directories, contents); refusals agree with a model.

mod common;

use common::{TempDir, bytes, fsck_clean, list_all, mcopy_all};
use cvm_fat::{Error, FatImage, FatTime};
use proptest::prelude::*;
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
enum Op {
    File(Vec<String>, usize, u64),
    Dir(Vec<String>),
}

fn component() -> impl Strategy<Value = String> {
    let base = prop_oneof![
        // A tiny alphabet, so that paths collide (duplicates, files used as directories).
        "[AB]{1,2}",
        "[A-Z0-9!#$%&'(){}@^_`~-]{1,8}",
        Just("CON".to_string()),
    ];
    (base, prop::option::of("[A-Z0-9]{1,3}"))
        .prop_map(|(b, e)| e.map_or(b.clone(), |e| format!("{b}.{e}")))
}

fn op() -> impl Strategy<Value = Op> {
    let path = || prop::collection::vec(component(), 1..=3);
    prop_oneof![
        4 => (path(), 0usize..9000, any::<u64>()).prop_map(|(p, n, s)| Op::File(p, n, s)),
        1 => path().prop_map(Op::Dir),
    ]
}

#[derive(PartialEq)]
enum M {
    File,
    Dir,
}

proptest! {
    // Each case runs fsck.fat and mtools, so few cases; failures print their minimal input
    // (an integration test has no lib.rs for proptest's regression file).
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_trees_are_clean_and_read_back(
        size in prop::sample::select(vec![1u64 << 20, 8 << 20, 40 << 20]),
        ops in prop::collection::vec(op(), 0..60),
        epoch in 315_532_800u64..4_354_819_199,
    ) {
        let tmp = TempDir::new("prop");
        let time = FatTime::from_unix(epoch).unwrap();
        let mut img = FatImage::new(size, "PROP", time).unwrap();
        // The model: path → kind, and the files' contents.
        let mut model: BTreeMap<String, M> = BTreeMap::new();
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for op in ops {
            let (comps, data) = match &op {
                Op::File(c, n, s) => (c, Some(bytes(*n, *s))),
                Op::Dir(c) => (c, None),
            };
            let path = format!("/{}", comps.join("/"));
            let prefixes: Vec<String> =
                (1..comps.len()).map(|i| format!("/{}", comps[..i].join("/"))).collect();
            let result = match &data {
                Some(d) => img.add_file(&path, d.clone()),
                None => img.add_dir(&path),
            };
            let reserved = comps.iter().any(|c| c.split('.').next() == Some("CON"));
            if reserved {
                prop_assert!(matches!(result, Err(Error::InvalidPath { .. })), "{path}: {result:?}");
            } else if prefixes.iter().any(|p| model.get(p) == Some(&M::File)) {
                prop_assert!(matches!(result, Err(Error::NotADirectory { .. })), "{path}: {result:?}");
            } else if model.get(&path) == Some(&M::File)
                || (model.get(&path) == Some(&M::Dir) && data.is_some())
            {
                prop_assert!(matches!(result, Err(Error::Duplicate { .. })), "{path}: {result:?}");
            } else {
                prop_assert!(result.is_ok(), "{path}: {result:?}");
                for p in prefixes {
                    model.insert(p, M::Dir);
                }
                match data {
                    Some(d) => {
                        model.insert(path.clone(), M::File);
                        files.insert(path, d);
                    }
                    None => {
                        model.entry(path).or_insert(M::Dir);
                    }
                }
            }
        }
        let data = img.to_vec().unwrap();
        prop_assert_eq!(data.len() as u64, size);
        prop_assert!(img.to_vec().unwrap() == data, "not reproducible");
        let path = tmp.path("prop.img");
        std::fs::write(&path, &data).unwrap();
        fsck_clean(&path);
        let mut want: Vec<String> = model
            .iter()
            .map(|(p, k)| if *k == M::Dir { format!("{p}/") } else { p.clone() })
            .collect();
        want.sort();
        prop_assert_eq!(list_all(&path), want);
        let (got, dirs) = mcopy_all(&path, &tmp);
        let mut want_dirs: Vec<String> = model
            .iter()
            .filter(|(_, k)| **k == M::Dir)
            .map(|(p, _)| format!("{p}/"))
            .collect();
        want_dirs.sort();
        prop_assert_eq!(dirs, want_dirs);
        prop_assert_eq!(got.keys().collect::<Vec<_>>(), files.keys().collect::<Vec<_>>());
        for (p, d) in &files {
            prop_assert!(&got[p] == d, "{} differs", p);
        }
    }
}
