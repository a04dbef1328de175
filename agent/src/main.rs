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
    let flags = Flags::parse();
    if let Some(code) = generate(&flags) {
        return code;
    }
    let cfg = match AgentConfig::resolve(flags) {
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

/// `--generate-completion SHELL` / `--generate-manpage DIR`: made from the flags' own
/// clap definitions, so the package's completions and man page match `--help`.
fn generate(flags: &Flags) -> Option<std::process::ExitCode> {
    use clap::CommandFactory;
    if let Some(shell) = flags.generate_completion {
        use std::io::Write;
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Flags::command(), "straitd", &mut script);
        // A closed pipe (`| head`) is the reader's choice, not an error worth a panic.
        let _ = std::io::stdout().write_all(&script);
        return Some(std::process::ExitCode::SUCCESS);
    }
    let dir = flags.generate_manpage.as_ref()?;
    let mut page = Vec::new();
    let written = clap_mangen::Man::new(Flags::command())
        .section("8")
        .render(&mut page)
        .and_then(|()| std::fs::create_dir_all(dir))
        .and_then(|()| std::fs::write(dir.join("straitd.8"), page));
    Some(match written {
        Ok(()) => {
            println!("{}", dir.join("straitd.8").display());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("straitd: writing {}/straitd.8: {e}", dir.display());
            std::process::ExitCode::FAILURE
        }
    })
}
