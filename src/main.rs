//! The `sluice` binary: parses the command line ([`sluice::cli`]), sets up
//! the log, and hands over to the library (`serve` to the server, `spool`
//! to the tools). Nothing else.

use std::process::ExitCode;

use clap::Parser;
use sluice::cli::{Cli, Command, TuneCommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    sluice::memory::configure();
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
