//! Prometheus text exposition format (version 0.0.4) for every core's
//! metrics.
//!
//! Why it exists: the format is a contract with whatever scrapes us, so it
//! is produced by one pure function with a test. Counters and gauges are
//! one series per core (label `core`; `sum` them for the node). Histograms
//! are summed over the cores here, because per-core buckets are rarely
//! worth their series.

use std::fmt::Write;
use std::sync::Arc;

use super::{CoreMetrics, Counter, Histogram, Refusal, REPLY_CLASSES};

/// Renders every core's metrics.
pub fn render(cores: &[Arc<CoreMetrics>]) -> String {
    let mut s = String::with_capacity(4096);
    type Pick = fn(&CoreMetrics) -> &Counter;
    let per_core: [(&str, &str, &str, Pick); 16] = [
        ("sluice_connections_accepted_total", "counter", "Connections accepted.", |m| &m.accepted),
        ("sluice_connections_rejected_total", "counter", "Connections refused: over --max-connections, or a missing, malformed or untrusted PROXY header.", |m| &m.rejected),
        ("sluice_connections_open", "gauge", "Connections open now.", |m| &m.open),
        ("sluice_clients_untracked_total", "counter", "Untrusted clients admitted without a client-table slot (their window was all in use): not limited.", |m| &m.clients_untracked),
        ("sluice_dnsbl_lookups_total", "counter", "Clients looked up in the DNS lists (not answered from the cache).", |m| &m.dnsbl_lookups),
        ("sluice_dnsbl_failures_total", "counter", "DNS list queries that failed or timed out (counted as not listed).", |m| &m.dnsbl_failures),
        ("sluice_messages_accepted_total", "counter", "Messages made durable and acknowledged with 250.", |m| &m.messages),
        ("sluice_bytes_accepted_total", "counter", "Octets of acknowledged messages, trace header included.", |m| &m.bytes),
        ("sluice_tls_handshakes_total", "counter", "STARTTLS handshakes completed.", |m| &m.tls_handshakes),
        ("sluice_tls_failures_total", "counter", "STARTTLS handshakes that failed.", |m| &m.tls_failures),
        ("sluice_memory_waits_total", "counter", "5 ms pauses of messages that found the core's --memory-budget share used up.", |m| &m.memory_waits),
        ("sluice_spool_batches_total", "counter", "Group-commit batches written to the spool.", |m| &m.batches),
        ("sluice_spool_syncs_total", "counter", "fdatasync calls that made a batch durable.", |m| &m.syncs),
        ("sluice_spool_bytes_total", "counter", "Octets appended to the spool (records and framing).", |m| &m.spooled_bytes),
        ("sluice_spool_failures_total", "counter", "Batches whose write or sync failed (answered 451/452).", |m| &m.spool_failures),
        ("sluice_spool_undrained_bytes", "gauge", "Spool octets sluice drain has not handed on yet (all of them without a drain).", |m| &m.undrained_bytes),
    ];
    for (name, kind, help, pick) in &per_core {
        per_core_family(
            &mut s,
            name,
            kind,
            help,
            cores.iter().map(|m| pick(m).get()),
        );
    }
    header(
        &mut s,
        "sluice_replies_total",
        "counter",
        "Replies sent, by class.",
    );
    for (core, m) in cores.iter().enumerate() {
        for (i, class) in REPLY_CLASSES.iter().enumerate() {
            let _ = writeln!(
                s,
                "sluice_replies_total{{core=\"{core}\",class=\"{}xx\"}} {}",
                *class as char,
                m.replies[i].get()
            );
        }
    }
    header(
        &mut s,
        "sluice_refusals_total",
        "counter",
        "Connections, commands and sessions refused, by reason.",
    );
    for (core, m) in cores.iter().enumerate() {
        for (i, why) in Refusal::ALL.iter().enumerate() {
            let _ = writeln!(
                s,
                "sluice_refusals_total{{core=\"{core}\",reason=\"{}\"}} {}",
                why.label(),
                m.refusals[i].get()
            );
        }
    }
    histogram(
        &mut s,
        "sluice_spool_batch_messages",
        "Messages per group-commit batch (all cores).",
        1.0,
        cores.iter().map(|m| &m.batch_messages),
    );
    histogram(
        &mut s,
        "sluice_spool_sync_seconds",
        "fdatasync latency per batch (all cores).",
        1e-6,
        cores.iter().map(|m| &m.sync_micros),
    );
    s
}

/// A metric family with one sample per core (label `core`), in order.
pub fn per_core_family(
    s: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    values: impl IntoIterator<Item = u64>,
) {
    header(s, name, kind, help);
    for (core, v) in values.into_iter().enumerate() {
        let _ = writeln!(s, "{name}{{core=\"{core}\"}} {v}");
    }
}

fn header(s: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(s, "# HELP {name} {help}");
    let _ = writeln!(s, "# TYPE {name} {kind}");
}

/// Sums histograms with the same bounds and writes them cumulatively;
/// `scale` converts the recorded unit to the exposed one.
fn histogram<'a>(
    s: &mut String,
    name: &str,
    help: &str,
    scale: f64,
    parts: impl Iterator<Item = &'a Histogram>,
) {
    let mut bounds: &[u64] = &[];
    let mut buckets: Vec<u64> = Vec::new();
    let mut sum = 0u64;
    for h in parts {
        let (b, total) = h.snapshot();
        if buckets.is_empty() {
            buckets = vec![0; b.len()];
            bounds = h.bounds();
        }
        for (acc, v) in buckets.iter_mut().zip(b) {
            *acc += v;
        }
        sum += total;
    }
    header(s, name, "histogram", help);
    let mut cumulative = 0;
    for (i, count) in buckets.iter().enumerate() {
        cumulative += count;
        match bounds.get(i) {
            Some(&b) => {
                let _ = writeln!(
                    s,
                    "{name}_bucket{{le=\"{}\"}} {cumulative}",
                    b as f64 * scale
                );
            }
            None => {
                let _ = writeln!(s, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
            }
        }
    }
    let _ = writeln!(s, "{name}_sum {}", sum as f64 * scale);
    let _ = writeln!(s, "{name}_count {cumulative}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the one line that starts with `series `.
    fn value(text: &str, series: &str) -> f64 {
        let hits: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .collect();
        assert_eq!(hits.len(), 1, "{series} in\n{text}");
        hits[0].parse().unwrap()
    }

    #[test]
    fn counters_per_core_and_histograms_summed() {
        let cores: Vec<Arc<CoreMetrics>> = (0..2).map(|_| Arc::default()).collect();
        cores[0].messages.add(3);
        cores[1].messages.add(4);
        cores[1].count_replies(b"250 ok\r\n554 no\r\n");
        cores[0].batch(1, 100, Some(std::time::Duration::from_micros(300)));
        cores[1].batch(5, 500, Some(std::time::Duration::from_micros(2_000)));
        cores[1].batch(600, 9, None);
        let text = render(&cores);
        for (series, want) in [
            ("sluice_messages_accepted_total{core=\"0\"}", 3.0),
            ("sluice_messages_accepted_total{core=\"1\"}", 4.0),
            ("sluice_replies_total{core=\"1\",class=\"5xx\"}", 1.0),
            ("sluice_replies_total{core=\"0\",class=\"2xx\"}", 0.0),
            ("sluice_spool_syncs_total{core=\"1\"}", 1.0),
            ("sluice_spool_batch_messages_bucket{le=\"1\"}", 1.0),
            ("sluice_spool_batch_messages_bucket{le=\"8\"}", 2.0),
            ("sluice_spool_batch_messages_bucket{le=\"+Inf\"}", 3.0),
            ("sluice_spool_batch_messages_count", 3.0),
            ("sluice_spool_batch_messages_sum", 606.0),
            ("sluice_spool_sync_seconds_bucket{le=\"0.00025\"}", 0.0),
            ("sluice_spool_sync_seconds_bucket{le=\"0.0005\"}", 1.0),
            ("sluice_spool_sync_seconds_bucket{le=\"0.0025\"}", 2.0),
            ("sluice_spool_sync_seconds_count", 2.0),
        ] {
            assert_eq!(value(&text, series), want, "{series}");
        }
        // Every sample line belongs to a family with a TYPE line.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{line} has no TYPE"
            );
        }
    }
}
