//! Text forms the guest and the host share, so a digest or an error reads the same in the
//! agent's console, the dev KBS's log and `cvmctl`'s output: lower-case hex ([`hex`]) and an
//! error with its causes on one line ([`error_chain`]).
#![forbid(unsafe_code)]

pub mod hex;

/// `outer (cause: cause of cause …)`: the error and its `source()` chain on one line. Outer
/// messages stay short and never repeat their source inline, so each cause is printed once.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut causes = Vec::new();
    let mut source = e.source();
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    if causes.is_empty() {
        e.to_string()
    } else {
        format!("{e} ({})", causes.join(": "))
    }
}
