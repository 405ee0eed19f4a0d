//! Retrying a network conversation inside one deadline, with capped exponential backoff. Shared
//! by the KBS client and the registry client, which differ only in what counts as fatal.

use std::time::{Duration, Instant};

const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// One attempt's failure.
pub enum Failure<E> {
    /// Says nothing about us (no connection, a reset, 5xx, 429): worth another attempt.
    Transient(String),
    /// Another attempt would get the same answer.
    Fatal(E),
}

/// Why [`run`] gave up.
pub enum GaveUp<E> {
    Fatal(E),
    Deadline { attempts: u32, last: String },
}

/// Calls `attempt` with the time left until it succeeds, fails fatally, or the next pause would
/// end past `deadline`.
pub fn run<T, E>(
    what: &str,
    deadline: Duration,
    mut attempt: impl FnMut(Duration) -> Result<T, Failure<E>>,
) -> Result<T, GaveUp<E>> {
    let end = Instant::now() + deadline;
    let mut backoff = FIRST_BACKOFF;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let last = match attempt(end.saturating_duration_since(Instant::now())) {
            Ok(v) => return Ok(v),
            Err(Failure::Fatal(e)) => return Err(GaveUp::Fatal(e)),
            Err(Failure::Transient(why)) => why,
        };
        if Instant::now() + backoff >= end {
            return Err(GaveUp::Deadline { attempts, last });
        }
        tracing::info!(
            "{what}: attempt {attempts} failed ({last}); retrying in {} ms",
            backoff.as_millis()
        );
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_transient_failures_and_stops_at_fatal_or_deadline() {
        let mut n = 0;
        let r: Result<u32, GaveUp<&str>> = run("t", Duration::from_secs(5), |_| {
            n += 1;
            if n < 3 {
                Err(Failure::Transient("reset".into()))
            } else {
                Ok(n)
            }
        });
        assert!(matches!(r, Ok(3)));
        let r: Result<(), GaveUp<&str>> =
            run("t", Duration::from_secs(5), |_| Err(Failure::Fatal("no")));
        assert!(matches!(r, Err(GaveUp::Fatal("no"))));
        let r: Result<(), GaveUp<&str>> = run("t", Duration::from_millis(600), |_| {
            Err(Failure::Transient("down".into()))
        });
        match r {
            Err(GaveUp::Deadline { attempts, last }) => {
                assert_eq!(last, "down");
                assert!((2..=3).contains(&attempts), "{attempts}");
            }
            _ => panic!("expected the deadline"),
        }
    }
}
