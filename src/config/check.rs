//! `sluice serve --check-config`, and the sample settings file the
//! package installs.
//!
//! Why it exists: before a restart an operator wants to know what the
//! server will run with, and whether it will start at all, without
//! starting it. The report lists every setting with its effective value
//! and where that came from (a flag, the file, the default); the sample
//! lists every setting with its help text and default, commented out. Both
//! come from the one declaration of the settings, so neither can miss
//! one.

use std::fmt::Write as _;

use anyhow::Result;

use super::layer::{SettingInfo, Source};
use super::{validate, Config, ServeArgs, SETTINGS};

/// A declared default (TOML text) as a value.
fn default_value(info: &SettingInfo) -> Option<toml::Value> {
    let text = info.default?;
    let table: toml::Table = format!("v = {text}").parse().ok()?;
    table.get("v").cloned()
}

/// Where a value came from, for the end of its line.
fn origin(source: &Source) -> String {
    match source {
        Source::Flag(_) => format!("{source}"),
        Source::File { path, .. } => format!("file {}", path.display()),
        Source::Default(_) => "default".into(),
    }
}

/// What a setting without a fixed default is when nobody set it.
fn computed(info: &SettingInfo, config: &Config) -> Option<(toml::Value, &'static str)> {
    match info.field {
        "hostname" => Some((
            toml::Value::String(config.hostname.clone()),
            "default: the machine's host name",
        )),
        "cores" => Some((
            toml::Value::String(
                config
                    .cpus
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            "default: every online CPU",
        )),
        _ => None,
    }
}

/// The effective configuration of `args`, one line per setting, or the
/// error that stops it from starting.
pub fn report(args: &ServeArgs) -> Result<String> {
    let given = args.given()?;
    let shown = given.shown();
    let config = validate(given)?;
    let mut out = String::new();
    let file = args
        .config
        .as_ref()
        .map(|p| format!(" over the file {}", p.display()))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "# sluice serve: the effective configuration (flags{file} over defaults); it is valid"
    );
    for (info, value) in SETTINGS.iter().zip(shown) {
        let key = info.key();
        let line = match value {
            Some((value, source)) => format!("{key} = {value}  # {}", origin(&source)),
            None => match (default_value(info), computed(info, &config)) {
                (Some(value), _) => format!("{key} = {value}  # default"),
                (None, Some((value, why))) => format!("{key} = {value}  # {why}"),
                (None, None) => format!("# {key}: not set"),
            },
        };
        let _ = writeln!(out, "{line}");
    }
    Ok(out)
}

/// Runs `--check-config`: the report on stdout and true, or the error on
/// stderr and false.
pub fn run(args: &ServeArgs) -> bool {
    match report(args) {
        Ok(text) => {
            print!("{text}");
            true
        }
        Err(e) => {
            eprintln!("sluice: the configuration is not valid: {e:#}");
            false
        }
    }
}

/// The sample settings file: every setting's help text and its default,
/// commented out; `active` settings (key, TOML value) are written as
/// given, uncommented.
pub fn sample(active: &[(&str, toml::Value)]) -> String {
    let mut out = String::from(
        "# Settings of `sluice serve` (see `man sluice-serve` and `sluice serve --help`).\n\
         # Each key is a flag's name without the dashes; a flag given on the\n\
         # command line wins over this file. Every setting is listed with its\n\
         # default, commented out. Check a change with\n\
         #     sluice serve --config /etc/sluice/sluice.toml --check-config\n\
         # and apply it with `systemctl reload sluice` (the log names any setting\n\
         # that takes effect only after a restart).\n",
    );
    for info in SETTINGS {
        let key = info.key();
        out.push('\n');
        for line in info.doc.lines() {
            let _ = writeln!(out, "#{line}");
        }
        let line = match (active.iter().find(|(k, _)| *k == key), default_value(info)) {
            (Some((_, value)), _) => format!("{key} = {value}"),
            (None, Some(value)) => format!("#{key} = {value}"),
            (None, None) => format!("#{key} = (not set)"),
        };
        let _ = writeln!(out, "{line}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// The settings that only make sense with another one on, so the
    /// defaults are compared with those on.
    const ENABLERS: &str = "dnsbl = 'bl.test'\n\
        dns-server = '127.0.0.1'\n\
        policy-service = 'inet:127.0.0.1:1'\n\
        rspamd = 'http://127.0.0.1:1'\n\
        hostname = 'mx.test'\n\
        cores = '1'\n";

    fn resolve_file(text: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(&path, text).unwrap();
        ServeArgs {
            config: Some(path),
            ..Default::default()
        }
        .resolve()
        .unwrap_or_else(|e| panic!("{e:#}\n{text}"))
    }

    #[test]
    fn every_declared_default_is_the_default_validation_applies() {
        let text = sample(&[]);
        let uncommented: String = SETTINGS
            .iter()
            .filter_map(|info| {
                let prefix = format!("#{} = ", info.key());
                text.lines().find(|l| l.starts_with(&prefix))
            })
            .filter(|l| !l.ends_with("(not set)"))
            .map(|l| format!("{}\n", &l[1..]))
            .collect();
        let declared = SETTINGS.iter().filter(|s| s.default.is_some()).count();
        assert_eq!(uncommented.lines().count(), declared, "{uncommented}");
        assert!(declared >= 35, "{declared}");
        let with_defaults = resolve_file(&format!("{ENABLERS}{uncommented}"));
        let without = resolve_file(ENABLERS);
        assert_eq!(format!("{with_defaults:?}"), format!("{without:?}"));
    }

    #[test]
    fn the_sample_lists_every_setting_once_and_parses() {
        let text = sample(&[("spool", toml::Value::String("/var/spool/sluice".into()))]);
        for info in SETTINGS {
            let key = info.key();
            let lines = text
                .lines()
                .filter(|l| l.trim_start_matches('#').starts_with(&format!("{key} = ")))
                .count();
            assert_eq!(lines, 1, "{key}");
        }
        let table: toml::Table = text.parse().unwrap();
        assert_eq!(table.len(), 1);
        assert_eq!(table["spool"].as_str(), Some("/var/spool/sluice"));
    }

    #[test]
    fn the_report_names_each_source() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(&path, "max-recipients = 50\nspool = '/tmp/x'\n").unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            spool: Some(PathBuf::from("/tmp/y")),
            hostname: Some("mx.test".into()),
            cores: Some("1".into()),
            ..Default::default()
        };
        let text = report(&args).unwrap();
        let line = |key: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with(&format!("{key} = ")) || l.starts_with(&format!("# {key}:"))
                })
                .unwrap_or_else(|| panic!("no {key} in\n{text}"))
                .to_string()
        };
        assert_eq!(line("spool"), "spool = \"/tmp/y\"  # --spool");
        assert_eq!(
            line("max-recipients"),
            format!("max-recipients = 50  # file {}", path.display())
        );
        assert_eq!(
            line("max-message-size"),
            "max-message-size = \"35M\"  # default"
        );
        assert_eq!(line("idle-timeout"), "idle-timeout = \"5m\"  # default");
        assert_eq!(line("tls-cert"), "# tls-cert: not set");
        assert_eq!(line("hostname"), "hostname = \"mx.test\"  # --hostname");
        assert_eq!(SETTINGS.len() + 1, text.lines().count());

        let bad = ServeArgs {
            max_recipients: Some(0),
            ..args
        };
        let e = report(&bad).unwrap_err().to_string();
        assert_eq!(e, "--max-recipients must be at least 1");
    }
}
