//! The `sluice` binary: parses the command line ([`sluice::cli`]), sets up
//! the log, and hands over to the library (`serve` to the server, `spool`
//! to the tools). Nothing else.

use std::process::ExitCode;

use clap::Parser;
use sluice::cli::{Cli, Command, TuneCommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc (v3) option numbers from its `mimalloc.h`; libmimalloc-sys
/// does not name these three.
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const MI_OPTION_PURGE_DECOMMITS: libmimalloc_sys::mi_option_t = 5;
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Makes mimalloc give freed memory back to the OS at once (decommit, no
/// delay, arenas committed as used) instead of keeping it for the
/// process: after a burst of hostile connections, RSS falls back to what
/// the server needs. An environment variable (`MIMALLOC_PURGE_DELAY`…)
/// still wins.
fn return_freed_memory_promptly() {
    for (option, env, value) in [
        (
            MI_OPTION_ARENA_EAGER_COMMIT,
            "MIMALLOC_ARENA_EAGER_COMMIT",
            0,
        ),
        (MI_OPTION_PURGE_DECOMMITS, "MIMALLOC_PURGE_DECOMMITS", 1),
        (MI_OPTION_PURGE_DELAY, "MIMALLOC_PURGE_DELAY", 0),
    ] {
        if std::env::var_os(env).is_none() {
            // SAFETY: mi_option_set only stores an integer in mimalloc's
            // option table; any value is valid for these options.
            unsafe { libmimalloc_sys::mi_option_set(option, value) };
        }
    }
}

fn main() -> ExitCode {
    return_freed_memory_promptly();
    let cli = Cli::parse();
    let verbosity = cli.verbosity();
    let name = match cli.command {
        Command::Drain(_) => "sluice drain",
        _ => "sluice",
    };
    let log = match sluice::log::init(name, cli.log_format, verbosity) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("sluice: error: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Serve(args) if args.check_config => Ok(sluice::config::check::run(&args)),
        Command::Serve(args) => sluice::server::serve(*args).map(|()| true),
        Command::Drain(args) => sluice::drain::run(*args).map(|()| true),
        Command::Spool(cmd) => sluice::tools::run(cmd),
        Command::Tune(TuneCommand::Check {
            spool,
            max_connections,
        }) => Ok(sluice::tune::print_report(&sluice::tune::advise(
            &sluice::tune::read_facts(&spool, max_connections),
        ))),
        Command::Generate(what) => sluice::generate::run(what).map(|()| true),
    };
    // Queued log lines go out before the last word.
    drop(log);
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        // `sluice spool export | head`: the reader left; not an error.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
