//! `straitd`: parse flags, set up logging, run the daemon. Everything else lives in the
//! library so tests can drive it.

use clap::Parser;
use straitd::config::{AgentConfig, Flags};

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STRAIT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: log files and journald get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cfg = match AgentConfig::resolve(Flags::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("straitd: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("straitd")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("straitd: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(straitd::daemon::run(cfg)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("straitd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
