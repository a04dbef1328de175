//! Fault drills on a running cluster by the names a user sees: stop, start or restart
//! one host's agent (`h1`) or etcd (`etcd`), and the state of each ([`PartState`]);
//! reaping whatever exits, external routers included ([`Cluster::reap_exited`]).
//!
//! `strait-testbed up` owns the processes (only the parent can reap its children), so
//! the `stop`/`start`/`restart` commands of other `strait-testbed` processes reach it
//! on a unix socket beside its state file: one request line ([`Drill`], e.g.
//! `stop h1`), one answer ([`send`], [`answer`]). Keeping the drills here, apart from
//! the command line, lets a test drive them on a [`Cluster`] directly too.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::Cluster;

/// What to do to a part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// SIGTERM and wait (SIGKILL after a grace); nothing is flushed.
    Stop,
    /// Start a stopped part and wait until it serves.
    Start,
    /// Stop, then start.
    Restart,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Stop => "stop",
            Verb::Start => "start",
            Verb::Restart => "restart",
        }
    }

    fn parse(word: &str) -> Option<Self> {
        [Verb::Stop, Verb::Start, Verb::Restart]
            .into_iter()
            .find(|v| v.as_str() == word)
    }
}

/// A part of the cluster a drill acts on: a host's agent, by its node name, or etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Host(String),
    Etcd,
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Part::Host(h) => f.write_str(h),
            Part::Etcd => f.write_str("etcd"),
        }
    }
}

impl Part {
    /// `etcd`, or a host name (checked against a cluster by [`Cluster::drill`]).
    pub fn parse(word: &str) -> Self {
        if word == "etcd" {
            Part::Etcd
        } else {
            Part::Host(word.to_string())
        }
    }
}

/// One request: a verb on a part (`stop h1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drill {
    pub verb: Verb,
    pub part: Part,
}

impl std::fmt::Display for Drill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.verb.as_str(), self.part)
    }
}

impl std::str::FromStr for Drill {
    type Err = String;

    fn from_str(line: &str) -> Result<Self, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[..] {
            [verb, part] => Ok(Drill {
                verb: Verb::parse(verb).ok_or_else(|| format!("unknown verb {verb:?}"))?,
                part: Part::parse(part),
            }),
            _ => Err(format!("expected `VERB PART`, got {line:?}")),
        }
    }
}

/// Whether a part runs, as its owner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartState {
    Running(u32),
    /// Stopped by a drill (or never started).
    Stopped,
    /// Exited on its own or killed from outside; reaped.
    Exited,
}

impl Cluster {
    /// Does `drill` and says what it did. Errors for an unknown part, or a start that
    /// failed (the agent's log is in the error then); the cluster stays up either way.
    pub fn drill(&mut self, drill: &Drill) -> Result<String, String> {
        let state = self.part_state(&drill.part)?;
        let running = matches!(state, PartState::Running(_));
        let part = drill.part.clone();
        match (drill.verb, running) {
            (Verb::Stop, false) => return Ok(format!("{part} is not running")),
            (Verb::Start, true) => {
                return Err(format!(
                    "{part} runs already; `restart {part}` stops it first"
                ));
            }
            _ => {}
        }
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            match (&part, drill.verb) {
                (Part::Etcd, Verb::Stop) => self.etcd.stop(),
                (Part::Etcd, _) => self.etcd.restart(),
                (Part::Host(_), Verb::Stop) => self.host_mut(&part).agent.stop(),
                // A start after an exit: `restart` stops (reaps) and starts.
                (Part::Host(_), _) => self.host_mut(&part).agent.restart(),
            }
        }));
        match outcome {
            Ok(()) => Ok(format!("{}: {:?}", drill, self.part_state(&part)?)),
            Err(panic) => Err(format!(
                "{drill} failed: {}",
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            )),
        }
    }

    /// Whether `part` runs; reaps it if it exited, so it is no zombie.
    pub fn part_state(&mut self, part: &Part) -> Result<PartState, String> {
        let (pid, exited) = match part {
            Part::Etcd => {
                let pid = self.etcd.pid();
                (pid, pid.is_some() && !self.etcd.is_running())
            }
            Part::Host(_) => {
                let agent = &mut self.host_mut_checked(part)?.agent;
                let exited = agent.exit_status().is_some();
                (agent.pid(), exited)
            }
        };
        Ok(match pid {
            None => PartState::Stopped,
            Some(_) if exited => PartState::Exited,
            Some(pid) => PartState::Running(pid),
        })
    }

    /// Reaps every agent, etcd and external router that exited; the names of those
    /// that are down by an exit (`h2`, `etcd`, `bird`), to print when it changes.
    pub fn reap_exited(&mut self) -> Vec<String> {
        let mut parts: Vec<Part> = self
            .hosts
            .iter()
            .map(|h| Part::Host(h.name.clone()))
            .collect();
        parts.push(Part::Etcd);
        let mut exited = vec![];
        for p in parts {
            if self.part_state(&p) == Ok(PartState::Exited) {
                exited.push(p.to_string());
            }
        }
        for r in &mut self.routers {
            if r.exited() {
                exited.push(r.name.clone());
            }
        }
        exited
    }

    fn host_mut_checked(&mut self, part: &Part) -> Result<&mut super::ClusterHost, String> {
        let names: Vec<String> = self.hosts.iter().map(|h| h.name.clone()).collect();
        self.hosts
            .iter_mut()
            .find(|h| Part::Host(h.name.clone()) == *part)
            .ok_or_else(|| format!("no host {part} (hosts: {}; or etcd)", names.join(" ")))
    }

    fn host_mut(&mut self, part: &Part) -> &mut super::ClusterHost {
        self.host_mut_checked(part).expect("checked by part_state")
    }
}

/// How long a client waits for a drill (an agent start waits up to 30 s for readiness,
/// an etcd start longer).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(180);

/// Sends one request line on the control socket; the answer, or the error it reports.
pub fn send(socket: &Path, drill: &Drill) -> Result<String, String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| {
        format!(
            "{}: {e} (is `strait-testbed up` running?)",
            socket.display()
        )
    })?;
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .map_err(|e| e.to_string())?;
    writeln!(stream, "{drill}").map_err(|e| format!("sending: {e}"))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| format!("reading the answer: {e}"))?;
    match answer.strip_prefix("ok ") {
        Some(ok) => Ok(ok.trim_end().to_string()),
        None => Err(answer
            .strip_prefix("error ")
            .unwrap_or(&answer)
            .trim_end()
            .to_string()),
    }
}

/// Reads the request line of one connection.
pub fn read_request(stream: &UnixStream) -> Result<Drill, String> {
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    line.parse()
}

/// Writes the answer to a request and closes the connection.
pub fn answer(mut stream: UnixStream, result: &Result<String, String>) {
    let text = match result {
        Ok(s) => format!("ok {s}\n"),
        Err(e) => format!("error {e}\n"),
    };
    let _ = stream.write_all(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drills_parse_and_print_alike() {
        let d: Drill = "stop h1".parse().unwrap();
        assert_eq!(
            d,
            Drill {
                verb: Verb::Stop,
                part: Part::Host("h1".into())
            }
        );
        assert_eq!(d.to_string(), "stop h1");
        let e: Drill = " restart  etcd\n".parse().unwrap();
        assert_eq!(e.part, Part::Etcd);
        assert_eq!(e.verb, Verb::Restart);
        assert!("kill h1".parse::<Drill>().is_err());
        assert!("stop".parse::<Drill>().is_err());
        assert!("stop h1 h2".parse::<Drill>().is_err());
    }
}
