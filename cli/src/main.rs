//! The `rpger-store` binary: parses arguments, runs one engine operation, renders the result,
//! maps errors to exit codes. Thin by design.

mod args;
mod commands;
mod config;
mod output;
mod progress;

use clap::Parser;
use rpger_engine::ErrorKind;
use std::process::ExitCode;

fn main() -> ExitCode {
    // The unpause watchdog is this binary re-run by the engine (see sources::docker).
    let argv: Vec<String> = std::env::args().collect();
    if argv.len() == 3 && argv[1] == rpger_engine::sources::docker::WATCHDOG_ARG {
        return ExitCode::from(rpger_engine::sources::docker::run_watchdog(&argv[2]) as u8);
    }
    if argv.len() == 3 && argv[1] == rpger_engine::sources::docker::REMOVE_WATCHDOG_ARG {
        return ExitCode::from(rpger_engine::sources::docker::run_remove_watchdog(&argv[2]) as u8);
    }
    quiet_on_closed_stdout();
    let cli = args::Cli::parse();
    if let Some(n) = cli.threads {
        if let Err(e) = rayon::ThreadPoolBuilder::new().num_threads(n.max(1)).build_global() {
            eprintln!("rpger-store: error: cannot start {n} worker threads: {e}");
            return ExitCode::from(2);
        }
    }
    match commands::run(&cli) {
        Ok(code) => code,
        // A reader that went away (`rpger-store mongodb-archive latest | head`) is not an error.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rpger-store: error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

/// `rpger-store snapshots | head` closes stdout early, and `println!` then panics. That is the
/// reader's choice, not a failure: exit 0 quietly, as for a broken pipe returned as an error.
/// (SIGPIPE is not set back to its default instead: it would kill a restore writing into a
/// database client that died, with no error message.) Output is printed once the work is
/// done, so nothing is cut short by this.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info.payload().downcast_ref::<String>().map(String::as_str).or_else(|| info.payload().downcast_ref::<&str>().copied());
        if msg.is_some_and(|m| m.starts_with("failed printing to stdout") && m.contains("Broken pipe")) {
            std::process::exit(0);
        }
        default(info);
    }));
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
        || format!("{e:#}").contains("Broken pipe")
}

/// Maps an error to the exit codes documented in `--help`.
fn exit_code(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<rpger_engine::Error>().map(|e| e.kind()) {
        Some(ErrorKind::Corrupt) => 1,
        Some(ErrorKind::Locked) => 3,
        Some(ErrorKind::Interrupted) => 130,
        _ => 2,
    }
}
