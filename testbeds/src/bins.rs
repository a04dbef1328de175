//! Where the binaries under test are. Tests run from `target/<profile>/deps/`; the
//! workspace binaries sit one level up. `STRAIT_BIN_DIR` overrides that.

use std::path::PathBuf;

/// Path of a workspace binary (`straitd`, `strait`, `netctl`); panics with the command
/// to build it when it is missing.
pub fn bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("STRAIT_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            // A test runs from target/<profile>/deps/, a bench binary from
            // target/<profile>/: look beside the executable, then one level up.
            let exe = std::env::current_exe().expect("current_exe");
            let here = exe.parent().expect("executable has a directory");
            if here.join(name).exists() {
                here.to_path_buf()
            } else {
                here.parent().unwrap_or(here).to_path_buf()
            }
        }
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built: run `cargo build --workspace --bins` first (or set STRAIT_BIN_DIR)",
        path.display()
    );
    path
}

/// Directory of Debian's reference CNI plugins (containernetworking-plugins).
pub fn reference_plugins_dir() -> Option<PathBuf> {
    ["/usr/lib/cni", "/opt/cni/bin"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("portmap").exists())
}
