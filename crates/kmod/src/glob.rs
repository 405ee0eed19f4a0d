//! The `fnmatch(3)` subset (flags 0) that libkmod applies to modules.alias patterns: `*`, `?`,
//! bracket classes with ranges, `!`/`^` negation and POSIX named classes, `\` escapes.
//!
//! Matching is iterative with a single backtrack point (the last `*` seen). That is complete for
//! glob patterns because a later `*` can absorb anything an earlier one would have, and it bounds
//! the work to O(pattern × text) — a recursive matcher is exponential on patterns like `a*a*a*b`.

/// Whether `text` matches `pattern` as `fnmatch(pattern, text, 0)` would.
pub(crate) fn fnmatch(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // (pattern index just after the last '*', text index that '*' currently stops before)
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            while p < pattern.len() && pattern[p] == b'*' {
                p += 1;
            }
            star = Some((p, t));
            continue;
        }
        if p < pattern.len() {
            match match_one(pattern, p, text[t]) {
                One::Next(next) => {
                    p = next;
                    t += 1;
                    continue;
                }
                One::Mismatch => {}
                One::Invalid => return false,
            }
        }
        match star {
            Some((after_star, stop)) => {
                // Let the last '*' swallow one more character and retry from just after it.
                p = after_star;
                t = stop + 1;
                star = Some((after_star, t));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

enum One {
    /// Matched; the next pattern element starts here.
    Next(usize),
    Mismatch,
    /// The pattern can match nothing (an unknown `[:class:]`, as glibc decides).
    Invalid,
}

/// Match the single-character pattern element at `pattern[p]` (not `*`) against `c`.
fn match_one(pattern: &[u8], p: usize, c: u8) -> One {
    let next = |matched: bool, next: usize| {
        if matched {
            One::Next(next)
        } else {
            One::Mismatch
        }
    };
    match pattern[p] {
        b'?' => One::Next(p + 1),
        b'[' => match bracket(pattern, p, c) {
            Bracket::Done(matched, end) => next(matched, end),
            Bracket::Invalid => One::Invalid,
            // An unterminated '[' is an ordinary character, as in glibc.
            Bracket::Unterminated => next(c == b'[', p + 1),
        },
        // A trailing backslash matches nothing, as in glibc ("trailing \\ loses").
        b'\\' => next(pattern.get(p + 1) == Some(&c), p + 2),
        other => next(other == c, p + 1),
    }
}

enum Bracket {
    /// Whether `c` is in the set, and the index after the closing `]`.
    Done(bool, usize),
    Unterminated,
    Invalid,
}

/// Evaluate the bracket expression starting at `pattern[p] == '['` for `c`. All members are
/// evaluated, so an unterminated expression is always a literal `[`. glibc stops at the first
/// matching member and skips the rest more loosely, which differs only for malformed named
/// classes — kernel modalias patterns use plain members and ranges.
fn bracket(pattern: &[u8], p: usize, c: u8) -> Bracket {
    let mut i = p + 1;
    let negate = matches!(pattern.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let Some(&b) = pattern.get(i) else {
            return Bracket::Unterminated;
        };
        if b == b']' && !first {
            return Bracket::Done(matched != negate, i + 1);
        }
        first = false;
        if b == b'[' && pattern.get(i + 1) == Some(&b':') {
            // As glibc: `[:` starts a class name only if letters 'a'..='y' (sic: glibc tests
            // `c >= 'z'`) follow up to `:]`; otherwise the `[` is an ordinary member.
            let name = &pattern[i + 2..];
            let len = name
                .iter()
                .take_while(|b| (b'a'..=b'y').contains(b))
                .count();
            if name[len..].starts_with(b":]") {
                let Some(class) = named_class(&name[..len]) else {
                    return Bracket::Invalid;
                };
                matched |= class(&c);
                i += 2 + len + 2;
                continue;
            }
        }
        let Some((lo, after_lo)) = bracket_char(pattern, i) else {
            return Bracket::Unterminated;
        };
        i = after_lo;
        if pattern.get(i) == Some(&b'-') && pattern.get(i + 1).is_some_and(|&n| n != b']') {
            let Some((hi, after_hi)) = bracket_char(pattern, i + 1) else {
                return Bracket::Unterminated;
            };
            i = after_hi;
            matched |= lo <= c && c <= hi;
        } else {
            matched |= lo == c;
        }
    }
}

/// One possibly escaped character inside a bracket expression.
fn bracket_char(pattern: &[u8], i: usize) -> Option<(u8, usize)> {
    match *pattern.get(i)? {
        b'\\' => Some((*pattern.get(i + 1)?, i + 2)),
        b => Some((b, i + 1)),
    }
}

fn named_class(name: &[u8]) -> Option<fn(&u8) -> bool> {
    Some(match name {
        b"alnum" => u8::is_ascii_alphanumeric,
        b"alpha" => u8::is_ascii_alphabetic,
        b"blank" => |c: &u8| *c == b' ' || *c == b'\t',
        b"cntrl" => u8::is_ascii_control,
        b"digit" => u8::is_ascii_digit,
        b"graph" => u8::is_ascii_graphic,
        b"lower" => u8::is_ascii_lowercase,
        b"print" => |c: &u8| c.is_ascii_graphic() || *c == b' ',
        b"punct" => u8::is_ascii_punctuation,
        b"space" => |c: &u8| c.is_ascii_whitespace() || *c == 0x0b,
        b"upper" => u8::is_ascii_uppercase,
        b"xdigit" => u8::is_ascii_hexdigit,
        _ => return None,
    })
}

/// libkmod's `alias_normalize`: `-` becomes `_` except inside bracket expressions, applied to
/// both the patterns and the modalias looked up, so that the two spellings meet.
pub(crate) fn normalize_alias(alias: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(alias.len());
    let mut in_bracket = false;
    for b in alias.bytes() {
        match b {
            b'[' => in_bracket = true,
            b']' => in_bracket = false,
            b'-' if !in_bracket => {
                out.push(b'_');
                continue;
            }
            _ => {}
        }
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::fnmatch as m;
    use super::normalize_alias;
    use std::time::{Duration, Instant};

    fn yes(p: &str, t: &str) {
        assert!(m(p.as_bytes(), t.as_bytes()), "{p:?} should match {t:?}");
    }
    fn no(p: &str, t: &str) {
        assert!(
            !m(p.as_bytes(), t.as_bytes()),
            "{p:?} should not match {t:?}"
        );
    }

    #[test]
    fn literals_star_question() {
        yes("", "");
        no("", "a");
        yes("abc", "abc");
        no("abc", "abd");
        no("abc", "ab");
        no("ab", "abc");
        yes("*", "");
        yes("*", "anything");
        yes("a*", "a");
        yes("a*c", "abbbc");
        no("a*c", "abbbd");
        yes("*c", "abc");
        yes("a**b", "ab");
        yes("?", "x");
        no("?", "");
        no("?", "xy");
        yes("a?c", "abc");
        yes("*a*b*c*", "xxaxxbxxcxx");
        no("*a*b*c*", "xxaxxcxxbxx");
    }

    #[test]
    fn real_modalias_patterns() {
        let dev = "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00";
        yes("pci:v00001AF4d*sv*sd*bc*sc*i*", dev);
        no("pci:v00008086d*sv*sd*bc*sc*i*", dev);
        yes("virtio:d00000002v*", "virtio:d00000002v00001AF4");
        no("virtio:d00000001v*", "virtio:d00000002v00001AF4");
        yes("acpi*:LNRO0005:*", "acpi:LNRO0005:");
        yes(
            "cpu:type:x86,ven*fam*mod*:feature:*0081*",
            "cpu:type:x86,ven0002fam0019mod0001:feature:,0000,0001,0081,0082",
        );
        yes("of:N*T*Cvirtio,mmioC*", "of:NvirtioT(null)Cvirtio,mmioCfoo");
    }

    #[test]
    fn bracket_classes() {
        yes("[abc]", "b");
        no("[abc]", "d");
        yes("[a-c]x", "bx");
        no("[a-c]x", "dx");
        yes("[0-9A-F][0-9A-F]", "7E");
        no("[0-9A-F][0-9A-F]", "7e");
        yes("[!a-c]", "d");
        no("[!a-c]", "b");
        yes("[^a-c]", "d");
        no("[^a-c]", "a");
        // ']' first is literal, '-' first or last is literal
        yes("[]a]", "]");
        yes("[!]a]", "b");
        no("[!]a]", "]");
        yes("[-a]", "-");
        yes("[a-]", "-");
        no("[a-]", "b");
        // escapes
        yes("[\\]]", "]");
        yes("\\*", "*");
        no("\\*", "a");
        no("a\\", "a\\");
        // unterminated bracket is a literal '['
        yes("[abc", "[abc");
        no("[abc", "a");
        // named classes
        yes("[[:digit:]]x", "7x");
        no("[[:digit:]]x", "ax");
        yes("[[:xdigit:][:upper:]]", "Z");
        yes("[![:alpha:]]", "1");
        no("[[:nosuch:]]", "a");
        no("[![:nosuch:]]", "a");
        no("*[[:nosuch:]]", "xa");
        yes("[[:A:]]", ":]");
        yes("a[[:space:]]b", "a b");
        no("a[[:space:]]b", "a_b");
    }

    #[test]
    fn star_backtracks_into_classes() {
        yes("*[0-9]", "abc5");
        no("*[0-9]", "abc5x");
        yes(
            "usb:v*p*d*dc*dsc*dp*ic08isc06ip50in*",
            "usb:v0781p5567d0100dc00dsc00dp00ic08isc06ip50in00",
        );
    }

    #[test]
    fn pathological_pattern_is_polynomial() {
        let text = "a".repeat(20_000);
        let pattern = format!("{}b", "a*".repeat(40));
        let start = Instant::now();
        assert!(!m(pattern.as_bytes(), text.as_bytes()));
        let pattern = format!("{}b", "*?".repeat(40));
        assert!(!m(pattern.as_bytes(), text.as_bytes()));
        let pattern = "*[a]".repeat(40) + "[!a]";
        assert!(!m(pattern.as_bytes(), text.as_bytes()));
        // A recursive fnmatch needs on the order of C(20000, 40) steps here.
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "took {:?}",
            start.elapsed()
        );
    }

    #[test]
    fn normalization_leaves_brackets_alone() {
        assert_eq!(
            normalize_alias("platform:a-b[x-z]-c"),
            b"platform:a_b[x-z]_c"
        );
        assert_eq!(normalize_alias("a[-"), b"a[-");
    }
}
