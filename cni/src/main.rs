//! `strait`: the CNI plugin binary. Process I/O only; the work is in the library.

use std::io::{Read, Write};
use std::process::ExitCode;

use strait_cni::version::CniVersion;
use strait_cni::{CniError, RawEnv, verbs};

fn main() -> ExitCode {
    // A person asking, not a runtime (runtimes say CNI_COMMAND=VERSION, and pass no
    // arguments): answer in words rather than with a CNI error.
    if std::env::args()
        .nth(1)
        .is_some_and(|a| a == "--version" || a == "-V")
    {
        println!("{}", verbs::about());
        return ExitCode::SUCCESS;
    }
    let env = RawEnv::from_process();
    let mut stdin = Vec::new();
    let outcome = match std::io::stdin().lock().read_to_end(&mut stdin) {
        Ok(_) => strait_cni::run(&env, &stdin),
        Err(e) => verbs::failure(
            &CniError::ReadStdin(e),
            CniVersion::LATEST,
            env.command.as_deref(),
        ),
    };

    // The whole answer is built before anything is printed, so stdout never holds half a
    // result followed by an error.
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_all(&outcome.stdout)
        .and_then(|()| stdout.flush());
    if let Err(e) = written {
        verbs::log(format_args!("writing the result to stdout: {e}"));
        return ExitCode::FAILURE;
    }
    if outcome.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
