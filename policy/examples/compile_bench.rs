//! Compile time and map size for one endpoint under 0, 100, 1 000 and 10 000 rules
//! (a mix of CIDR and selector rules, as the datapath benchmarks use), over a cluster
//! of 20 namespaces × 50 identities. Figures only:
//! `cargo run --release -p strait-policy --example compile_bench`.

#[path = "../tests/synthetic/mod.rs"]
mod synthetic;

use std::time::Instant;

use strait_policy::compile::{Compiler, Mode};

fn main() {
    let (view, local) = synthetic::scale_view(20, 50);
    println!(
        "{:>6} {:>10} {:>11} {:>14} {:>12} {:>12}",
        "rules", "order (ms)", "compile (ms)", "identity keys", "CIDR classes", "map entries"
    );
    for rules in [0, 100, 1_000, 10_000] {
        let policies = synthetic::scale_policies(rules, 50);
        let started = Instant::now();
        let compiler = Compiler::new(policies, Mode::Enforce);
        let ordered = started.elapsed();
        let started = Instant::now();
        let tables = compiler.compile(&view, &local);
        let compiled = started.elapsed();
        println!(
            "{:>6} {:>10.2} {:>11.2} {:>14} {:>12} {:>12}",
            rules,
            ordered.as_secs_f64() * 1e3,
            compiled.as_secs_f64() * 1e3,
            tables.ingress.identities.len() + tables.egress.identities.len(),
            tables.ingress.cidrs.len() + tables.egress.cidrs.len(),
            tables.entry_count(),
        );
    }
}
