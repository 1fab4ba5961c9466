//! `sluice spool verify|ls|cat|export`: read a spool without a server.
//!
//! Why it exists: an operator must be able to check and take mail out of a
//! spool on a machine where the server is stopped, crashed or never ran.
//! These commands only read the spool (they never change it).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Subcommand, ValueEnum};

use crate::spool::export::{jsonl_line, rfc3339, write_maildir, write_mboxrd};
use crate::spool::walk::{check_message, list_cores, read_message, walk_core, Event, Found};
use crate::spool::QueueId;

/// Export formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// One mboxrd file.
    Mbox,
    /// A maildir (needs --out).
    Maildir,
}

/// The spool subcommands.
#[derive(Debug, Subcommand)]
pub enum SpoolCommand {
    /// Check every record and message checksum; exit 1 on any problem.
    Verify {
        /// The spool directory.
        #[arg(long, default_value = "./spool")]
        spool: PathBuf,
    },
    /// List messages: id, time, from, recipients, size.
    Ls {
        /// The spool directory.
        #[arg(long, default_value = "./spool")]
        spool: PathBuf,
    },
    /// Print one stored message, raw.
    Cat {
        /// The spool directory.
        #[arg(long, default_value = "./spool")]
        spool: PathBuf,
        /// The queue id (16 hex digits).
        id: String,
    },
    /// Export every message.
    Export {
        /// The spool directory.
        #[arg(long, default_value = "./spool")]
        spool: PathBuf,
        /// jsonl or mbox to standard output (or --out FILE), maildir into --out DIR.
        #[arg(long, value_enum)]
        format: Format,
        /// Output file (jsonl, mbox) or directory (maildir).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Runs a spool subcommand; `Ok(false)` means problems were found.
pub fn run(cmd: SpoolCommand) -> Result<bool> {
    match cmd {
        SpoolCommand::Verify { spool } => verify(&spool),
        SpoolCommand::Ls { spool } => {
            let mut out = io::stdout().lock();
            each_message(&spool, |_, m, _| {
                let e = &m.envelope;
                let from = if e.mail_from.is_empty() {
                    "<>"
                } else {
                    &e.mail_from
                };
                writeln!(
                    out,
                    "{} {} {} {} {}",
                    e.id,
                    rfc3339(e.received_at_micros),
                    from,
                    e.rcpt_to.len(),
                    e.size
                )?;
                Ok(())
            })?;
            Ok(true)
        }
        SpoolCommand::Cat { spool, id } => {
            let want: QueueId = id.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            let mut found = false;
            each_message(&spool, |dir, m, _| {
                if m.envelope.id == want {
                    let data = read_message(dir, m)?;
                    io::stdout().lock().write_all(&data)?;
                    found = true;
                }
                Ok(())
            })?;
            if !found {
                bail!("no message {want} in {}", spool.display());
            }
            Ok(true)
        }
        SpoolCommand::Export { spool, format, out } => export(&spool, format, out),
    }
}

/// Calls `f(core_dir, message, core)` for every committed message.
fn each_message(
    spool: &Path,
    mut f: impl FnMut(&Path, &Found, usize) -> io::Result<()>,
) -> Result<()> {
    let cores =
        list_cores(spool).with_context(|| format!("cannot read the spool {}", spool.display()))?;
    for (core, dir) in cores {
        walk_core(&dir, |event| match event {
            Event::Message(m) => f(&dir, &m, core),
            _ => Ok(()),
        })
        .with_context(|| format!("cannot read {}", dir.display()))?;
    }
    Ok(())
}

fn verify(spool: &Path) -> Result<bool> {
    let cores =
        list_cores(spool).with_context(|| format!("cannot read the spool {}", spool.display()))?;
    let (mut messages, mut problems) = (0u64, 0u64);
    for (core, dir) in cores {
        walk_core(&dir, |event| {
            match event {
                Event::Message(m) => {
                    messages += 1;
                    if let Err(why) = check_message(&m, &read_message(&dir, &m)?) {
                        problems += 1;
                        println!(
                            "core-{core} segment {} offset {}: {why}",
                            m.segment, m.offset
                        );
                    }
                }
                Event::Problem(p) => {
                    problems += 1;
                    println!("core-{core} {p}");
                }
                Event::SegmentEnd { .. } => {}
            }
            Ok(())
        })?;
    }
    println!("{messages} messages, {problems} problems");
    Ok(problems == 0)
}

fn export(spool: &Path, format: Format, out: Option<PathBuf>) -> Result<bool> {
    if let Format::Maildir = format {
        let Some(dir) = out else {
            bail!("--format maildir needs --out DIR");
        };
        each_message(spool, |d, m, _| {
            write_maildir(&dir, m, &read_message(d, m)?)
        })?;
        return Ok(true);
    }
    let mut sink: Box<dyn Write> = match &out {
        Some(p) => Box::new(io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(io::BufWriter::new(io::stdout().lock())),
    };
    each_message(spool, |d, m, _| {
        let data = read_message(d, m)?;
        match format {
            Format::Jsonl => writeln!(sink, "{}", jsonl_line(m, &data)),
            Format::Mbox => write_mboxrd(&mut sink, m, &data),
            Format::Maildir => unreachable!("handled above"),
        }
    })?;
    sink.flush()?;
    Ok(true)
}
