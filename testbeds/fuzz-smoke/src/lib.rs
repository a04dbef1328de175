//! The mutation engine behind the fuzz smoke tests: `api/tests/fuzz_smoke.rs`,
//! `cni/tests/fuzz_smoke.rs`, `bgp/tests/fuzz_smoke.rs` and `policy/tests/fuzz_smoke.rs`.
//!
//! The libFuzzer targets in `fuzz/` need cargo-fuzz and are not run by CI; the smoke
//! tests run the same bodies (`strait_api::fuzzing`, `strait_cni::fuzzing`,
//! `strait_bgp::fuzzing`, `strait_policy::fuzzing`) on every `cargo test`, on the
//! stable toolchain, over each test's seeds and a fixed number of seeded pseudo-random
//! mutations of them. The engine
//! is one crate rather than a copy in each test because the crates share no test code;
//! it is a dev-only crate (their dev-dependency, built by every `cargo test`) so that no
//! shipped library carries it. It uses nothing but std and serde_json, and it is
//! deterministic: the same seeds and `rng_seed` give the same inputs on every machine,
//! so a finding reproduces.
//!
//! What differs between the crates is a parameter: the bytes a mutation inserts (JSON
//! and HTTP syntax for the API, JSON and `KEY=VALUE` syntax for the plugin), the wrong
//! values put at every key, and whether object members are also removed.

use serde_json::Value;

/// How many mutated inputs [`run`] makes, from which generator seed, and with which
/// bytes to insert.
pub struct Mutations<'a> {
    pub count: usize,
    pub rng_seed: u64,
    /// Bytes a mutation likes to insert or overwrite with: the syntax of the format
    /// parsed, NUL, non-UTF-8, digits.
    pub interesting: &'a [u8],
}

/// Inputs above this size run once but are not mutated: they are there for their size,
/// and thousands of copies of them would only make the test slow.
const MUTATE_MAX: usize = 16 * 1024;

/// Run `body` over every seed, then over `mutations.count` mutations of the seeds no
/// larger than 16 KiB. `body` panics on a finding.
pub fn run(body: impl Fn(&[u8]), seeds: Vec<Vec<u8>>, mutations: &Mutations<'_>) {
    for seed in &seeds {
        body(seed);
    }
    let small: Vec<Vec<u8>> = seeds
        .into_iter()
        .filter(|s| s.len() <= MUTATE_MAX)
        .collect();
    assert!(!small.is_empty(), "no seed small enough to mutate");
    for input in mutate_all(&small, mutations) {
        body(&input);
    }
}

/// xorshift64*: tiny, seeded, the same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        // n is small; the modulo bias does not matter for picking mutations.
        (self.next() % n.max(1) as u64) as usize
    }
}

/// `count` inputs, each a seed with one to four byte flips, overwrites, insertions,
/// deletions, truncations, repeats or splices with another seed.
fn mutate_all(seeds: &[Vec<u8>], m: &Mutations<'_>) -> Vec<Vec<u8>> {
    let mut rng = Rng(m.rng_seed);
    (0..m.count)
        .map(|_| {
            let mut data = seeds[rng.below(seeds.len())].clone();
            for _ in 0..=rng.below(4) {
                mutate(&mut data, seeds, m.interesting, &mut rng);
            }
            data
        })
        .collect()
}

fn mutate(data: &mut Vec<u8>, seeds: &[Vec<u8>], interesting: &[u8], rng: &mut Rng) {
    let len = data.len();
    match rng.below(7) {
        0 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            data[i] = interesting[rng.below(interesting.len())];
        }
        2 => {
            let i = rng.below(len + 1);
            let n = 1 + rng.below(8);
            let bytes: Vec<u8> = (0..n)
                .map(|_| interesting[rng.below(interesting.len())])
                .collect();
            data.splice(i..i, bytes);
        }
        3 if len > 0 => {
            let start = rng.below(len);
            let end = (start + 1 + rng.below(16)).min(len);
            data.drain(start..end);
        }
        4 => data.truncate(rng.below(len + 1)),
        5 if len > 0 => {
            // Repeat a slice: grows lists, nesting and chunk runs.
            let start = rng.below(len);
            let end = (start + 1 + rng.below(64)).min(len);
            let piece = data[start..end].to_vec();
            let at = rng.below(len + 1);
            data.splice(at..at, piece);
        }
        _ => {
            let other = &seeds[rng.below(seeds.len())];
            let cut = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            data.truncate(cut);
            data.extend_from_slice(&other[from..]);
        }
    }
}

/// Whether [`wrong_type_at_every_key`] also drops each object member in turn.
pub enum Members {
    Keep,
    AlsoRemove,
}

/// `base` with each node in turn (object members and list items, at any depth)
/// replaced by each of `wrong_values`, serialised; with [`Members::AlsoRemove`], also
/// `base` without each object member.
pub fn wrong_type_at_every_key(
    base: &Value,
    wrong_values: &[Value],
    members: Members,
) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut paths = Vec::new();
    collect_paths(base, &mut Vec::new(), &mut paths);
    for path in &paths {
        for wrong in wrong_values {
            let mut v = base.clone();
            if let Some(slot) = pointer_mut(&mut v, path) {
                *slot = wrong.clone();
            }
            out.push(v.to_string().into_bytes());
        }
        if let Members::AlsoRemove = members {
            let (last, parent) = path.split_last().expect("paths are not empty");
            let mut v = base.clone();
            if let Some(Value::Object(m)) = pointer_mut(&mut v, parent) {
                m.remove(last);
                out.push(v.to_string().into_bytes());
            }
        }
    }
    out
}

/// Every path to a node below the root, parents before their children.
fn collect_paths(v: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let children: Vec<(String, &Value)> = match v {
        Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), v)).collect(),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        _ => return,
    };
    for (key, child) in children {
        prefix.push(key);
        out.push(prefix.clone());
        collect_paths(child, prefix, out);
        prefix.pop();
    }
}

/// The node at `path` (member names and list indices), if there is one.
fn pointer_mut<'a>(mut v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    for key in path {
        v = match v {
            Value::Object(m) => m.get_mut(key)?,
            Value::Array(a) => a.get_mut(key.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mutations_depend_only_on_the_seeds() {
        let seeds = vec![b"{\"a\":[1,2]}".to_vec(), b"xyz".to_vec()];
        let m = |rng_seed| Mutations {
            count: 200,
            rng_seed,
            interesting: b"{}",
        };
        let a = mutate_all(&seeds, &m(1));
        assert_eq!(a.len(), 200);
        assert_eq!(a, mutate_all(&seeds, &m(1)));
        assert_ne!(a, mutate_all(&seeds, &m(2)));
        assert!(a.iter().any(|input| !seeds.contains(input)));
    }

    #[test]
    fn every_node_gets_every_wrong_value_and_members_go_missing() {
        let base = json!({"a": [1], "b": 2});
        // Paths: a, a/0, b.
        let kept = wrong_type_at_every_key(&base, &[json!(null)], Members::Keep);
        let parsed: Vec<Value> = kept
            .iter()
            .map(|b| serde_json::from_slice(b).unwrap())
            .collect();
        assert_eq!(
            parsed,
            [
                json!({"a": null, "b": 2}),
                json!({"a": [null], "b": 2}),
                json!({"a": [1], "b": null}),
            ]
        );
        let removed = wrong_type_at_every_key(&base, &[json!(null)], Members::AlsoRemove);
        let parsed: Vec<Value> = removed
            .iter()
            .map(|b| serde_json::from_slice(b).unwrap())
            .collect();
        assert_eq!(
            parsed,
            [
                json!({"a": null, "b": 2}),
                json!({"b": 2}),
                json!({"a": [null], "b": 2}),
                json!({"a": [1], "b": null}),
                json!({"a": [1]}),
            ]
        );
    }
}
