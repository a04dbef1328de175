//! Asking dockerd what the plugin protocol never says: a network's name and the
//! container behind an endpoint. Two GETs on dockerd's API socket (`--docker-host`),
//! HTTP/1.0 so the answer is the body up to the close, never chunked.
//!
//! Only names for display come from here; nothing the data plane does waits on it,
//! and a dockerd that does not answer leaves the IDs in their place.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Longest wait for one answer.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Largest answer read (a container list of a busy host is a few hundred kB).
const MAX_ANSWER: u64 = 16 << 20;
/// The API version asked for: dockerd 20.10 speaks 1.41, and every later one too.
const API_VERSION: &str = "v1.41";

/// How old a container list may be and still answer: every endpoint that waits for
/// its container's name shares one list per period, so a burst of `docker run` costs
/// dockerd a few lists a second, not one per container per poll.
const LIST_MAX_AGE: Duration = Duration::from_millis(250);

/// dockerd's API socket.
#[derive(Debug)]
pub struct Dockerd {
    socket: PathBuf,
    /// The last container list and when it was read.
    containers: tokio::sync::Mutex<Option<(tokio::time::Instant, Value)>>,
}

impl Dockerd {
    pub fn new(socket: PathBuf) -> Self {
        Self {
            socket,
            containers: tokio::sync::Mutex::new(None),
        }
    }

    /// `GET /networks/<id>` → `Name`.
    pub async fn network_name(&self, id: &str) -> Result<String, String> {
        let v = self.get(&format!("/{API_VERSION}/networks/{id}")).await?;
        v.get("Name")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| "dockerd's network has no Name".to_string())
    }

    /// The name of the container whose endpoint is `endpoint_id`, once dockerd lists
    /// it (`GET /containers/json?all=1`); `None` while it does not.
    pub async fn container_of_endpoint(&self, endpoint_id: &str) -> Result<Option<String>, String> {
        // Callers wait on the lock while one of them reads a fresh list.
        let mut last = self.containers.lock().await;
        let fresh = last
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < LIST_MAX_AGE);
        if !fresh {
            let v = self
                .get(&format!("/{API_VERSION}/containers/json?all=1"))
                .await?;
            *last = Some((tokio::time::Instant::now(), v));
        }
        Ok(last
            .as_ref()
            .and_then(|(_, v)| container_with_endpoint(v, endpoint_id)))
    }

    async fn get(&self, path: &str) -> Result<Value, String> {
        let ask = async {
            let mut s = UnixStream::connect(&self.socket)
                .await
                .map_err(|e| format!("connecting to dockerd at {}: {e}", self.socket.display()))?;
            s.write_all(format!("GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n").as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let mut answer = Vec::new();
            s.take(MAX_ANSWER)
                .read_to_end(&mut answer)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(answer)
        };
        let answer = tokio::time::timeout(TIMEOUT, ask)
            .await
            .map_err(|_| "dockerd did not answer in time".to_string())??;
        parse_answer(&answer)
    }
}

/// The JSON body of a 200 answer.
fn parse_answer(answer: &[u8]) -> Result<Value, String> {
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("dockerd's answer has no header end")?;
    let head = String::from_utf8_lossy(&answer[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .ok_or("dockerd's answer has no status")?;
    if status != "200" {
        return Err(format!("dockerd answered {status}"));
    }
    serde_json::from_slice(&answer[split + 4..]).map_err(|e| format!("dockerd's answer: {e}"))
}

/// In a container list, the name of the one with an endpoint `endpoint_id`.
fn container_with_endpoint(list: &Value, endpoint_id: &str) -> Option<String> {
    list.as_array()?.iter().find_map(|c| {
        let networks = c.pointer("/NetworkSettings/Networks")?.as_object()?;
        networks
            .values()
            .any(|n| n.get("EndpointID").and_then(Value::as_str) == Some(endpoint_id))
            .then(|| {
                c.get("Names")?
                    .as_array()?
                    .first()?
                    .as_str()
                    .map(|n| n.trim_start_matches('/').to_string())
            })?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_body_of_a_200_answer() {
        let a = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"Name\":\"web\"}\n";
        assert_eq!(parse_answer(a).unwrap()["Name"], "web");
        let e = parse_answer(b"HTTP/1.0 404 Not Found\r\n\r\n{}").unwrap_err();
        assert!(e.contains("404"), "{e}");
        assert!(parse_answer(b"garbage").is_err());
    }

    #[test]
    fn finds_the_container_of_an_endpoint() {
        let list = serde_json::json!([
            {"Names": ["/db"], "NetworkSettings": {"Networks": {"n": {"EndpointID": "aaa"}}}},
            {"Names": ["/web"], "NetworkSettings": {"Networks": {"n": {"EndpointID": "bbb"}, "m": {"EndpointID": "ccc"}}}}
        ]);
        assert_eq!(
            container_with_endpoint(&list, "ccc").as_deref(),
            Some("web")
        );
        assert_eq!(container_with_endpoint(&list, "aaa").as_deref(), Some("db"));
        assert_eq!(container_with_endpoint(&list, "zzz"), None);
        assert_eq!(container_with_endpoint(&serde_json::json!({}), "aaa"), None);
    }
}
