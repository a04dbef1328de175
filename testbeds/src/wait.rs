//! Polling until something is so: the one [`wait_until`] of the test beds and their
//! tests.
//!
//! A condition returns `bool`, or `Result<(), String>` whose error says what it saw
//! instead; the last thing it saw goes into the failure, so a timed-out test says what
//! it waited for and what it found. The time it took comes back for tests that print
//! timings. A test that cannot go on `.unwrap()`s the result (the error's `Debug` is its
//! message, so the panic reads well); one that expects the condition never to hold
//! checks `is_err()`.

use std::fmt;
use std::time::{Duration, Instant};

/// What a polled condition returns: `bool`, or `Result<(), String>` with the state it
/// saw when it does not hold.
pub trait Condition {
    /// `Ok` when it holds; otherwise what was seen, if the condition says.
    fn holds(self) -> Result<(), Option<String>>;
}

impl Condition for bool {
    fn holds(self) -> Result<(), Option<String>> {
        if self { Ok(()) } else { Err(None) }
    }
}

impl Condition for Result<(), String> {
    fn holds(self) -> Result<(), Option<String>> {
        self.map_err(Some)
    }
}

/// A condition that did not come true in time.
pub struct WaitError {
    pub what: String,
    pub waited: Duration,
    /// What the condition saw the last time, when it says (a `Result` condition).
    pub last: Option<String>,
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: not so after {:?}", self.what, self.waited)?;
        match &self.last {
            Some(state) => write!(f, ": {state}"),
            None => Ok(()),
        }
    }
}

/// The message, so that `.unwrap()` on a wait panics with it readably.
impl fmt::Debug for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for WaitError {}

/// Poll `cond` every `poll` until it holds (returns the time that took) or `timeout`
/// passes (returns an error naming `what` and the last state `cond` reported).
pub fn wait_until<C: Condition>(
    what: &str,
    timeout: Duration,
    poll: Duration,
    mut cond: impl FnMut() -> C,
) -> Result<Duration, WaitError> {
    let start = Instant::now();
    loop {
        let last = match cond().holds() {
            Ok(()) => return Ok(start.elapsed()),
            Err(last) => last,
        };
        if start.elapsed() > timeout {
            return Err(WaitError {
                what: what.into(),
                waited: start.elapsed(),
                last,
            });
        }
        std::thread::sleep(poll);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn returns_once_the_condition_holds() {
        let mut calls = 0;
        let took = wait_until("third call", Duration::from_secs(5), MS, || {
            calls += 1;
            calls == 3
        })
        .unwrap();
        assert_eq!(calls, 3);
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    #[test]
    fn a_timeout_names_what_and_the_last_state() {
        let mut n = 0;
        let err = wait_until("n to reach 1000", 20 * MS, MS, || {
            n += 1;
            Err(format!("n = {n}"))
        })
        .unwrap_err();
        assert!(err.waited >= 20 * MS, "{err}");
        assert_eq!(
            err.last,
            Some(format!("n = {n}")),
            "the last state, not an earlier one"
        );
        let msg = format!("{err:?}");
        assert!(msg.starts_with("n to reach 1000: not so after "), "{msg}");
        assert!(msg.ends_with(&format!(": n = {n}")), "{msg}");
    }

    #[test]
    fn a_bool_condition_times_out_without_a_state() {
        let err = wait_until("never", 5 * MS, MS, || false).unwrap_err();
        assert_eq!(err.last, None);
        assert!(err.to_string().starts_with("never: not so after "), "{err}");
    }
}
