//! The `sluice` binary: parses the command line and hands over to the
//! library (`serve` to the server, `spool` to the tools). Nothing else.

use std::process::ExitCode;

use clap::{ArgAction, Parser, Subcommand};
use sluice::config::ServeArgs;
use sluice::tools::SpoolCommand;

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

/// sluice: a thread-per-core SMTP ingest engine. It accepts mail over SMTP
/// and makes every message durable in its spool before it answers 250.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// More log output (-v: one line per stored message).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
    /// Less log output (errors and warnings only).
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the SMTP server (defaults: 127.0.0.1:2525, spool ./spool, all cores).
    Serve(Box<ServeArgs>),
    /// Hand every committed message in a spool to a NATS JetStream
    /// stream (runs beside `serve`; deletes drained segments).
    Drain(Box<sluice::drain::DrainArgs>),
    /// Inspect a spool without a running server.
    #[command(subcommand)]
    Spool(SpoolCommand),
    /// Check this host's settings for an ingest node.
    #[command(subcommand)]
    Tune(TuneCommand),
}

#[derive(Debug, Subcommand)]
enum TuneCommand {
    /// Read kernel and process limits and say what to change (exit 1 if
    /// anything should change).
    Check {
        /// Where the spool will live (its file system is checked).
        #[arg(long, default_value = "./spool")]
        spool: std::path::PathBuf,
        /// Connections per core to plan descriptors for.
        #[arg(long, default_value_t = 10_000)]
        max_connections: u64,
    },
}

fn main() -> ExitCode {
    return_freed_memory_promptly();
    let cli = Cli::parse();
    let verbosity = if cli.quiet {
        -1
    } else {
        cli.verbose.min(3) as i8
    };
    let result = match cli.command {
        Command::Serve(args) => sluice::server::serve(*args, verbosity).map(|()| true),
        Command::Drain(args) => sluice::drain::run(*args, verbosity).map(|()| true),
        Command::Spool(cmd) => sluice::tools::run(cmd),
        Command::Tune(TuneCommand::Check {
            spool,
            max_connections,
        }) => Ok(sluice::tune::print_report(&sluice::tune::advise(
            &sluice::tune::read_facts(&spool, max_connections),
        ))),
    };
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
