//! RFC 8785 JSON Canonicalization Scheme (JCS) of a `serde_json::Value`.
//!
//! The KBS protocol binds the TEE key to the evidence through a hash of the canonical JSON of the
//! runtime data, so this must produce the same bytes as the canonicalizers on both ends
//! (guest-components uses `serde_json_canonicalizer`, Trustee's attestation service `canon_json`).
//!
//! Rules (RFC 8785 §3.2):
//! - no whitespace;
//! - object members sorted by the UTF-16 code units of their names (not by UTF-8 bytes, not by
//!   locale), recursively; array order kept;
//! - strings: `"` and `\` escaped, U+0008/0009/000A/000C/000D as `\b \t \n \f \r`, every other
//!   control character below U+0020 as `\u00xx` (lower-case hex), everything else (including
//!   U+007F, non-ASCII, `/`) as raw UTF-8;
//! - numbers as ECMAScript's `Number.prototype.toString` of the IEEE-754 double (RFC 8785 §3.2.2.3),
//!   implemented in [`format_number`] for every finite `f64`.
//!
//! One deliberate refusal: an integer outside ±2^53 (a `u64`/`i64` serde_json kept exactly) has
//! no exact double, and canonicalizers disagree on it (JCS rounds it to a double, others print the
//! integer), so it is an error rather than a silent hash mismatch. The protocol's runtime data has
//! no numbers at all.
//!
//! Why ours rather than `serde_json_canonicalizer` (the test oracle: `tests/canon.rs` checks
//! random values byte for byte against it): that crate rounds integers beyond ±2^53 silently,
//! recurses without a depth bound (a deep value from the network would overflow PID 1's stack),
//! and turns on serde_json's `float_roundtrip` for the whole binary.

use serde_json::Value;
use std::fmt::Write as _;

/// Nesting deeper than this is refused (serde_json's own parser stops at 128 as well).
pub const MAX_DEPTH: usize = 128;

/// 2^53: integers of at most this magnitude are exact doubles.
const MAX_SAFE: u64 = 1 << 53;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CanonError {
    #[error("number {0} is not finite; JSON has no form for it")]
    NonFinite(String),
    #[error(
        "integer {0} is outside ±2^53: it has no exact IEEE-754 double, so its canonical form is ambiguous"
    )]
    UnsafeInteger(String),
    #[error("JSON nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// The canonical (RFC 8785) serialization of `value`.
pub fn canonicalize(value: &Value) -> Result<String, CanonError> {
    let mut out = String::new();
    write_value(&mut out, value, 0)?;
    Ok(out)
}

/// [`canonicalize`] as bytes (what gets hashed).
pub fn canonicalize_to_vec(value: &Value) -> Result<Vec<u8>, CanonError> {
    canonicalize(value).map(String::into_bytes)
}

fn write_value(out: &mut String, value: &Value, depth: usize) -> Result<(), CanonError> {
    if depth > MAX_DEPTH {
        return Err(CanonError::TooDeep);
    }
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n)?,
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item, depth + 1)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push('{');
            for (i, (name, member)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, name);
                out.push(':');
                write_value(out, member, depth + 1)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

fn write_number(out: &mut String, n: &serde_json::Number) -> Result<(), CanonError> {
    if let Some(u) = n.as_u64() {
        if u > MAX_SAFE {
            return Err(CanonError::UnsafeInteger(u.to_string()));
        }
        let _ = write!(out, "{u}");
    } else if let Some(i) = n.as_i64() {
        if i.unsigned_abs() > MAX_SAFE {
            return Err(CanonError::UnsafeInteger(i.to_string()));
        }
        let _ = write!(out, "{i}");
    } else {
        // Neither u64 nor i64: serde_json holds it as an f64 (arbitrary_precision is off).
        let f = n
            .as_f64()
            .ok_or_else(|| CanonError::NonFinite(n.to_string()))?;
        out.push_str(&format_number(f)?);
    }
    Ok(())
}

/// ECMAScript `Number::toString(x)` (ECMA-262 §6.1.6.1.20) for a finite double, as RFC 8785
/// §3.2.2.3 requires: the shortest decimal digits that round-trip, then plain notation for
/// exponents in [-7, 21) and `d.ddde±x` outside it; `-0` prints as `0`.
pub fn format_number(x: f64) -> Result<String, CanonError> {
    if !x.is_finite() {
        return Err(CanonError::NonFinite(x.to_string()));
    }
    if x == 0.0 {
        return Ok("0".to_string());
    }
    // Rust's `{:e}` without a precision prints the shortest digit string that round-trips
    // (and, among those, the one closest to the exact value), as "d.ddde[-]x".
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci
        .split_once('e')
        .ok_or_else(|| CanonError::NonFinite(sci.clone()))?;
    let exp: i32 = exp
        .parse()
        .map_err(|_| CanonError::NonFinite(sci.clone()))?;
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let (digits, exp) = closest_shortest(x.abs(), digits.trim_end_matches('0'), exp);
    let digits = digits.as_str();
    let k = digits.len() as i32; // number of significant digits
    let n = exp + 1; // position of the decimal point relative to the digits

    let mut out = String::with_capacity(32);
    if x < 0.0 {
        out.push('-');
    }
    if k <= n && n <= 21 {
        // Integer: the digits then n-k zeros.
        out.push_str(digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        // Decimal point inside the digits.
        let (int, frac) = digits.split_at(n as usize);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    } else if -6 < n && n <= 0 {
        // 0.000ddd
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(digits);
    } else {
        // Exponential: d[.ddd]e±(n-1)
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        let e = n - 1;
        let _ = write!(
            out,
            "e{}{}",
            if e < 0 { '-' } else { '+' },
            e.unsigned_abs()
        );
    }
    Ok(out)
}

/// ECMA-262 picks, among the shortest digit strings `s` that round-trip, the one whose value is
/// closest to `x`, and on a tie the even one. Rust's shortest formatting gives a shortest
/// string but breaks exact ties upwards, so the two neighbours on the same grid are checked:
/// `digits` (at most 17 of them) with decimal exponent `exp` of the first digit, `x` positive.
fn closest_shortest(x: f64, digits: &str, exp: i32) -> (String, i32) {
    let (Ok(s), Ok(k)) = (digits.parse::<u64>(), i32::try_from(digits.len())) else {
        return (digits.to_string(), exp);
    };
    // Value of a candidate c is c × 10^scale.
    let scale = exp + 1 - k;
    let round_trips = |c: u64| c > 0 && format!("{c}e{scale}").parse::<f64>().is_ok_and(|v| v == x);
    let mut best = s;
    for c in [s.wrapping_sub(1), s.saturating_add(1)] {
        if c == s || !round_trips(c) {
            continue;
        }
        // Compare x with the midpoint (s + c) / 2 × 10^scale = (s + c) × 5 × 10^(scale - 1).
        let mid = (u128::from(s) + u128::from(c)) * 5;
        let order = cmp_exact(x, mid, scale - 1);
        let c_closer = match order {
            std::cmp::Ordering::Equal => c % 2 == 0,
            std::cmp::Ordering::Greater => c > s,
            std::cmp::Ordering::Less => c < s,
        };
        if c_closer {
            best = c;
        }
    }
    if best == s {
        return (digits.to_string(), exp);
    }
    let text = best.to_string();
    let new_exp = scale + text.len() as i32 - 1;
    let trimmed = text.trim_end_matches('0');
    (trimmed.to_string(), new_exp)
}

/// Exact comparison of a finite positive double with `m × 10^t`.
fn cmp_exact(x: f64, m: u128, t: i32) -> std::cmp::Ordering {
    // Every double has a finite decimal expansion of at most 767 significant digits, which
    // Rust prints exactly when asked for a precision.
    let exact = format!("{:.800e}", x);
    let Some((mantissa, e)) = exact.split_once('e') else {
        return std::cmp::Ordering::Equal;
    };
    let ex: i32 = e.parse().unwrap_or(0);
    let dx: String = mantissa.chars().filter(|c| *c != '.').collect();
    let dm = m.to_string();
    let em = t + dm.len() as i32 - 1;
    ex.cmp(&em)
        .then_with(|| dx.trim_end_matches('0').cmp(dm.trim_end_matches('0')))
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{0c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
#[path = "tests/canon.rs"]
mod tests;
