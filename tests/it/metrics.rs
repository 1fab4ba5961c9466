//! `--metrics`: Prometheus counters that follow what clients did, and
//! `/healthz`.

use std::time::{Duration, Instant};

use crate::support::{http, sample, start_error, Server};

#[test]
fn metrics_count_connections_messages_replies_and_syncs() {
    let server = Server::start(&["--metrics", "127.0.0.1:0", "--cores", "2"]);
    let addr = server.metrics_addr();
    // Both cores stamp a heartbeat shortly after start-up.
    let until = Instant::now() + Duration::from_secs(10);
    let (code, body) = loop {
        let (code, body) = http(addr, "GET", "/healthz");
        if code == 200 || Instant::now() > until {
            break (code, body);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!((code, body.as_str()), (200, "core 0: ok\ncore 1: ok\n"));

    let mut sent_bytes = 0;
    for i in 0..3 {
        let mut c = server.connect();
        let body = format!("Subject: {i}\r\n\r\nhello\r\n");
        let reply = c.send_mail("a@x.test", "b@y.test", body.as_bytes());
        assert!(reply.starts_with("250 "), "{reply}");
        assert_eq!(c.code("RCPT TO:<nobody>"), 501);
        assert_eq!(c.code("QUIT"), 221);
        sent_bytes += body.len();
    }
    // The last session is counted closed just after its 221.
    let until = Instant::now() + Duration::from_secs(10);
    let page = loop {
        let (code, page) = http(addr, "GET", "/metrics");
        assert_eq!(code, 200);
        let open = sample(&page, "sluice_connections_open{core=\"0\"}")
            + sample(&page, "sluice_connections_open{core=\"1\"}");
        if open == 0.0 || Instant::now() > until {
            break page;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let total = |name: &str| {
        sample(&page, &format!("{name}{{core=\"0\"}}"))
            + sample(&page, &format!("{name}{{core=\"1\"}}"))
    };
    assert_eq!(total("sluice_connections_accepted_total"), 3.0);
    assert_eq!(total("sluice_connections_open"), 0.0);
    assert_eq!(total("sluice_messages_accepted_total"), 3.0);
    // Stored bytes include the Received header sluice adds.
    assert!(total("sluice_bytes_accepted_total") > sent_bytes as f64);
    // Per session: greeting, EHLO, MAIL, RCPT, 250 queued, QUIT = 2xx;
    // DATA = 3xx; the bad RCPT = 5xx.
    let class = |c: &str| {
        sample(
            &page,
            &format!("sluice_replies_total{{core=\"0\",class=\"{c}\"}}"),
        ) + sample(
            &page,
            &format!("sluice_replies_total{{core=\"1\",class=\"{c}\"}}"),
        )
    };
    assert_eq!(class("2xx"), 18.0);
    assert_eq!(class("3xx"), 3.0);
    assert_eq!(class("4xx"), 0.0);
    assert_eq!(class("5xx"), 3.0);
    let syncs = total("sluice_spool_syncs_total");
    assert!((1.0..=3.0).contains(&syncs), "{syncs} syncs for 3 messages");
    assert_eq!(sample(&page, "sluice_spool_sync_seconds_count"), syncs);
    assert_eq!(sample(&page, "sluice_spool_batch_messages_sum"), 3.0);

    assert_eq!(http(addr, "GET", "/nothing").0, 404);
    assert_eq!(http(addr, "POST", "/metrics").0, 405);
    assert_eq!(http(addr, "HEAD", "/metrics").0, 200);
}

#[test]
fn a_metrics_address_that_cannot_be_bound_stops_start_up() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let err = start_error(&["--listen", "127.0.0.1:0", "--metrics", &port]);
    assert!(
        err.contains(&format!("--metrics {port}: cannot serve metrics there")),
        "{err}"
    );
}
