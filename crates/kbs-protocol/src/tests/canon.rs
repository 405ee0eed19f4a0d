//! RFC 8785 vectors: Appendix B (numbers) and the examples of §3.2.2 / §3.2.3, plus the
//! reference implementation's test data (cyberphone/json-canonicalization `testdata/`).

use super::*;
use serde_json::json;

fn canon_text(input: &str) -> String {
    let v: Value = serde_json::from_str(input).unwrap();
    canonicalize(&v).unwrap()
}

#[test]
fn rfc8785_appendix_b_numbers() {
    let vectors: &[(u64, &str)] = &[
        (0x0000000000000000, "0"),
        (0x8000000000000000, "0"),
        (0x0000000000000001, "5e-324"),
        (0x8000000000000001, "-5e-324"),
        (0x7fefffffffffffff, "1.7976931348623157e+308"),
        (0xffefffffffffffff, "-1.7976931348623157e+308"),
        (0x4340000000000000, "9007199254740992"),
        (0xc340000000000000, "-9007199254740992"),
        (0x4430000000000000, "295147905179352830000"),
        (0x44b52d02c7e14af5, "9.999999999999997e+22"),
        (0x44b52d02c7e14af6, "1e+23"),
        (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
        (0x444b1ae4d6e2ef4e, "999999999999999700000"),
        (0x444b1ae4d6e2ef4f, "999999999999999900000"),
        (0x444b1ae4d6e2ef50, "1e+21"),
        (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
        (0x3eb0c6f7a0b5ed8d, "0.000001"),
        (0x41b3de4355555553, "333333333.3333332"),
        (0x41b3de4355555554, "333333333.33333325"),
        (0x41b3de4355555555, "333333333.3333333"),
        (0x41b3de4355555556, "333333333.3333334"),
        (0x41b3de4355555557, "333333333.33333343"),
        (0xbecbf647612f3696, "-0.0000033333333333333333"),
        (0x43143ff3c1cb0959, "1424953923781206.2"),
    ];
    for (bits, want) in vectors {
        let x = f64::from_bits(*bits);
        assert_eq!(format_number(x).unwrap(), *want, "{bits:016x}");
        // Through a Value as well (f64 that is not an integer value, or an integral one).
        if let Some(n) = serde_json::Number::from_f64(x) {
            assert_eq!(
                canonicalize(&Value::Number(n)).unwrap(),
                *want,
                "{bits:016x}"
            );
        }
    }
    // NaN and Infinity have no JSON form.
    for bits in [
        0x7fffffffffffffffu64,
        0x7ff0000000000000,
        0xfff0000000000000,
    ] {
        assert!(matches!(
            format_number(f64::from_bits(bits)),
            Err(CanonError::NonFinite(_))
        ));
    }
}

#[test]
fn number_boundaries() {
    assert_eq!(format_number(1.0).unwrap(), "1");
    assert_eq!(format_number(-1.5).unwrap(), "-1.5");
    assert_eq!(format_number(1e21).unwrap(), "1e+21");
    assert_eq!(format_number(1e20).unwrap(), "100000000000000000000");
    assert_eq!(format_number(1e-6).unwrap(), "0.000001");
    assert_eq!(format_number(1e-7).unwrap(), "1e-7");
    assert_eq!(format_number(123e-20).unwrap(), "1.23e-18");
    assert_eq!(format_number(0.1).unwrap(), "0.1");
    assert_eq!(format_number(-0.0).unwrap(), "0");
}

#[test]
fn integers_exact_within_2_pow_53_and_refused_outside() {
    assert_eq!(
        canonicalize(&json!(9007199254740992u64)).unwrap(),
        "9007199254740992"
    );
    assert_eq!(
        canonicalize(&json!(-9007199254740992i64)).unwrap(),
        "-9007199254740992"
    );
    assert_eq!(canonicalize(&json!(0)).unwrap(), "0");
    assert!(matches!(
        canonicalize(&json!(9007199254740993u64)),
        Err(CanonError::UnsafeInteger(_))
    ));
    assert!(matches!(
        canonicalize(&json!(-9007199254740993i64)),
        Err(CanonError::UnsafeInteger(_))
    ));
    assert!(matches!(
        canonicalize(&json!(u64::MAX)),
        Err(CanonError::UnsafeInteger(_))
    ));
}

/// RFC 8785 §3.2.2 sample, with the numbers given as the doubles the RFC's parser produces (so the
/// test does not depend on serde_json's float parsing precision).
#[test]
#[allow(clippy::excessive_precision)] // the RFC's input, digits and all
fn rfc8785_section_3_2_2_sample() {
    let v = json!({
        "numbers": [333333333.33333329f64, 1e30f64, 4.50f64, 2e-3f64, 0.000000000000000000000000001f64],
        "string": "\u{20ac}$\u{000F}\u{000a}A'\u{0042}\u{0022}\u{005c}\\\"/",
        "literals": [null, true, false]
    });
    assert_eq!(
        canonicalize(&v).unwrap(),
        "{\"literals\":[null,true,false],\"numbers\":[333333333.3333333,1e+30,4.5,0.002,1e-27],\"string\":\"\u{20ac}$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}"
    );
}

/// RFC 8785 §3.2.3: sorting by UTF-16 code units.
#[test]
fn rfc8785_section_3_2_3_sorting() {
    let input = r#"{
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\ud83d\ude00": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis"
    }"#;
    let out = canon_text(input);
    assert_eq!(
        out,
        "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{0080}\":\"Control\",\"\u{00f6}\":\"Latin Small Letter O With Diaeresis\",\"\u{20ac}\":\"Euro Sign\",\"\u{1F600}\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}"
    );
}

/// testdata/input/weird.json → testdata/output/weird.json.
#[test]
fn reference_weird() {
    let input = r#"{
  "\u20ac": "Euro Sign",
  "1": "One",
  "\u0080": "Control\u007f",
  "\ud83d\ude02": "Smiley",
  "\u00f6": "Latin Small Letter O With Diaeresis",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "</script>": "Browser Challenge"
}
"#;
    assert_eq!(
        canon_text(input),
        "{\"1\":\"One\",\"</script>\":\"Browser Challenge\",\"\u{0080}\":\"Control\u{007f}\",\"\u{00f6}\":\"Latin Small Letter O With Diaeresis\",\"\u{20ac}\":\"Euro Sign\",\"\u{1F602}\":\"Smiley\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}"
    );
}

/// testdata french.json: locale must not matter.
#[test]
fn reference_french() {
    let input = "{\n  \"peach\": \"This sorting order\",\n  \"p\u{e9}ch\u{e9}\": \"is wrong according to French\",\n  \"p\u{ea}che\": \"but canonicalization MUST\",\n  \"sin\":   \"ingnore locale\"\n}\n";
    assert_eq!(
        canon_text(input),
        "{\"peach\":\"This sorting order\",\"p\u{e9}ch\u{e9}\":\"is wrong according to French\",\"p\u{ea}che\":\"but canonicalization MUST\",\"sin\":\"ingnore locale\"}"
    );
}

/// testdata values.json (the escaping part; its numbers are the §3.2.2 ones tested above) and
/// structures.json, arrays.json, unicode.json.
#[test]
fn reference_values_structures_arrays_unicode() {
    let values = r#"{
  "numbers": [1E30, 4.50, 2e-3],
  "escaping": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}"#;
    assert_eq!(
        canon_text(values),
        "{\"escaping\":\"\u{20ac}$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\",\"literals\":[null,true,false],\"numbers\":[1e+30,4.5,0.002]}"
    );
    let structures = "{\n  \"1\": {\"f\": {\"f\": \"hi\",\"F\": 5} ,\"\\n\": 56.0},\n  \"10\": { },\n  \"\": \"empty\",\n  \"a\": { },\n  \"111\": [ { } ],\n  \"A\": { }\n}";
    assert_eq!(
        canon_text(structures),
        "{\"\":\"empty\",\"1\":{\"\\n\":56,\"f\":{\"F\":5,\"f\":\"hi\"}},\"10\":{},\"111\":[{}],\"A\":{},\"a\":{}}"
    );
    let arrays = "[\n  56,\n  {\n    \"d\": true,\n    \"10\": null,\n    \"1\": [ ]\n  }\n]";
    assert_eq!(canon_text(arrays), "[56,{\"1\":[],\"10\":null,\"d\":true}]");
    let unicode = "{\n  \"Unnormalized Unicode\":\"\\u1e0d\\u0307\"\n}\n";
    assert_eq!(
        canon_text(unicode),
        "{\"Unnormalized Unicode\":\"\u{1e0d}\u{0307}\"}"
    );
}

#[test]
fn control_characters_and_specials() {
    let s: String = (0u32..0x20).filter_map(char::from_u32).collect();
    let out = canonicalize(&Value::String(s)).unwrap();
    assert_eq!(
        out,
        "\"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b\\f\\r\\u000e\\u000f\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017\\u0018\\u0019\\u001a\\u001b\\u001c\\u001d\\u001e\\u001f\""
    );
    // U+007F, U+2028 and '/' are not escaped.
    assert_eq!(
        canonicalize(&json!("\u{7f}\u{2028}/")).unwrap(),
        "\"\u{7f}\u{2028}/\""
    );
}

#[test]
fn utf16_order_differs_from_utf8_order() {
    // In UTF-8, U+E000 (EE 80 80) sorts before U+10000 (F0 90 80 80); in UTF-16, U+10000 is the
    // surrogate pair D800 DC00, which sorts before E000. JCS uses UTF-16.
    let v = json!({"\u{e000}": 1, "\u{10000}": 2});
    assert_eq!(
        canonicalize(&v).unwrap(),
        "{\"\u{10000}\":2,\"\u{e000}\":1}"
    );
}

#[test]
fn depth_is_bounded() {
    let mut v = json!(1);
    for _ in 0..(MAX_DEPTH + 1) {
        v = json!([v]);
    }
    assert_eq!(canonicalize(&v), Err(CanonError::TooDeep));
    let mut v = json!(1);
    for _ in 0..MAX_DEPTH {
        v = json!({ "a": v });
    }
    assert!(canonicalize(&v).is_ok());
}

/// Trustee's attestation service test vector (attestation-service `parse_runtimedata_json_binding`):
/// SHA-384 of the canonical JSON of `{"b": 1, "a": "test", "c": {"d": "e"}}`.
#[test]
fn trustee_runtime_data_vector() {
    use sha2::{Digest, Sha384};
    let v = json!({"b": 1, "a": "test", "c": {"d": "e"}});
    let c = canonicalize(&v).unwrap();
    assert_eq!(c, r#"{"a":"test","b":1,"c":{"d":"e"}}"#);
    let digest = Sha384::digest(c.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "e71ce8e70d814ba6639c3612ebee0ff1f76f650f8dbb5e47157e0f3f525cd22c4597480a186427c813ca941da78870c3"
    );
}

/// `serde_json_canonicalizer` (what guest-components hashes the runtime data with) as an oracle:
/// on random JSON values our canonical form is byte for byte theirs.
mod oracle {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Map, Number};

    /// Strings that exercise the escaping rules and the UTF-16 member order: controls, `"`, `\`,
    /// U+007F, `/`, BMP characters above the surrogates, and astral characters (surrogate pairs
    /// sort below U+E000..U+FFFF in UTF-16 but above them in UTF-8).
    fn text() -> impl Strategy<Value = String> {
        let ch = prop_oneof![
            4 => proptest::char::range(' ', '~'),
            1 => proptest::char::range('\0', '\u{1f}'),
            1 => prop::sample::select(vec!['"', '\\', '/', '\u{7f}', '\u{80}', '\u{2028}', 'é']),
            1 => proptest::char::range('\u{e000}', '\u{ffff}'),
            1 => proptest::char::range('\u{10000}', '\u{10ffff}'),
        ];
        proptest::collection::vec(ch, 0..8).prop_map(|v| v.into_iter().collect())
    }

    fn number() -> impl Strategy<Value = Number> {
        const SAFE: i64 = 1 << 53;
        prop_oneof![
            (-SAFE..=SAFE).prop_map(Number::from),
            (0..=SAFE as u64).prop_map(Number::from),
            // Every finite double, by its bits (subnormals, -0, the extremes included).
            any::<u64>().prop_filter_map("finite", |b| Number::from_f64(f64::from_bits(b))),
            // Short decimals, the numbers JSON documents usually hold.
            (-10_000_000i64..10_000_000, -30i32..30).prop_filter_map("finite", |(m, e)| {
                Number::from_f64(m as f64 * 10f64.powi(e))
            }),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            number().prop_map(Value::Number),
            text().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec((text(), inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn ours_equals_serde_json_canonicalizer(v in value()) {
            let ours = canonicalize(&v).expect("every value here is canonicalizable");
            let theirs = serde_json_canonicalizer::to_string(&v).expect("theirs");
            prop_assert_eq!(ours, theirs);
        }

        #[test]
        fn numbers_equal_serde_json_canonicalizer(bits in any::<u64>()) {
            let x = f64::from_bits(bits);
            prop_assume!(x.is_finite());
            let theirs = serde_json_canonicalizer::to_string(&x).expect("theirs");
            prop_assert_eq!(format_number(x).expect("finite"), theirs);
        }
    }

    /// The one deliberate difference: an integer beyond ±2^53 has no exact double; JCS (and
    /// serde_json_canonicalizer) print the nearest double, we refuse rather than hash a number
    /// other canonicalizers print differently.
    #[test]
    fn integers_beyond_2_pow_53_are_refused_where_theirs_rounds() {
        for v in [
            json!(9007199254740993u64),
            json!(-9007199254740993i64),
            json!(u64::MAX),
        ] {
            assert!(canonicalize(&v).is_err(), "{v}");
            assert!(serde_json_canonicalizer::to_string(&v).is_ok(), "{v}");
        }
        assert_eq!(
            serde_json_canonicalizer::to_string(&json!(9007199254740993u64)).unwrap(),
            "9007199254740992"
        );
    }
}
