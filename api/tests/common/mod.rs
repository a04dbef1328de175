//! What the API's test files share: the captured dockerd requests.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// Every request dockerd 20.10 sent in the captured scenarios
/// (tests/fixtures/docker-plugin), in order: (file, method path, request body as JSON,
/// `null` for a request without a body).
pub fn docker_captures() -> Vec<(PathBuf, String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/docker-plugin");
    let mut out = Vec::new();
    for scenario in sorted_entries(&dir) {
        for file in sorted_entries(&scenario) {
            let c: Value =
                serde_json::from_slice(&std::fs::read(&file).expect("read")).expect("capture");
            let path = c["path"].as_str().expect("path").to_string();
            out.push((file, path, c["request"].clone()));
        }
    }
    out
}

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    entries
}
