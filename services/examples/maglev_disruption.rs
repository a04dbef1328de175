//! How many flows move when one of N backends leaves or one joins: strait's Maglev
//! tables beside the ideal (1/N of the flows: those of the backend that left) and beside
//! plain modulo hashing (`hash(flow) % N`, what a naive balancer does), measured over
//! the same 100 000 flows in the same run. Also the time to build a table.
//!
//! `cargo run --release -p strait-services --example maglev_disruption`

use std::time::Instant;

use strait_services::maglev;

const FLOWS: u64 = 100_000;

fn keys(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("10.244.{}.{}:8080", i / 200, i % 200 + 2))
        .collect()
}

/// A flow's hash (splitmix64 of its number): where it lands in a table or modulo N.
fn flow_hash(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn maglev_moved(before: &maglev::Table, after: &maglev::Table) -> f64 {
    let m = before.slots.len() as u64;
    let moved = (0..FLOWS)
        .filter(|&f| {
            let slot = (flow_hash(f) % m) as usize;
            before.backend(slot) != after.backend(slot)
        })
        .count();
    moved as f64 / FLOWS as f64
}

fn modulo_moved(before: &[String], after: &[String]) -> f64 {
    let moved = (0..FLOWS)
        .filter(|&f| {
            let h = flow_hash(f);
            before[(h % before.len() as u64) as usize] != after[(h % after.len() as u64) as usize]
        })
        .count();
    moved as f64 / FLOWS as f64
}

fn main() {
    println!(
        "{:>5} {:>6} {:>10} | {:>8} {:>8} {:>8} | {:>8} {:>8} | {:>10}",
        "N", "M", "event", "ideal", "maglev", "modulo", "min/M", "max/M", "build"
    );
    for n in [3usize, 5, 10, 20, 50, 100] {
        let all = keys(n);
        let m = maglev::table_size(n);
        let t0 = Instant::now();
        let full = maglev::build(&all, m);
        let build = t0.elapsed();
        let shares = full.shares();
        let (min, max) = (
            *shares.iter().min().unwrap_or(&0),
            *shares.iter().max().unwrap_or(&0),
        );
        // One leaves (the middle one), at the same M: what an agent does when a
        // backend fails its check.
        let mut fewer = all.clone();
        fewer.remove(n / 2);
        let leave = maglev::build(&fewer, m);
        println!(
            "{n:>5} {m:>6} {:>10} | {:>7.2}% {:>7.2}% {:>7.2}% | {:>8} {:>8} | {:>8.2?}",
            "one leaves",
            100.0 / n as f64,
            100.0 * maglev_moved(&full, &leave),
            100.0 * modulo_moved(&all, &fewer),
            min,
            max,
            build
        );
        let mut more = all.clone();
        more.push(format!("10.245.0.{}:8080", n + 2));
        let join = maglev::build(&more, m);
        println!(
            "{n:>5} {m:>6} {:>10} | {:>7.2}% {:>7.2}% {:>7.2}% |",
            "one joins",
            100.0 / (n + 1) as f64,
            100.0 * maglev_moved(&full, &join),
            100.0 * modulo_moved(&all, &more),
        );
    }
    println!(
        "ideal: the share of the backend that left (or that the new one takes); maglev: \
         flows whose backend changed; modulo: the same with hash % N. min/M, max/M: the \
         fewest and most slots a backend holds."
    );
}
