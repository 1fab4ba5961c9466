//! The text log format: the lines sluice has always written, with the
//! event's fields after the sentence.
//!
//! Why it exists: tracing-subscriber's default lines put the module path
//! and level first; an operator grepping for `sluice: core 0:` or
//! `refused (` should keep finding them. A line is
//! `[TIME ]NAME: [core N: ][WARNING: |ERROR: ]MESSAGE[ key=value…]`
//! (fields with an empty value, and `event`, which the sentence names,
//! are left out); the time is left out under systemd (journald stamps
//! each line itself).

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Level};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};

use super::LineFormat;

/// The text format.
#[derive(Debug, Clone)]
pub struct Text {
    name: &'static str,
    timestamps: bool,
}

impl Text {
    /// Lines start with `name`; `timestamps` puts the time first.
    pub fn new(name: &'static str, timestamps: bool) -> Text {
        Text { name, timestamps }
    }
}

/// The parts of an event, in the order the line shows them.
#[derive(Default)]
struct Parts {
    core: Option<u64>,
    message: String,
    fields: String,
}

impl Parts {
    fn field(&mut self, name: &str) -> &mut String {
        self.fields.push(' ');
        self.fields.push_str(name);
        self.fields.push('=');
        &mut self.fields
    }
}

impl Visit for Parts {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "core" {
            self.core = Some(value);
        } else {
            let _ = write!(self.field(field.name()), "{value}");
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        match u64::try_from(value) {
            Ok(v) => self.record_u64(field, v),
            Err(_) => {
                let _ = write!(self.field(field.name()), "{value}");
            }
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => return self.message.push_str(value),
            // The sentence names the event; an empty value says nothing.
            "event" => return,
            _ if value.is_empty() => return,
            _ => {}
        }
        let out = self.field(field.name());
        // Quoted when a reader could not otherwise tell where it ends.
        if value.contains([' ', '"', '=']) {
            let _ = write!(out, "{value:?}");
        } else {
            out.push_str(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
            return;
        }
        // Display values (`%x`) come here too: written in place, then
        // dropped if empty or quoted if needed, as `record_str` does.
        let start = self.fields.len();
        let at = self.field(field.name()).len();
        let _ = write!(self.fields, "{value:?}");
        if self.fields.len() == at {
            self.fields.truncate(start);
        } else if self.fields[at..].contains([' ', '"', '=']) {
            let value = self.fields.split_off(at);
            let _ = write!(self.fields, "{value:?}");
        }
    }
}

thread_local! {
    /// One event's parts, reused: formatting allocates nothing once warm.
    static PARTS: std::cell::RefCell<Parts> = std::cell::RefCell::new(Parts::default());
}

impl LineFormat for Text {
    fn write_line(&self, writer: &mut Writer<'_>, event: &Event<'_>) -> fmt::Result {
        PARTS.with(|parts| {
            let mut parts = parts.borrow_mut();
            parts.core = None;
            parts.message.clear();
            parts.fields.clear();
            event.record(&mut *parts);
            self.write_parts(writer, event, &parts)
        })
    }
}

impl Text {
    fn write_parts(
        &self,
        writer: &mut Writer<'_>,
        event: &Event<'_>,
        parts: &Parts,
    ) -> fmt::Result {
        if self.timestamps {
            SystemTime.format_time(writer)?;
            writer.write_char(' ')?;
        }
        write!(writer, "{}: ", self.name)?;
        if let Some(core) = parts.core {
            write!(writer, "core {core}: ")?;
        }
        match *event.metadata().level() {
            Level::ERROR => writer.write_str("ERROR: ")?,
            Level::WARN => writer.write_str("WARNING: ")?,
            _ => {}
        }
        writeln!(writer, "{}{}", parts.message, parts.fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn lines(log: impl FnOnce()) -> String {
        crate::log::formatted(Text::new("sluice", false), log)
    }

    #[test]
    fn core_and_level_lead_fields_follow_and_odd_values_are_quoted() {
        let out = lines(|| {
            tracing::info!(core = 1u64, queue_id = "0001abc", size = 1024u64, "stored");
            tracing::warn!("--durability none: benchmarks only");
            tracing::error!(core = 0u64, why = %"disk full now", "spool writer stopped");
            tracing::info!(event = "session", helo = "", delta = -3i64, via = %"", "session");
            tracing::info!(outcome = %"closed: no header", peer = %"127.0.0.1:25", "session");
        });
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            [
                "sluice: core 1: stored queue_id=0001abc size=1024",
                "sluice: WARNING: --durability none: benchmarks only",
                "sluice: core 0: ERROR: spool writer stopped why=\"disk full now\"",
                "sluice: session delta=-3",
                "sluice: session outcome=\"closed: no header\" peer=127.0.0.1:25",
            ]
        );
    }
}
