//! The JSON log format: one object per line, the event's fields at the
//! top level beside `timestamp`, `level`, `target` and `message`.
//!
//! Why it exists: tracing-subscriber's JSON formatter builds a serde map
//! per event, which showed in the 1 KiB × 50 A/B with a line per message;
//! this one writes the object straight into the line buffer (strings
//! escaped by serde_json) and allocates nothing once warm.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::Event;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};

use super::LineFormat;

/// The JSON format.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

/// `"key":value` pairs, each with a leading comma.
#[derive(Default)]
struct Pairs {
    out: Vec<u8>,
    /// A Display or Debug value before it is escaped.
    scratch: String,
}

impl Pairs {
    fn key(&mut self, name: &str) {
        self.out.push(b',');
        push_string(&mut self.out, name);
        self.out.push(b':');
    }
}

/// `text` as a JSON string (escaped by serde_json; writing into a Vec
/// cannot fail).
fn push_string(out: &mut Vec<u8>, text: &str) {
    let _ = serde_json::to_writer(&mut *out, text);
}

impl Visit for Pairs {
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field.name());
        let _ = std::io::Write::write_fmt(&mut self.out, format_args!("{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field.name());
        let _ = std::io::Write::write_fmt(&mut self.out, format_args!("{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field.name());
        let _ = std::io::Write::write_fmt(&mut self.out, format_args!("{value}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field.name());
        push_string(&mut self.out, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.scratch.clear();
        let _ = write!(self.scratch, "{value:?}");
        let scratch = std::mem::take(&mut self.scratch);
        self.record_str(field, &scratch);
        self.scratch = scratch;
    }
}

fn utf8(bytes: &[u8]) -> Result<&str, fmt::Error> {
    std::str::from_utf8(bytes).map_err(|_| fmt::Error)
}

thread_local! {
    static PAIRS: std::cell::RefCell<Pairs> = std::cell::RefCell::new(Pairs::default());
}

impl LineFormat for Json {
    fn write_line(&self, writer: &mut Writer<'_>, event: &Event<'_>) -> fmt::Result {
        PAIRS.with(|pairs| {
            let mut pairs = pairs.borrow_mut();
            pairs.out.clear();
            event.record(&mut *pairs);
            let meta = event.metadata();
            writer.write_str("{\"timestamp\":\"")?;
            SystemTime.format_time(writer)?;
            write!(writer, "\",\"level\":\"{}\",\"target\":", meta.level())?;
            let start = pairs.out.len();
            push_string(&mut pairs.out, meta.target());
            let (fields, target) = pairs.out.split_at(start);
            // Only serde_json's output and `{value}` text went in: UTF-8.
            writer.write_str(utf8(target)?)?;
            writeln!(writer, "{}}}", utf8(fields)?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn each_event_is_one_object_with_typed_and_escaped_fields() {
        let text = crate::log::formatted(Json, || {
            tracing::info!(
                core = 1u64,
                size = 1024u64,
                ok = true,
                delta = -2i64,
                "stored"
            );
            tracing::warn!(from = %"a\"b\\c\nd", "odd {}", "sender");
        });
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["level"], "INFO");
        assert_eq!(lines[0]["message"], "stored");
        assert_eq!(lines[0]["core"], 1);
        assert_eq!(lines[0]["size"], 1024);
        assert_eq!(lines[0]["ok"], true);
        assert_eq!(lines[0]["delta"], -2);
        assert!(lines[0]["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(lines[1]["level"], "WARN");
        assert_eq!(lines[1]["message"], "odd sender");
        assert_eq!(lines[1]["from"], "a\"b\\c\nd");
        assert_eq!(lines[1]["target"], "sluice::log::json::tests");
    }
}
