//! The command line of `sluice`: every subcommand and flag, in one clap
//! definition.
//!
//! Why it exists: the binary parses it, and the man pages and shell
//! completions the package ships are generated from it
//! ([`crate::generate`]), so what `--help`, `man sluice-serve` and a
//! shell's completion say cannot drift apart.

use std::path::PathBuf;

use clap::{ArgAction, Parser, Subcommand};

use crate::config::ServeArgs;
use crate::drain::DrainArgs;
use crate::log::LogFormat;
use crate::tools::SpoolCommand;

/// sluice: a thread-per-core SMTP ingest engine. It accepts mail over SMTP
/// and makes every message durable in its spool before it answers 250.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about, long_about = None)]
pub struct Cli {
    /// More log output (-v: debug events, -vv: everything). `RUST_LOG`,
    /// when set, takes precedence (like `sluice=debug`).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Less log output (errors and warnings only).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Log line format: `text` (one human line per event) or `json` (one
    /// object per line, for log shippers).
    #[arg(long, value_name = "text|json", default_value = "text", global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// -1 quiet, 0 normal, 1 and up more.
    pub fn verbosity(&self) -> i8 {
        if self.quiet {
            -1
        } else {
            self.verbose.min(3) as i8
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the SMTP server (defaults: 127.0.0.1:2525, spool ./spool, all cores).
    Serve(Box<ServeArgs>),
    /// Hand every committed message in a spool to a NATS JetStream
    /// stream (runs beside `serve`; deletes drained segments).
    Drain(Box<DrainArgs>),
    /// Inspect a spool without a running server.
    #[command(subcommand)]
    Spool(SpoolCommand),
    /// Check this host's settings for an ingest node.
    #[command(subcommand)]
    Tune(TuneCommand),
    /// Write the files a package ships: man pages, shell completions, the
    /// sample settings file.
    #[command(subcommand, hide = true)]
    Generate(GenerateCommand),
}

/// `sluice tune`.
#[derive(Debug, Subcommand)]
pub enum TuneCommand {
    /// Read kernel and process limits and say what to change (exit 1 if
    /// anything should change).
    Check {
        /// Where the spool will live (its file system is checked).
        #[arg(long, default_value = "./spool")]
        spool: PathBuf,
        /// Connections per core to plan descriptors for.
        #[arg(long, default_value_t = 10_000)]
        max_connections: u64,
    },
}

/// `sluice generate` (hidden: for packaging).
#[derive(Debug, Subcommand)]
pub enum GenerateCommand {
    /// A man page per command into DIR (sluice.8, sluice-serve.8, …).
    Man {
        /// The directory to write them to (created if missing).
        dir: PathBuf,
    },
    /// Completions for bash, zsh and fish into DIR.
    Completions {
        /// The directory to write them to (created if missing).
        dir: PathBuf,
    },
    /// The sample settings file, on stdout.
    Config {
        /// Write `spool = DIR` uncommented (the package's spool).
        #[arg(long, value_name = "DIR")]
        spool: Option<PathBuf>,
    },
}
