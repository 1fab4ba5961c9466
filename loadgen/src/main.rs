//! `sluice-loadgen`: an SMTP load generator with honest numbers.
//!
//! This file only parses and checks the command line, probes the target
//! once (so a wrong address is a clear error, not a flood of retries),
//! prints progress, and prints the report. The load itself is in `run`.

mod client;
mod rt;
mod run;
mod stats;
mod tls;
mod workload;

use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;

use client::{Mode, Security};
use run::{Settings, Shared};
use stats::Report;
use workload::parse_size_spec;

/// Load an SMTP server with mail and report messages/s and latency
/// percentiles. Every reply is checked: a message counts as sent only
/// after its 250; everything else is counted by reply code.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Opt {
    /// The server, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:2525")]
    target: String,
    /// Concurrent connections (sessions), spread over the cores.
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// Total messages to send; the run ends when they are done.
    #[arg(long, conflicts_with = "duration")]
    messages: Option<u64>,
    /// How long to measure, like 30s or 2m (after the warm-up).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Time before measuring starts (default 2s with --duration, 0 with
    /// --messages). Messages in it are sent and acknowledged, not counted.
    #[arg(long, value_parser = parse_duration)]
    warmup: Option<Duration>,
    /// Hard limit on the whole run.
    #[arg(long, value_parser = parse_duration, default_value = "10m")]
    max_time: Duration,
    /// Recipients per message.
    #[arg(long, default_value_t = 1)]
    recipients: usize,
    /// Message size: fixed (4k), a range (1k-64k), or the mix `realistic`
    /// (30% 2k, 25% 6k, 20% 16k, 12% 48k, 8% 128k, 4% 512k, 1% 2m).
    #[arg(long, default_value = "1k")]
    size: String,
    /// Send MAIL, RCPT and DATA/BDAT in one write (RFC 2920).
    #[arg(long, value_parser = ["on", "off"], default_value = "on")]
    pipelining: String,
    /// DATA (dot-stuffed) or BDAT (RFC 3030).
    #[arg(long, value_enum, default_value = "data")]
    mode: Mode,
    /// QUIT and reconnect after this many messages.
    #[arg(long)]
    messages_per_connection: Option<u64>,
    /// EHLO name.
    #[arg(long, default_value = "loadgen.invalid")]
    helo: String,
    /// Reverse-path.
    #[arg(long, default_value = "loadgen@loadgen.invalid")]
    from: String,
    /// Domain of the recipients (userN.K@DOMAIN).
    #[arg(long, default_value = "example.test")]
    to_domain: String,
    /// Open loop: this many messages per second in total, with latency
    /// measured from each message's intended start.
    #[arg(long)]
    rate: Option<f64>,
    /// Tag each message with an X-Loadgen-Checksum header (CRC32C of the
    /// body) so the stored copy can be checked.
    #[arg(long)]
    verify: bool,
    /// Cores to run on: a count or a list like 0,2-3 (default: all).
    #[arg(long)]
    cores: Option<String>,
    /// Exit non-zero when errors / (errors + sent) is above this.
    #[arg(long, default_value_t = 0.0)]
    max_error_rate: f64,
    /// Seconds to wait for the server on any read or write.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    io_timeout: Duration,
    /// STARTTLS on every connection (then EHLO again). Without --tls-ca
    /// the server's certificate is not verified (handshake signatures
    /// are): this is a load tool, not a mail client.
    #[arg(long)]
    tls: bool,
    /// TLS from the first byte, as on a submissions port (465); the same
    /// certificate checks as --tls.
    #[arg(long, conflicts_with = "tls")]
    implicit_tls: bool,
    /// PEM file with the certificates to trust for --tls or
    /// --implicit-tls (verifies the chain for the target's IP address).
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,
    /// AUTH PLAIN as USER:PASS on every connection (after TLS), as on a
    /// submission port; a refusal is a connection error.
    #[arg(long, value_name = "USER:PASS")]
    auth: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// No live progress.
    #[arg(long)]
    quiet: bool,
    /// Write the man page (sluice-loadgen.1) and bash, zsh and fish
    /// completions into DIR, and exit (for packaging).
    #[arg(long, value_name = "DIR", hide = true)]
    generate_docs: Option<std::path::PathBuf>,
}

/// `--generate-docs DIR`: the man page and completions, from the clap
/// definition (as `sluice generate` does for the server).
fn generate_docs(dir: &std::path::Path) -> Result<()> {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir)?;
    let mut cmd = Opt::command();
    clap_mangen::Man::new(cmd.clone())
        .section("1")
        .manual("sluice manual")
        .generate_to(dir)?;
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        clap_complete::generate_to(shell, &mut cmd, "sluice-loadgen", dir)?;
    }
    Ok(())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let n: f64 = t[..split]
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s"))?;
    let secs = match &t[split..] {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => return Err(format!("{s:?}: unknown unit {other:?} (use ms, s, m, h)")),
    };
    if !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("{s:?}: out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn cpus(spec: Option<&str>) -> Result<Vec<usize>> {
    let online: Vec<usize> =
        (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
    let Some(spec) = spec else { return Ok(online) };
    if let Ok(n) = spec.parse::<usize>() {
        if n == 0 || n > online.len() {
            bail!("--cores {n}: {} CPUs are available", online.len());
        }
        return Ok(online[..n].to_vec());
    }
    let mut v = Vec::new();
    for part in spec.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (usize, usize) = (
            a.trim()
                .parse()
                .with_context(|| format!("--cores {spec:?}"))?,
            b.trim()
                .parse()
                .with_context(|| format!("--cores {spec:?}"))?,
        );
        if a > b || b >= online.len() {
            bail!("--cores {spec:?}: CPUs go from 0 to {}", online.len() - 1);
        }
        v.extend(a..=b);
    }
    Ok(v)
}

/// Checks that the target answers with an SMTP greeting (with implicit
/// TLS the greeting comes after the handshake: only the connect is
/// checked here, and a server that does not speak TLS fails every
/// connection with the handshake's error).
fn probe(target: SocketAddr, timeout: Duration, implicit_tls: bool) -> Result<()> {
    use std::io::Read;
    let mut s = TcpStream::connect_timeout(&target, timeout)
        .with_context(|| format!("cannot connect to {target}"))?;
    if implicit_tls {
        return Ok(());
    }
    s.set_read_timeout(Some(timeout))?;
    let mut buf = [0u8; 512];
    let n = s
        .read(&mut buf)
        .with_context(|| format!("{target} accepted the connection but sent no greeting"))?;
    let greeting = String::from_utf8_lossy(&buf[..n]);
    if !greeting.starts_with("220") {
        bail!(
            "{target} does not look like an SMTP server ready for mail: it said {:?}",
            greeting.lines().next().unwrap_or("")
        );
    }
    let _ = s.write_all(b"QUIT\r\n");
    Ok(())
}

fn settings(o: &Opt) -> Result<Settings> {
    let target = o
        .target
        .to_socket_addrs()
        .with_context(|| format!("--target {:?}: expected HOST:PORT", o.target))?
        .next()
        .with_context(|| format!("--target {:?}: no address", o.target))?;
    if o.connections == 0 || o.recipients == 0 {
        bail!("--connections and --recipients must be at least 1");
    }
    if o.messages == Some(0) || o.messages_per_connection == Some(0) {
        bail!("--messages and --messages-per-connection must be at least 1");
    }
    if o.messages.is_none() && o.duration.is_none() {
        bail!("say how much to send: --messages N or --duration 30s");
    }
    if let Some(r) = o.rate {
        if !(r > 0.0 && r.is_finite()) {
            bail!("--rate must be a positive number of messages per second");
        }
    }
    if !(0.0..=1.0).contains(&o.max_error_rate) {
        bail!("--max-error-rate is a fraction between 0 and 1");
    }
    let warmup = o.warmup.unwrap_or(if o.duration.is_some() {
        Duration::from_secs(2)
    } else {
        Duration::ZERO
    });
    Ok(Settings {
        target,
        connections: o.connections,
        cpus: cpus(o.cores.as_deref())?,
        messages: o.messages,
        duration: o.duration,
        warmup,
        max_time: o.max_time,
        recipients: o.recipients,
        size: parse_size_spec(&o.size).map_err(|e| anyhow::anyhow!("--size {e}"))?,
        pipelining: o.pipelining == "on",
        mode: o.mode,
        per_connection: o.messages_per_connection,
        helo: o.helo.clone(),
        from: o.from.clone(),
        to_domain: o.to_domain.clone(),
        rate: o.rate,
        verify: o.verify,
        io_timeout: o.io_timeout,
        security: security(o)?,
        auth: o.auth.as_deref().map(plain_response).transpose()?,
    })
}

/// `--tls`, `--implicit-tls` and `--tls-ca`.
fn security(o: &Opt) -> Result<Security> {
    if o.tls_ca.is_some() && !o.tls && !o.implicit_tls {
        bail!("--tls-ca needs --tls or --implicit-tls");
    }
    Ok(match (o.tls, o.implicit_tls) {
        (true, _) => Security::StartTls(tls::client_config(o.tls_ca.as_deref())?),
        (_, true) => Security::Implicit(tls::client_config(o.tls_ca.as_deref())?),
        _ => Security::Plain,
    })
}

/// `USER:PASS` as the base64 response of AUTH PLAIN (RFC 4616).
fn plain_response(userpass: &str) -> Result<String> {
    use base64::Engine as _;
    let Some((user, pass)) = userpass.split_once(':') else {
        bail!("--auth wants USER:PASS");
    };
    if user.is_empty() {
        bail!("--auth wants USER:PASS with a user");
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}")))
}

fn main() -> ExitCode {
    let o = Opt::parse();
    let run = match &o.generate_docs {
        Some(dir) => generate_docs(dir).map(|()| true),
        None => real_main(&o),
    };
    match run {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("sluice-loadgen: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main(o: &Opt) -> Result<bool> {
    let settings = Arc::new(settings(o)?);
    probe(
        settings.target,
        settings.io_timeout.min(Duration::from_secs(10)),
        matches!(settings.security, Security::Implicit(_)),
    )?;
    let shared = Arc::new(Shared::new(&settings));
    let progress = !o.quiet && std::io::stderr().is_terminal();
    let printer = {
        let shared = shared.clone();
        std::thread::spawn(move || {
            let mut last = 0u64;
            let started = Instant::now();
            let mut next_tick = started + Duration::from_secs(1);
            while shared.running.load(Ordering::Relaxed) > 0 {
                std::thread::sleep(Duration::from_millis(100));
                if !progress || Instant::now() < next_tick {
                    continue;
                }
                next_tick += Duration::from_secs(1);
                let sent: u64 = shared
                    .lives
                    .iter()
                    .map(|l| l.sent.load(Ordering::Relaxed))
                    .sum();
                let errors: u64 = shared
                    .lives
                    .iter()
                    .map(|l| l.errors.load(Ordering::Relaxed))
                    .sum();
                let p99 = shared
                    .lives
                    .iter()
                    .map(|l| l.p99_us.load(Ordering::Relaxed))
                    .max()
                    .unwrap_or(0);
                eprint!(
                    "\r{:>5.0}s  sent {sent}  {}/s  errors {errors}  p99 {:.2} ms   ",
                    started.elapsed().as_secs_f64(),
                    sent - last,
                    p99 as f64 / 1000.0
                );
                let _ = std::io::stderr().flush();
                last = sent;
            }
            if progress {
                eprintln!();
            }
        })
    };
    let (stats, window) = run::run(settings.clone(), shared.clone())?;
    let _ = printer.join();
    let s = &*settings;
    let report = Report {
        target: &o.target,
        settings: format!(
            "{} connections, {} cores, {:?} mode, pipelining {}, size {}, {} recipient(s){}{}{}",
            s.connections,
            s.cpus.len(),
            s.mode,
            o.pipelining,
            o.size,
            s.recipients,
            match s.security {
                Security::Plain => "",
                Security::StartTls(_) => ", STARTTLS",
                Security::Implicit(_) => ", implicit TLS",
            },
            if s.auth.is_some() { ", AUTH" } else { "" },
            s.rate
                .map_or(String::new(), |r| format!(", open loop at {r} msg/s"))
        ),
        stats: &stats,
        window,
    };
    // A closed pipe (`| head`) is not worth a panic; the exit code says
    // how the run went.
    let text = if o.json {
        report.json() + "\n"
    } else {
        report.text()
    };
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    if stats.acknowledged == 0 && stats.errors() > 0 {
        bail!(
            "no message was accepted; first error: {}",
            stats.first_error.as_deref().unwrap_or("unknown")
        );
    }
    Ok(report.ok(o.max_error_rate))
}
