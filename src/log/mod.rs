//! Where sluice's log events go and in what form.
//!
//! Why it exists: operators read a mail server's log by queue id and by
//! client, and ship it to tools that want one JSON object per line. Every
//! part of sluice logs through `tracing`; this module sets up the one
//! subscriber: the level (`-q`, `-v`, `-vv`, or `RUST_LOG`), the format
//! (`--log-format text|json`), and a writer that never blocks an
//! executor ([`writer`]): a core's lines collect in its own buffer and go
//! to a background thread in batches, which writes them to stderr, and
//! are dropped (not waited for) if it falls far behind.
//!
//! The events a log reader can rely on carry an `event` field:
//! `session` (one per connection), `stored` (one per accepted message),
//! `refused` (one per refusal, within the core's log budget) and
//! `discarded`. Their fields are listed in `docs/logging.md`.

use tracing::{Event, Subscriber};
use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::fmt;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

mod json;
mod text;
pub mod writer;

pub use json::Json;
pub use text::Text;
pub use writer::{batch_this_thread, flush_this_thread, FLUSH_EVERY};

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human line per event: `sluice: core 0: stored queue_id=… size=…`.
    #[default]
    Text,
    /// One JSON object per line, the event's fields at the top level.
    Json,
}

/// A log format: writes one event as one line (spans are not used).
pub trait LineFormat {
    /// Writes `event`'s line, newline included.
    fn write_line(&self, writer: &mut Writer<'_>, event: &Event<'_>) -> std::fmt::Result;
}

/// A [`LineFormat`] as tracing-subscriber's event format.
pub struct Format<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for Format<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: LineFormat,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        self.0.write_line(&mut writer, event)
    }
}

/// Ends the writer thread when dropped, after writing what is queued.
#[must_use = "log lines queued when this is dropped are written; keep it until exit"]
pub struct Guard(Option<writer::Writer>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(w) = self.0.take() {
            w.stop();
        }
    }
}

/// Gives tracing-subscriber's formatted lines to the [`writer`] sink (it
/// writes each event's line with one `write`).
struct ToSink;

impl std::io::Write for ToSink {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        if let Some(sink) = writer::sink() {
            sink.write_line(line);
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for ToSink {
    type Writer = ToSink;

    fn make_writer(&'a self) -> ToSink {
        ToSink
    }
}

/// The filter for `verbosity` (-1 quiet, 0 normal, 1 `-v`, 2 `-vv`)
/// unless `RUST_LOG` is set: sluice's own events at that level, other
/// crates' at warnings (or at the same level from `-vv` on).
pub fn filter(verbosity: i8, rust_log: Option<&str>) -> Result<EnvFilter, String> {
    if let Some(directives) = rust_log.filter(|d| !d.trim().is_empty()) {
        return EnvFilter::builder()
            .parse(directives)
            .map_err(|e| format!("RUST_LOG={directives:?}: {e}"));
    }
    let directives = match verbosity {
        i8::MIN..=-1 => "warn",
        0 => "warn,sluice=info",
        1 => "warn,sluice=debug",
        _ => "debug,sluice=trace",
    };
    Ok(EnvFilter::new(directives))
}

/// Installs the subscriber for the process: `name` starts every text line
/// (`sluice`, `sluice drain`).
pub fn init(name: &'static str, format: LogFormat, verbosity: i8) -> Result<Guard, String> {
    let filter = filter(verbosity, std::env::var("RUST_LOG").ok().as_deref())?;
    let writer = writer::start(Box::new(std::io::stderr()))
        .map_err(|e| format!("cannot start the log writer thread: {e}"))?;
    let builder = fmt().with_env_filter(filter).with_writer(ToSink);
    let installed = match format {
        LogFormat::Text => {
            let timestamps = std::env::var_os("JOURNAL_STREAM").is_none();
            builder
                .event_format(Format(Text::new(name, timestamps)))
                .try_init()
        }
        LogFormat::Json => builder.event_format(Format(Json)).try_init(),
    };
    installed.map_err(|e| format!("cannot install the logger: {e}"))?;
    Ok(Guard(Some(writer)))
}

/// What `format` writes for the events `log` sends (the formats' tests).
#[cfg(test)]
pub(crate) fn formatted(
    format: impl LineFormat + Send + Sync + 'static,
    log: impl FnOnce(),
) -> String {
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .event_format(Format(format))
        .with_writer(move || sink.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, log);
    let bytes = captured.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The filter's directives, in a stable order.
    fn directives(verbosity: i8, rust_log: Option<&str>) -> Vec<String> {
        let mut d: Vec<String> = filter(verbosity, rust_log)
            .unwrap()
            .to_string()
            .split(',')
            .map(str::to_string)
            .collect();
        d.sort();
        d
    }

    #[test]
    fn verbosity_sets_sluice_level_and_rust_log_wins() {
        assert_eq!(directives(0, None), ["sluice=info", "warn"]);
        assert_eq!(directives(-1, None), ["warn"]);
        assert_eq!(directives(1, None), ["sluice=debug", "warn"]);
        assert_eq!(directives(3, None), ["debug", "sluice=trace"]);
        assert_eq!(
            directives(0, Some("sluice::server=trace")),
            ["sluice::server=trace"]
        );
        assert_eq!(directives(0, Some("  ")), ["sluice=info", "warn"]);
        let e = filter(0, Some("sluice=[bad")).unwrap_err();
        assert!(e.starts_with("RUST_LOG=\"sluice=[bad\""), "{e}");
    }
}
