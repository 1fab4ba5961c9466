//! The files a package ships beside the binary, generated from the
//! command-line definition: man pages (`clap_mangen`), shell completions
//! (`clap_complete`) and the sample settings file.
//!
//! Why it exists: written by hand, each of these would fall behind the
//! flags within a release. `sluice generate` (hidden) writes them at
//! package build time; `packaging/build-deb.sh` calls it.

use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::{Cli, GenerateCommand};

/// Runs `sluice generate …`.
pub fn run(what: GenerateCommand) -> Result<()> {
    match what {
        GenerateCommand::Man { dir } => man_pages(&dir, Cli::command(), "8"),
        GenerateCommand::Completions { dir } => completions(&dir, Cli::command()),
        GenerateCommand::Config { spool } => {
            let active: Vec<(&str, toml::Value)> = spool
                .map(|s| ("spool", toml::Value::String(s.display().to_string())))
                .into_iter()
                .collect();
            print!("{}", crate::config::check::sample(&active));
            Ok(())
        }
    }
}

/// One man page of `section` per visible command of `cmd`, named like
/// `sluice-serve.8`, into `dir`.
pub fn man_pages(dir: &Path, cmd: clap::Command, section: &str) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    write_pages(dir, cmd, section)
}

fn write_pages(dir: &Path, cmd: clap::Command, section: &str) -> Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(dir, sub.clone(), section)?;
    }
    let page = clap_mangen::Man::new(cmd)
        .section(section)
        .manual("sluice manual")
        .source(concat!("sluice ", env!("CARGO_PKG_VERSION")));
    let path = page
        .generate_to(dir)
        .with_context(|| format!("cannot write a man page into {}", dir.display()))?;
    println!("{}", path.display());
    Ok(())
}

/// Completion scripts for bash, zsh and fish into `dir`.
pub fn completions(dir: &Path, mut cmd: clap::Command) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = cmd.get_name().to_string();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path = clap_complete::generate_to(shell, &mut cmd, &name, dir)
            .with_context(|| format!("cannot write {shell} completions into {}", dir.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}
