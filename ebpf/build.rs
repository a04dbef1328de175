//! Compiles the eBPF programs in `src/*.c` with clang (`-target bpf`). Stable Rust
//! cannot build eBPF, so the programs are C; the agent embeds the objects. clang comes
//! from `scripts/install-deps.sh`.
//!
//! `-g` stays: the BTF it emits carries aya's map definitions, and the agent's ABI
//! test reads the layouts of `include/strait/abi.h` back from it. Warnings are errors,
//! `-Wextra` included.

use std::path::PathBuf;
use std::process::Command;

const PROGRAMS: &[&str] = &["fastpath", "policy", "services", "services_tc"];

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let clang = std::env::var("STRAIT_BPF_CLANG").unwrap_or_else(|_| "clang".into());
    // <asm/types.h> lives under the multiarch include directory on Debian.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = match arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        other => panic!("strait-ebpf: no multiarch include path known for {other}"),
    };
    println!("cargo:rerun-if-env-changed=STRAIT_BPF_CLANG");
    // The headers every program shares (a directory: any file in it counts).
    println!("cargo:rerun-if-changed=include");
    for name in PROGRAMS {
        let src = format!("src/{name}.c");
        println!("cargo:rerun-if-changed={src}");
        let obj = out.join(format!("{name}.o"));
        let status = Command::new(&clang)
            .args(["-O2", "-g", "-Wall", "-Wextra", "-Werror", "-target", "bpf"])
            .arg("-Iinclude")
            .arg(format!("-I/usr/include/{multiarch}"))
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .status()
            .unwrap_or_else(|e| {
                panic!("strait-ebpf: cannot run {clang} ({e}); install clang and libbpf-dev (scripts/install-deps.sh)")
            });
        assert!(status.success(), "strait-ebpf: {clang} failed on {src}");
    }
}
