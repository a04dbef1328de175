//! A blocking HTTP/1.1 client for the agent's unix socket.
//!
//! One request per connection (`Connection: close`), so the whole exchange is a write
//! and a read to EOF. Hand-rolled on purpose: the CNI plugin is exec'd per call and a
//! full HTTP stack would cost more in start-up than the request itself.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::types::ApiError;

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
    /// The connection broke or timed out mid-request.
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
}

/// Client for one agent socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    /// A client with a 120 s timeout (an ADD may wait for a store CAS retry loop).
    pub fn new(socket: impl AsRef<Path>) -> Self {
        Self {
            socket: socket.as_ref().to_path_buf(),
            timeout: Duration::from_secs(120),
        }
    }

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

    /// Removes external peer `name`; the agent answers 404 (code 107) when there is none.
    pub fn bgp_delete_external_peer(&self, name: &str) -> Result<(), ClientError> {
        self.request("DELETE", &crate::paths::bgp_external_peer(name), None)?;
        Ok(())
    }

    /// Send one request; return the body of a 2xx answer, or the agent's [`ApiError`].
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Vec<u8>, ClientError> {
        let mut stream =
            UnixStream::connect(&self.socket).map_err(|source| ClientError::Unreachable {
                path: self.socket.clone(),
                source,
            })?;
        let io = |source| ClientError::Io {
            path: self.socket.clone(),
            source,
        };
        stream.set_read_timeout(Some(self.timeout)).map_err(io)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(io)?;

        let body = body.unwrap_or_default();
        let mut msg = format!(
            "{method} {path} HTTP/1.1\r\nHost: straitd\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        msg.extend_from_slice(body);
        stream.write_all(&msg).map_err(io)?;

        let mut raw = Vec::with_capacity(4096);
        stream.read_to_end(&mut raw).map_err(io)?;
        answer(&raw)
    }
}

/// What a raw response means: the body of a 2xx answer, or the agent's [`ApiError`].
/// Apart from the socket so the fuzz targets (crate::fuzzing) reach it with bytes.
pub(crate) fn answer(raw: &[u8]) -> Result<Vec<u8>, ClientError> {
    let (status, payload) = parse_response(raw)?;
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

/// Split a raw HTTP/1.1 response into status and (de-chunked) body.
fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), ClientError> {
    let bad = |m: &str| ClientError::BadResponse(m.to_string());
    let head_end = find(raw, b"\r\n\r\n").ok_or_else(|| bad("no header terminator"))?;
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
            .ok_or_else(|| bad("body shorter than Content-Length"))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok((status, body))
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

    #[test]
    fn missing_socket_is_unreachable() {
        let c = Client::new("/nonexistent/strait-test.sock");
        let err = c.get::<serde_json::Value>("/healthz").unwrap_err();
        assert!(err.is_unreachable(), "{err}");
    }
}
