//! Helpers shared by the integration tests: running the real `strait` binary, reading
//! the runtime captures in `tests/fixtures/`, and a canned-answer socket.
//!
//! The canned socket answers one request with a fixed HTTP response and records what it
//! got. It never pretends to allocate: it only stands in for the agent's error and
//! acknowledgement answers, so the tests can see what the plugin sends and how it maps
//! the answer. Tests against the real agent live with the agent.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::JoinHandle;

use serde_json::Value;

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub exit: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout as JSON (panics with the whole run when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }

    /// Assert a failure with CNI error `code` and return the error object.
    pub fn expect_error(&self, code: u64) -> Value {
        assert_ne!(self.exit, 0, "expected failure: {self:#?}");
        let err = self.json();
        assert_eq!(err["code"], code, "{self:#?}");
        for key in ["cniVersion", "msg", "details"] {
            assert!(err.get(key).is_some(), "error lacks {key}: {self:#?}");
        }
        err
    }

    /// Assert exit 0 with nothing on stdout.
    pub fn expect_silent_success(&self) {
        assert_eq!(self.exit, 0, "{self:#?}");
        assert_eq!(self.stdout, "", "{self:#?}");
    }
}

/// Exec the plugin with exactly `env` (nothing inherited) and `stdin`.
pub fn run(env: &[(&str, &str)], stdin: &str) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_strait"))
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn strait");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait strait");
    Run {
        exit: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The usual attachment env of an ADD/DEL/CHECK.
pub fn attachment_env(command: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", "c0ffee01"),
        ("CNI_NETNS", "/var/run/netns/strait-test"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ]
}

/// A config pointing the plugin at `dir`: its socket (nobody listens unless a test
/// starts a [`Canned`] agent there) and its state dir.
pub fn config(dir: &Path, version: &str) -> Value {
    serde_json::json!({
        "cniVersion": version,
        "name": "testnet",
        "type": "strait",
        "socket": socket_path(dir),
        "stateDir": state_dir(dir),
    })
}

pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join("strait.sock")
}

pub fn state_dir(dir: &Path) -> PathBuf {
    dir.join("state")
}

/// Make the pending-release queue under `dir`'s state dir, as an agent run with that
/// state dir does at start: the plugin queues a DEL only where an agent drains.
pub fn agent_made_queue(dir: &Path) {
    std::fs::create_dir_all(state_dir(dir).join("pending-release")).expect("queue dir");
}

/// Files in the pending-release queue under `dir`'s state dir.
pub fn queued(dir: &Path) -> Vec<PathBuf> {
    let q = state_dir(dir).join("pending-release");
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&q) {
        Ok(rd) => rd.map(|e| e.expect("dir entry").path()).collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

/// One captured exec of a CNI plugin by a runtime (see tests/fixtures/*).
#[derive(Debug, Clone)]
pub struct Capture {
    pub file: PathBuf,
    pub env: BTreeMap<String, String>,
    pub stdin: String,
    pub stdout: String,
    pub rc: i32,
}

impl Capture {
    pub fn command(&self) -> &str {
        self.env
            .get("CNI_COMMAND")
            .map(String::as_str)
            .unwrap_or("")
    }

    /// The captured stdin as if the runtime had called strait: `type` renamed, and
    /// the socket and state dir moved into `dir` so nothing touches the host's.
    pub fn stdin_for_strait(&self, dir: &Path) -> String {
        let mut v: Value = serde_json::from_str(&self.stdin)
            .unwrap_or_else(|e| panic!("{}: stdin is not JSON: {e}", self.file.display()));
        if let Value::Object(m) = &mut v
            && m.contains_key("name")
        {
            m.insert("type".into(), "strait".into());
            m.insert("socket".into(), socket_path(dir).to_string_lossy().into());
            m.insert("stateDir".into(), state_dir(dir).to_string_lossy().into());
        }
        v.to_string()
    }

    pub fn env_pairs(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
}

/// Every capture under tests/fixtures, sorted by path.
pub fn captures() -> Vec<Capture> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files = Vec::new();
    collect(&root, &mut files);
    files.sort();
    assert!(!files.is_empty(), "no captures under {}", root.display());
    files.into_iter().map(|f| parse_capture(&f)).collect()
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read fixtures dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "txt") {
            out.push(path);
        }
    }
}

fn parse_capture(file: &Path) -> Capture {
    let text = std::fs::read_to_string(file).expect("read capture");
    let mut section = "";
    let mut env = BTreeMap::new();
    let mut stdin = String::new();
    let mut stdout = String::new();
    let mut rc = 0;
    for line in text.lines() {
        if let Some(head) = line.strip_prefix("### ") {
            section = if head == "ENV" {
                "env"
            } else if head == "STDIN" {
                "stdin"
            } else if let Some(code) = head.strip_prefix("STDOUT rc=") {
                rc = code.trim().parse().expect("rc");
                "stdout"
            } else {
                "other"
            };
            continue;
        }
        match section {
            "env" => {
                if let Some((k, v)) = line.split_once('=') {
                    env.insert(k.to_string(), v.to_string());
                }
            }
            "stdin" => stdin.push_str(line),
            "stdout" => {
                stdout.push_str(line);
                stdout.push('\n');
            }
            _ => {}
        }
    }
    Capture {
        file: file.to_path_buf(),
        env,
        stdin,
        stdout: stdout.trim().to_string(),
        rc,
    }
}

/// A socket at `path` that answers one request with `status` and `body`, and hands
/// back the request it got (path and JSON body).
pub struct Canned {
    handle: JoinHandle<(String, Value)>,
}

impl Canned {
    pub fn start(path: &Path, status: u16, body: &str) -> Self {
        let listener = UnixListener::bind(path).expect("bind canned socket");
        let body = body.to_string();
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            let mut reader = BufReader::new(stream);
            let mut request_line = String::new();
            reader.read_line(&mut request_line).expect("request line");
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).expect("header");
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    length = v.trim().parse().expect("content-length");
                }
            }
            let mut req = vec![0u8; length];
            reader.read_exact(&mut req).expect("body");
            let response = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let mut stream = reader.into_inner();
            stream.write_all(response.as_bytes()).expect("respond");
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string();
            let json = if req.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&req).expect("request body is JSON")
            };
            (path, json)
        });
        Self { handle }
    }

    /// The request the plugin sent: URL path and JSON body.
    pub fn request(self) -> (String, Value) {
        self.handle.join().expect("canned agent thread")
    }
}

/// A socket at `path` that accepts connections and never answers: a hung agent.
/// Its thread holds each connection until the test process exits.
pub fn hung_agent(path: &Path) {
    let listener = UnixListener::bind(path).expect("bind hung socket");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
}

/// A socket at `path` that reads one request and closes the connection after sending
/// `partial` (a crash mid-answer).
pub fn dying_agent(path: &Path, partial: &'static [u8]) {
    let listener = UnixListener::bind(path).expect("bind dying socket");
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let mut buf = [0u8; 65536];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(partial);
        }
    });
}
