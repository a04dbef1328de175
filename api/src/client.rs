//! A blocking HTTP/1.1 client for the agent's unix socket.
//!
//! One request per connection (`Connection: close`), so the whole exchange is a write
//! and a read to EOF. Hand-rolled on purpose: the CNI plugin is exec'd per call and a
//! full HTTP stack would cost more in start-up than the request itself.
//!
//! Every call is bounded by one deadline, connect included: a hung agent (accepting
//! nothing, or answering nothing) costs a caller at most its timeout, and the error
//! says which of "not running", "not answering" and "went away mid-answer" it was, so
//! the plugin can tell a runtime to retry or queue a DEL.

use std::io::{BufRead, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::types::ApiError;

/// The default bound on one call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// What can go wrong talking to the agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket does not exist or nobody listens on it: the agent is down.
    #[error("agent not reachable at {path}: {source}")]
    Unreachable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The caller may not connect to the socket: the agent may well be running, so
    /// this is no reason to retry or to queue anything.
    #[error("permission denied connecting to the agent's socket {path} ({access})")]
    PermissionDenied { path: PathBuf, access: String },
    /// The agent did not answer within the call's deadline (a hung agent).
    #[error("the agent at {path} did not answer within {}s", .after.as_secs_f64())]
    TimedOut { path: PathBuf, after: Duration },
    /// The agent closed the connection before a whole answer (it crashed or
    /// restarted mid-request): the request may or may not have been applied.
    #[error("the agent at {path} closed the connection before answering ({detail})")]
    Closed { path: PathBuf, detail: String },
    /// The connection broke mid-request.
    #[error("talking to the agent at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The agent answered with an error.
    #[error("agent: {0}")]
    Api(#[from] ApiError),
    /// The agent's answer could not be parsed.
    #[error("bad response from the agent: {0}")]
    BadResponse(String),
}

impl ClientError {
    /// True when the agent is not running (socket missing or refusing).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClientError::Unreachable { .. })
    }

    /// True when no agent served the call: not running, not answering, or gone
    /// mid-answer. A caller may retry later; nothing the agent said is known.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            ClientError::Unreachable { .. }
                | ClientError::TimedOut { .. }
                | ClientError::Closed { .. }
        )
    }
}

/// Client for one agent socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    /// A client whose calls are bounded by [`DEFAULT_TIMEOUT`].
    pub fn new(socket: impl AsRef<Path>) -> Self {
        Self {
            socket: socket.as_ref().to_path_buf(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Bound each call, from connect to the last byte of the answer, by `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// GET `path` and decode the JSON answer.
    pub fn get<R: DeserializeOwned>(&self, path: &str) -> Result<R, ClientError> {
        let body = self.request("GET", path, None)?;
        decode(&body)
    }

    /// POST `body` as JSON to `path` and decode the JSON answer.
    pub fn post<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<R, ClientError> {
        let req = serde_json::to_vec(body)
            .map_err(|e| ClientError::BadResponse(format!("encoding request: {e}")))?;
        let body = self.request("POST", path, Some(&req))?;
        decode(&body)
    }

    /// The BGP fabric's peers and their sessions ([`crate::paths::BGP_PEERS`]).
    pub fn bgp_peers(&self) -> Result<Vec<crate::bgp::BgpPeerStatus>, ClientError> {
        self.get(crate::paths::BGP_PEERS)
    }

    /// The BGP Loc-RIB, every path, or those of `prefix` ([`crate::paths::BGP_RIB`]).
    pub fn bgp_rib(
        &self,
        prefix: Option<ipnet::IpNet>,
    ) -> Result<Vec<crate::bgp::BgpRibEntry>, ClientError> {
        match prefix {
            // '/' would end the query value's path segment for some parsers: escaped.
            Some(p) => self.get(&format!(
                "{}?prefix={}",
                crate::paths::BGP_RIB,
                p.to_string().replace('/', "%2F")
            )),
            None => self.get(crate::paths::BGP_RIB),
        }
    }

    /// Routes the peers' import policies refused ([`crate::paths::BGP_REFUSED`]).
    pub fn bgp_refused(&self) -> Result<Vec<crate::bgp::BgpRefusedRoute>, ClientError> {
        self.get(crate::paths::BGP_REFUSED)
    }

    /// The external peers in the store ([`crate::paths::BGP_EXTERNAL_PEERS`]).
    pub fn bgp_external_peers(&self) -> Result<Vec<crate::bgp::ExternalPeerEntry>, ClientError> {
        self.get(crate::paths::BGP_EXTERNAL_PEERS)
    }

    /// Adds external peer `name`, or replaces it. The agent validates it first
    /// ([`crate::bgp::ExternalPeer::validate`]): a bad one is refused and nothing written.
    pub fn bgp_put_external_peer(
        &self,
        name: &str,
        peer: &crate::bgp::ExternalPeer,
    ) -> Result<crate::bgp::ExternalPeerEntry, ClientError> {
        let req = serde_json::to_vec(peer)
            .map_err(|e| ClientError::BadResponse(format!("encoding request: {e}")))?;
        let body = self.request("PUT", &crate::paths::bgp_external_peer(name), Some(&req))?;
        decode(&body)
    }

    /// The cluster's IPsec settings (`netctl ipsec mode`).
    pub fn ipsec_settings(&self) -> Result<crate::ipsec::IpsecSettings, ClientError> {
        self.get(crate::paths::IPSEC_SETTINGS)
    }

    /// Replaces the cluster's IPsec settings; the agent answers with what it stored.
    pub fn put_ipsec_settings(
        &self,
        settings: &crate::ipsec::IpsecSettings,
    ) -> Result<crate::ipsec::IpsecSettings, ClientError> {
        let req = serde_json::to_vec(settings)
            .map_err(|e| ClientError::BadResponse(format!("encoding request: {e}")))?;
        let body = self.request("PUT", crate::paths::IPSEC_SETTINGS, Some(&req))?;
        decode(&body)
    }

    /// This node's IPsec status (`netctl ipsec status|peers`).
    pub fn ipsec_status(&self) -> Result<crate::ipsec::IpsecStatus, ClientError> {
        self.get(crate::paths::IPSEC_STATUS)
    }

    /// Rekeys the Child SAs with `peer` now.
    pub fn ipsec_rekey(&self, peer: &str) -> Result<(), ClientError> {
        self.request("POST", &crate::paths::ipsec_rekey(peer), Some(b"{}"))?;
        Ok(())
    }

    /// Reauthenticates with `peer` now: new IKE and Child SAs replace the old ones.
    pub fn ipsec_reauth(&self, peer: &str) -> Result<(), ClientError> {
        self.request("POST", &crate::paths::ipsec_reauth(peer), Some(b"{}"))?;
        Ok(())
    }

    /// The external IPsec peers, pre-shared keys left out ([`crate::paths::IPSEC_PEERS`]).
    pub fn ipsec_peers(&self) -> Result<Vec<crate::gateway::ExternalPeer>, ClientError> {
        self.get(crate::paths::IPSEC_PEERS)
    }

    /// One external IPsec peer, its pre-shared key left out; 404 (code 107) when none.
    pub fn ipsec_peer(&self, name: &str) -> Result<crate::gateway::ExternalPeer, ClientError> {
        self.get(&crate::paths::ipsec_peer(name))
    }

    /// Creates external IPsec peer `peer.name` or replaces it whole (a pre-shared key
    /// is not kept from the old one). The agent validates it first: a bad one is
    /// refused (400) and nothing written. The answer leaves the key out.
    pub fn put_ipsec_peer(
        &self,
        peer: &crate::gateway::ExternalPeer,
    ) -> Result<crate::gateway::ExternalPeer, ClientError> {
        let req = serde_json::to_vec(peer)
            .map_err(|e| ClientError::BadResponse(format!("encoding request: {e}")))?;
        let body = self.request("PUT", &crate::paths::ipsec_peer(&peer.name), Some(&req))?;
        decode(&body)
    }

    /// Creates or replaces every peer of `peers` in one transaction, or none when one
    /// is refused. The answer leaves the keys out.
    pub fn apply_ipsec_peers(
        &self,
        peers: &[crate::gateway::ExternalPeer],
    ) -> Result<Vec<crate::gateway::ExternalPeer>, ClientError> {
        self.post(crate::paths::IPSEC_PEERS, &peers)
    }

    /// Removes external IPsec peer `name`; 404 (code 107) when there is none.
    pub fn delete_ipsec_peer(&self, name: &str) -> Result<(), ClientError> {
        self.request("DELETE", &crate::paths::ipsec_peer(name), None)?;
        Ok(())
    }

    /// Removes external peer `name`; the agent answers 404 (code 107) when there is none.
    pub fn bgp_delete_external_peer(&self, name: &str) -> Result<(), ClientError> {
        self.request("DELETE", &crate::paths::bgp_external_peer(name), None)?;
        Ok(())
    }

    /// GET `path` and read its answer line by line as it comes (the monitor's
    /// NDJSON). The call's timeout bounds the connect and the answer's head only: the
    /// stream itself lasts until the agent ends it or the caller drops it. An error
    /// status is read whole and returned as the agent's [`ApiError`].
    pub fn stream_lines(&self, path: &str) -> Result<LineStream, ClientError> {
        let deadline = Instant::now() + self.timeout;
        let mut stream = self.connect(deadline)?;
        let io = |source: std::io::Error| self.io_error(source);
        let msg = format!(
            "GET {path} HTTP/1.1\r\nHost: straitd\r\nAccept: application/x-ndjson\r\n\
             Connection: close\r\n\r\n"
        );
        stream
            .set_write_timeout(Some(self.remaining(deadline)?))
            .map_err(io)?;
        stream.write_all(msg.as_bytes()).map_err(io)?;
        stream
            .set_read_timeout(Some(self.remaining(deadline)?))
            .map_err(io)?;
        let mut reader = std::io::BufReader::new(stream);
        let mut head = Vec::new();
        loop {
            let mut line = Vec::new();
            let n = reader.read_until(b'\n', &mut line).map_err(io)?;
            if n == 0 {
                return Err(ClientError::Closed {
                    path: self.socket.clone(),
                    detail: format!("no header terminator after {} bytes", head.len()),
                });
            }
            head.extend_from_slice(&line);
            if line == b"\r\n" {
                break;
            }
        }
        let (status, chunked) = match parse_head(&head) {
            Ok(h) => h,
            Err(Parse::Truncated(m)) => {
                return Err(ClientError::Closed {
                    path: self.socket.clone(),
                    detail: m.to_string(),
                });
            }
            Err(Parse::Bad(m)) => return Err(ClientError::BadResponse(m)),
        };
        if !(200..300).contains(&status) {
            // Errors are small JSON bodies: read them whole, within the deadline.
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest);
            let body = if chunked {
                dechunk(&rest).unwrap_or(rest)
            } else {
                rest
            };
            return answer_of(status, body).map(|_| unreachable!("status is not 2xx"));
        }
        // From here on, wait for lines as long as it takes.
        reader.get_ref().set_read_timeout(None).map_err(io)?;
        Ok(LineStream {
            reader,
            chunked,
            chunk_left: 0,
            pending: Vec::new(),
            done: false,
        })
    }

    /// Send one request; return the body of a 2xx answer, or the agent's [`ApiError`].
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Vec<u8>, ClientError> {
        let deadline = Instant::now() + self.timeout;
        let mut stream = self.connect(deadline)?;
        let io = |source: std::io::Error| self.io_error(source);

        let body = body.unwrap_or_default();
        let mut msg = format!(
            "{method} {path} HTTP/1.1\r\nHost: straitd\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        msg.extend_from_slice(body);
        stream
            .set_write_timeout(Some(self.remaining(deadline)?))
            .map_err(io)?;
        stream.write_all(&msg).map_err(io)?;

        // Read to EOF under the one deadline: a per-read timeout alone would let an
        // agent that trickles bytes hold the caller for ever.
        let mut raw = Vec::with_capacity(4096);
        let mut buf = [0u8; 8192];
        loop {
            stream
                .set_read_timeout(Some(self.remaining(deadline)?))
                .map_err(io)?;
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io(e)),
            }
        }
        match parse_response(&raw) {
            Ok((status, payload)) => answer_of(status, payload),
            Err(Parse::Truncated(what)) => Err(ClientError::Closed {
                path: self.socket.clone(),
                detail: format!("{what} after {} bytes", raw.len()),
            }),
            Err(Parse::Bad(m)) => Err(ClientError::BadResponse(m)),
        }
    }

    /// Connects within the deadline. A listener that accepts nothing (a hung agent
    /// whose backlog is full) makes `connect(2)` block, and std has no connect timeout
    /// for unix sockets, so the connect runs on a helper thread that is left behind if
    /// it never returns: the plugin is a short-lived process, and netctl exits too.
    fn connect(&self, deadline: Instant) -> Result<UnixStream, ClientError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let socket = self.socket.clone();
        let spawned = std::thread::Builder::new()
            .name("strait-connect".into())
            .spawn(move || {
                let _ = tx.send(UnixStream::connect(&socket));
            });
        let result = match spawned {
            Ok(_) => match rx.recv_timeout(self.remaining(deadline)?) {
                Ok(r) => r,
                Err(_) => return Err(self.timed_out()),
            },
            // No thread to be had: connect unbounded rather than not at all.
            Err(_) => UnixStream::connect(&self.socket),
        };
        result.map_err(|source| match source.kind() {
            std::io::ErrorKind::PermissionDenied => ClientError::PermissionDenied {
                path: self.socket.clone(),
                access: describe_access(&self.socket),
            },
            _ => ClientError::Unreachable {
                path: self.socket.clone(),
                source,
            },
        })
    }

    fn remaining(&self, deadline: Instant) -> Result<Duration, ClientError> {
        // A zero timeout means "none" to the socket calls: at the deadline, stop.
        match deadline.checked_duration_since(Instant::now()) {
            Some(d) if !d.is_zero() => Ok(d),
            _ => Err(self.timed_out()),
        }
    }

    fn timed_out(&self) -> ClientError {
        ClientError::TimedOut {
            path: self.socket.clone(),
            after: self.timeout,
        }
    }

    /// A socket error after connecting: a timeout, the agent going away, or else.
    fn io_error(&self, source: std::io::Error) -> ClientError {
        use std::io::ErrorKind as K;
        match source.kind() {
            K::WouldBlock | K::TimedOut => self.timed_out(),
            K::BrokenPipe | K::ConnectionReset | K::ConnectionAborted | K::UnexpectedEof => {
                ClientError::Closed {
                    path: self.socket.clone(),
                    detail: source.to_string(),
                }
            }
            _ => ClientError::Io {
                path: self.socket.clone(),
                source,
            },
        }
    }
}

/// Who may use the socket at `path`, and who is asking: what a person needs to fix a
/// permission error (the socket is root's, mode 0600, unless the operator changed it).
fn describe_access(path: &Path) -> String {
    let me = format!("caller uid {}", effective_uid());
    match std::fs::metadata(path) {
        Ok(m) => format!(
            "socket mode {:04o}, owner uid {} gid {}; {me}",
            m.permissions().mode() & 0o7777,
            m.uid(),
            m.gid()
        ),
        Err(e) => format!("cannot inspect the socket: {e}; {me}"),
    }
}

/// The caller's effective uid, as the kernel checks it: the owner of a file the
/// process creates in /proc/self is not it, so read it from /proc/self/status.
fn effective_uid() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(str::to_string))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// What a raw response means: the body of a 2xx answer, or the agent's [`ApiError`].
/// Apart from the socket so the fuzz targets (crate::fuzzing) reach it with bytes; here
/// a cut-off answer is a bad response, the socket path makes it [`ClientError::Closed`].
pub(crate) fn answer(raw: &[u8]) -> Result<Vec<u8>, ClientError> {
    match parse_response(raw) {
        Ok((status, payload)) => answer_of(status, payload),
        Err(Parse::Truncated(m)) => Err(ClientError::BadResponse(m.to_string())),
        Err(Parse::Bad(m)) => Err(ClientError::BadResponse(m)),
    }
}

fn answer_of(status: u16, payload: Vec<u8>) -> Result<Vec<u8>, ClientError> {
    if (200..300).contains(&status) {
        return Ok(payload);
    }
    match serde_json::from_slice::<ApiError>(&payload) {
        Ok(e) => Err(ClientError::Api(e)),
        Err(_) => Err(ClientError::Api(ApiError::new(
            crate::types::code::INTERNAL,
            format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&payload).trim()
            ),
        ))),
    }
}

pub(crate) fn decode<R: DeserializeOwned>(body: &[u8]) -> Result<R, ClientError> {
    // An empty body is how the agent says "nothing to report" for unit answers.
    let body: &[u8] = if body.is_empty() { b"null" } else { body };
    serde_json::from_slice(body).map_err(|e| ClientError::BadResponse(e.to_string()))
}

/// Why a response did not parse: it ended early (the connection closed mid-answer) or
/// it is not HTTP.
#[derive(Debug, PartialEq, Eq)]
enum Parse {
    Truncated(&'static str),
    Bad(String),
}

/// Split a raw HTTP/1.1 response into status and (de-chunked) body.
fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), Parse> {
    let bad = |m: &str| Parse::Bad(m.to_string());
    if raw.is_empty() {
        return Err(Parse::Truncated("no answer"));
    }
    let head_end = find(raw, b"\r\n\r\n").ok_or(Parse::Truncated("no header terminator"))?;
    let head = std::str::from_utf8(&raw[..head_end]).map_err(|_| bad("non-UTF-8 headers"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("empty response"))?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let mut chunked = false;
    let mut length: Option<usize> = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().ok();
        }
    }
    let rest = &raw[head_end + 4..];
    let body = if chunked {
        dechunk(rest).ok_or_else(|| bad("bad chunked encoding"))?
    } else if let Some(n) = length {
        rest.get(..n)
            .ok_or(Parse::Truncated("body shorter than Content-Length"))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok((status, body))
}

/// The status and whether the body is chunked, from a response's head (up to and
/// including its blank line).
fn parse_head(head: &[u8]) -> Result<(u16, bool), Parse> {
    let bad = |m: &str| Parse::Bad(m.to_string());
    let text = std::str::from_utf8(head).map_err(|_| bad("non-UTF-8 headers"))?;
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let chunked = lines.any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.eq_ignore_ascii_case("transfer-encoding")
                && value.trim().eq_ignore_ascii_case("chunked")
        })
    });
    Ok((status, chunked))
}

/// The lines of a streamed answer ([`Client::stream_lines`]), de-chunked as they
/// arrive: each `next()` blocks until a whole line is there. Blank lines (the
/// agent's keep-alives) are skipped; the last line needs no newline.
pub struct LineStream {
    reader: std::io::BufReader<UnixStream>,
    chunked: bool,
    /// Bytes of the current chunk not read yet.
    chunk_left: usize,
    /// Bytes of a line not complete yet.
    pending: Vec<u8>,
    done: bool,
}

impl LineStream {
    /// At most `max` more body bytes into `pending`; 0 at the end of the body.
    fn fill(&mut self, max: usize) -> std::io::Result<usize> {
        use std::io::BufRead;
        if !self.chunked {
            let buf = self.reader.fill_buf()?;
            let n = buf.len().min(max);
            self.pending.extend_from_slice(&buf[..n]);
            self.reader.consume(n);
            return Ok(n);
        }
        if self.chunk_left == 0 {
            let mut size_line = String::new();
            if self.reader.read_line(&mut size_line)? == 0 {
                return Ok(0);
            }
            let size = size_line.trim_end();
            // The CRLF that ends the previous chunk's data comes first.
            let size = if size.is_empty() {
                size_line.clear();
                if self.reader.read_line(&mut size_line)? == 0 {
                    return Ok(0);
                }
                size_line.trim_end()
            } else {
                size
            };
            let hex = size.split(';').next().unwrap_or_default().trim();
            self.chunk_left = usize::from_str_radix(hex, 16).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("bad chunk size {hex:?}"),
                )
            })?;
            if self.chunk_left == 0 {
                return Ok(0);
            }
        }
        let buf = self.reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(0);
        }
        let n = buf.len().min(self.chunk_left).min(max);
        self.pending.extend_from_slice(&buf[..n]);
        self.reader.consume(n);
        self.chunk_left -= n;
        Ok(n)
    }
}

impl Iterator for LineStream {
    type Item = Result<String, std::io::Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
                let rest = self.pending.split_off(end + 1);
                let line = std::mem::replace(&mut self.pending, rest);
                let line = String::from_utf8_lossy(&line).trim_end().to_string();
                if line.is_empty() {
                    continue;
                }
                return Some(Ok(line));
            }
            if self.done {
                let last = std::mem::take(&mut self.pending);
                let line = String::from_utf8_lossy(&last).trim_end().to_string();
                return (!line.is_empty()).then_some(Ok(line));
            }
            match self.fill(64 * 1024) {
                Ok(0) => self.done = true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.done = true;
                    self.pending.clear();
                    return Some(Err(e));
                }
            }
        }
    }
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(data, b"\r\n")?;
        let size_str = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_str.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_body() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_response(raw).unwrap(), (200, b"{}".to_vec()));
    }

    #[test]
    fn parses_chunked_body() {
        let raw = b"HTTP/1.1 500 Internal\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(raw).unwrap(), (500, b"abcde".to_vec()));
    }

    #[test]
    fn rejects_truncated_response() {
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{}").is_err());
    }

    /// A listener that takes `serve`'s bytes as its one answer (after reading the
    /// request), or never answers when `serve` is None.
    fn fake_agent(dir: &Path, serve: Option<&'static [u8]>) -> PathBuf {
        let path = dir.join("agent.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            match serve {
                Some(bytes) => {
                    let _ = s.write_all(bytes);
                }
                // Hung: hold the connection open, say nothing.
                None => std::thread::sleep(Duration::from_secs(3600)),
            }
        });
        path
    }

    #[test]
    fn a_hung_agent_times_out_within_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let path = fake_agent(dir.path(), None);
        let c = Client::new(&path).with_timeout(Duration::from_millis(300));
        let err = c.get::<serde_json::Value>("/healthz").unwrap_err();
        assert!(
            matches!(err, ClientError::TimedOut { .. }) && err.is_unavailable(),
            "{err:?}"
        );
        assert!(err.to_string().contains("did not answer"), "{err}");
    }

    #[test]
    fn an_agent_that_goes_away_mid_answer_is_closed_not_a_bad_response() {
        let dir = tempfile::tempdir().unwrap();
        for cut in [
            &b""[..],
            b"HTTP/1.1 200 OK\r\ncontent-le",
            b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{}",
        ] {
            let sub = tempfile::tempdir_in(dir.path()).unwrap();
            let path = fake_agent(sub.path(), Some(cut));
            let err = Client::new(&path)
                .get::<serde_json::Value>("/healthz")
                .unwrap_err();
            assert!(
                matches!(err, ClientError::Closed { .. }) && err.is_unavailable(),
                "{:?}: {err:?}",
                String::from_utf8_lossy(cut)
            );
        }
    }

    /// A listener that answers with `parts`, written one at a time with a pause
    /// between them (so the reader sees a chunk split across reads).
    fn streaming_agent(dir: &Path, parts: Vec<&'static [u8]>) -> PathBuf {
        let path = dir.join("agent.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            for p in parts {
                let _ = s.write_all(p);
                let _ = s.flush();
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        path
    }

    #[test]
    fn streamed_lines_are_dechunked_as_they_come() {
        let dir = tempfile::tempdir().unwrap();
        let path = streaming_agent(
            dir.path(),
            vec![
                b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n\
                  transfer-encoding: chunked\r\n\r\n",
                // One line in one chunk; then a line split over two chunks and two
                // writes; a keep-alive blank line; a chunk holding two lines.
                b"8\r\n{\"a\":1}\n\r\n",
                b"4\r\n{\"b\"",
                b"\r\n",
                b"3\r\n:2}\r\n1\r\n\n\r\n1\r\n\n\r\n",
                b"f\r\n{\"c\":3}\n{\"d\":4}\r\n0\r\n\r\n",
            ],
        );
        let lines: Vec<String> = Client::new(&path)
            .stream_lines("/v1/policy/monitor")
            .unwrap()
            .map(|l| l.unwrap())
            .collect();
        assert_eq!(
            lines,
            [r#"{"a":1}"#, r#"{"b":2}"#, r#"{"c":3}"#, r#"{"d":4}"#]
        );
    }

    #[test]
    fn a_streamed_error_is_the_agents_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = streaming_agent(
            dir.path(),
            vec![
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 49\r\n\r\n",
                b"{\"code\":11,\"message\":\"policy is not running yet\"}",
            ],
        );
        let err = match Client::new(&path).stream_lines("/v1/policy/monitor") {
            Err(e) => e,
            Ok(_) => panic!("an error status"),
        };
        assert!(
            matches!(&err, ClientError::Api(e) if e.code == 11),
            "{err:?}"
        );
        assert!(err.to_string().contains("not running yet"), "{err}");
    }

    #[test]
    fn missing_socket_is_unreachable() {
        let c = Client::new("/nonexistent/strait-test.sock");
        let err = c.get::<serde_json::Value>("/healthz").unwrap_err();
        assert!(err.is_unreachable(), "{err}");
    }
}
