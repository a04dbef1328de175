//! The README stands alone: every file or directory of the repository it (or a doc in
//! `docs/`) names exists, and none of them sends the reader outside the repository.
//! No root needed.

use std::path::{Path, PathBuf};
use strait_testbeds::repo_root;

/// The repository's top-level entries a path in the docs may start with.
const TOP: &[&str] = &[
    "docs/",
    "deploy/",
    "scripts/",
    "agent/",
    "api/",
    "cni/",
    "netctl/",
    "bgp/",
    "ike/",
    "esp/",
    "policy/",
    "services/",
    "ebpf/",
    "testbeds/",
    "fuzz/",
    "Vagrantfile",
];

/// Store keys the docs name (docs/cluster.md lists them), which share a first word
/// with a crate.
const STORE_KEYS: &[&str] = &["bgp/peers", "policy/k8s/", "policy/cluster/"];

/// Every path-like word of `text`: inside backticks, and markdown link targets, with
/// trailing punctuation and `#anchors` cut off.
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, chunk) in text.split('`').enumerate() {
        if i % 2 == 1 {
            out.extend(chunk.split_whitespace().map(str::to_string));
        }
    }
    for part in text.split("](").skip(1) {
        if let Some(end) = part.find(')') {
            out.push(part[..end].to_string());
        }
    }
    out.into_iter()
        .map(|p| {
            p.trim_end_matches([',', '.', ';', ':', ')'])
                .split('#')
                .next()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

/// The repository's files `text` names (relative to the repository's root).
fn named_paths(text: &str) -> Vec<String> {
    words(text)
        .into_iter()
        .filter(|p| TOP.iter().any(|t| p.starts_with(t)))
        // Keys of the store look like paths; they are not files.
        .filter(|p| !STORE_KEYS.iter().any(|k| p.starts_with(k)))
        // Globs and placeholders name a pattern, not a file.
        .filter(|p| !p.contains(['*', '<', '{', '$']))
        .collect()
}

/// Whether `relative`, read from `doc`'s directory, climbs out of the repository.
fn leaves_repository(doc: &Path, relative: &str) -> bool {
    let mut at: Vec<_> = doc
        .parent()
        .map(|d| d.components().collect())
        .unwrap_or_default();
    for part in Path::new(relative).components() {
        match part {
            std::path::Component::ParentDir => {
                at.pop();
            }
            std::path::Component::CurDir => {}
            other => at.push(other),
        }
    }
    !at.iter().collect::<PathBuf>().starts_with(repo_root())
}

fn check(doc: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(doc).expect("read doc");
    let mut problems = Vec::new();
    for p in named_paths(&text) {
        if !repo_root().join(&p).exists() {
            problems.push(format!(
                "{}: names {p}, which is not in the repository",
                doc.display()
            ));
        }
    }
    for w in words(&text) {
        if w.starts_with("../") && leaves_repository(doc, &w) {
            problems.push(format!(
                "{}: sends the reader to {w}, outside the repository",
                doc.display()
            ));
        }
    }
    problems
}

#[test]
fn the_readme_and_docs_name_only_what_the_repository_has() {
    let mut docs = vec![repo_root().join("README.md")];
    let mut in_docs: Vec<PathBuf> = std::fs::read_dir(repo_root().join("docs"))
        .expect("docs/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    in_docs.sort();
    docs.extend(in_docs);
    let problems: Vec<String> = docs.iter().flat_map(|d| check(d)).collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_missing_file_is_caught() {
    let dir = tempfile::tempdir().expect("tempdir");
    let doc = dir.path().join("x.md");
    std::fs::write(
        &doc,
        "see `docs/no-such-file.md`, [this](deploy/nothing.yaml) and [notes](../notes/x.md)\n",
    )
    .unwrap();
    let problems = check(&doc);
    assert_eq!(problems.len(), 3, "{problems:?}");
    // A doc may climb to the root, not above it.
    let root = repo_root();
    assert!(!leaves_repository(&root.join("docs/x.md"), "../README.md"));
    assert!(leaves_repository(
        &root.join("README.md"),
        "../elsewhere/x.md"
    ));
}
