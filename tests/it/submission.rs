//! Submission (RFC 6409, RFC 8314) with SMTP AUTH (RFC 4954), driven by
//! real clients: swaks (PLAIN over STARTTLS, LOGIN over implicit TLS),
//! Python's smtplib (`SMTP_SSL` and `login`), msmtp (the sendmail of an
//! application host), our own client for the rules (no AUTH before TLS,
//! 530 before AUTH, 535 counted toward the error limit), and a real
//! Dovecot behind `--auth-dovecot`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;

use crate::support::*;
use crate::tls::Material;

/// `openssl passwd -6 -salt saltsalt secret`.
const ALICE_SECRET: &str = "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";

/// A server with a port-25 listener, a submission one and an
/// implicit-TLS one, and the users file: alice (SHA-512 crypt, "secret")
/// and bob (bcrypt, "hunter2").
struct Submission {
    server: Server,
    tls: Material,
    submission: SocketAddr,
    submissions: SocketAddr,
    _dir: tempfile::TempDir,
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn users_file(dir: &Path) -> PathBuf {
    let bob = bcrypt::hash("hunter2", 4).unwrap();
    let path = dir.join("users");
    std::fs::write(
        &path,
        format!("# the fleet\nalice:{ALICE_SECRET}\nbob:{bob}\n"),
    )
    .unwrap();
    path
}

impl Submission {
    /// With the users file, or `auth` flags instead.
    fn start(auth: Option<Vec<String>>, extra: &[&str]) -> Submission {
        let dir = tempfile::tempdir().unwrap();
        let tls = Material::new(dir.path(), "mx");
        let (submission, submissions) = (loopback(free_port()), loopback(free_port()));
        let auth = auth.unwrap_or_else(|| {
            vec![
                "--auth-users".into(),
                users_file(dir.path()).display().to_string(),
            ]
        });
        let mut args: Vec<String> = tls.flags();
        args.extend(auth);
        args.extend([
            "--submission".into(),
            submission.to_string(),
            "--submissions".into(),
            submissions.to_string(),
        ]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = Server::start(&args);
        wait_listening(submission);
        wait_listening(submissions);
        Submission {
            server,
            tls,
            submission,
            submissions,
            _dir: dir,
        }
    }

    /// A client on the submission port after STARTTLS and EHLO.
    fn over_tls(&self) -> Client<TlsStream> {
        let mut c = Client::connect(self.submission);
        c.cmd("EHLO app.test");
        let mut c = c.starttls(self.tls.client());
        let ehlo = c.cmd("EHLO app.test");
        assert!(ehlo.contains("250 AUTH PLAIN LOGIN\r\n"), "{ehlo}");
        c
    }
}

fn plain(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"))
}

/// The stored messages as (auth, Received header, recipients).
fn stored(spool: &Path) -> Vec<(serde_json::Value, String, Vec<String>)> {
    exported(spool)
        .into_values()
        .map(|(env, data)| {
            let text = String::from_utf8_lossy(&data).into_owned();
            let received = text.split("\r\n\t;").next().unwrap_or("").to_string();
            let rcpt = rcpt_to(&env).iter().map(|s| s.to_string()).collect();
            (env["auth"].clone(), received, rcpt)
        })
        .collect()
}

fn swaks(args: &[&str]) -> Option<String> {
    let bin = peer_program("swaks")?;
    let out = Command::new(bin)
        .args(args)
        .args(["--timeout", "20", "--from", "app@fleet.test"])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "swaks {args:?}:\n{text}");
    Some(text)
}

#[test]
fn swaks_submits_with_plain_over_starttls_and_login_over_implicit_tls() {
    let s = Submission::start(None, &[]);
    let port587 = s.submission.to_string();
    let port465 = s.submissions.to_string();
    let Some(plain) = swaks(&[
        "--server",
        &port587,
        "--tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        "alice",
        "--auth-password",
        "secret",
        "--to",
        "someone@elsewhere.example",
    ]) else {
        return;
    };
    assert!(
        plain.contains("235 2.7.0 Authentication successful"),
        "{plain}"
    );
    let login = swaks(&[
        "--server",
        &port465,
        "--tlsc",
        "--auth",
        "LOGIN",
        "--auth-user",
        "bob",
        "--auth-password",
        "hunter2",
        "--to",
        "other@elsewhere.example",
    ])
    .unwrap();
    assert!(login.contains("334 VXNlcm5hbWU6"), "{login}");
    assert!(login.contains("250 2.0.0 Ok: queued as"), "{login}");
    // Port 25 as before: no AUTH, and the envelope says so.
    let mut c = s.server.connect();
    let ehlo = c.cmd("EHLO mx.peer.test");
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    assert_eq!(
        code_of(&c.send_mail("x@peer.test", "local@example.com", b"hi\r\n")),
        250
    );
    let mut got = stored(&s.server.spool);
    got.sort_by_key(|(auth, _, _)| auth.to_string());
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].0, serde_json::json!("alice"));
    assert_eq!(got[0].2, ["someone@elsewhere.example"]);
    assert!(got[0].1.contains("with ESMTPSA (TLS"), "{}", got[0].1);
    assert_eq!(got[1].0, serde_json::json!("bob"));
    assert!(got[1].1.contains("with ESMTPSA (TLS"), "{}", got[1].1);
    assert_eq!(got[2].0, serde_json::Value::Null);
    assert!(got[2].1.contains("with ESMTP id"), "{}", got[2].1);
}

#[test]
fn auth_comes_only_after_tls_and_mail_only_after_auth() {
    let s = Submission::start(None, &[]);
    let mut c = Client::connect(s.submission);
    let ehlo = c.cmd("EHLO app.test");
    assert!(
        ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain("alice", "secret"))),
        "503 5.5.1 Error: authentication not enabled\r\n"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<a@fleet.test>"),
        "530 5.7.0 Must issue a STARTTLS command first\r\n"
    );
    let mut c = c.starttls(s.tls.client());
    c.cmd("EHLO app.test");
    assert_eq!(
        c.cmd("MAIL FROM:<a@fleet.test>"),
        "530 5.7.0 Authentication required\r\n"
    );
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain("alice", "secret"))),
        "235 2.7.0 Authentication successful\r\n"
    );
    assert_eq!(
        code_of(&c.cmd("MAIL FROM:<a@fleet.test> AUTH=a@fleet.test")),
        250
    );
    assert_eq!(code_of(&c.cmd("RCPT TO:<anyone@anywhere.example>")), 250);
    assert_eq!(code_of(&c.cmd("QUIT")), 221);
    let session = s
        .server
        .wait_for_log(" listener=submission helo=app.test tls=");
    assert!(
        session.contains(" auth=alice ") && session.ends_with(" outcome=quit"),
        "{session}"
    );
    // The 530s were refusals of MAIL.
    s.server
        .wait_for_log("refused (mail): 127.0.0.1: 530 5.7.0 Must issue a STARTTLS command first");
}

#[test]
fn wrong_passwords_get_535_and_end_at_the_hard_error_limit() {
    let s = Submission::start(None, &["--hard-error-limit", "3"]);
    let mut c = s.over_tls();
    for _ in 0..2 {
        let r = c.cmd(&format!("AUTH PLAIN {}", plain("alice", "guess")));
        assert_eq!(r, "535 5.7.8 Authentication credentials invalid\r\n");
    }
    // An unknown user is answered the same way.
    let r = c.cmd(&format!("AUTH PLAIN {}", plain("mallory", "secret")));
    assert!(r.starts_with("535 5.7.8"), "{r}");
    assert_eq!(
        c.reply(),
        "421 4.7.0 Too many errors, closing connection\r\n"
    );
    assert!(c.closed());
    s.server
        .wait_for_log("refused (auth_failed): 127.0.0.1: AUTH failed for \"mallory\"");
}

#[test]
fn python_smtplib_logs_in_over_implicit_tls() {
    let script = r#"
import smtplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
with smtplib.SMTP_SSL("127.0.0.1", int(sys.argv[1]), context=ctx, timeout=20) as s:
    s.login("bob", "hunter2")
    s.sendmail("app@fleet.test", ["ops@elsewhere.example"], b"Subject: smtplib\r\n\r\nsent by smtplib\r\n")
    # smtplib takes the 503 of a second AUTH for "already authenticated".
    print("second login:", s.login("bob", "wrong"))
"#;
    let s = Submission::start(None, &[]);
    let out = Command::new("python3")
        .args(["-c", script, &s.submissions.port().to_string()])
        .arg(&s.tls.cert)
        .output()
        .expect("python3 runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("second login: (503"),
        "once authenticated, AUTH is 503: {text}"
    );
    let got = stored(&s.server.spool);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, serde_json::json!("bob"));
    assert_eq!(got[0].2, ["ops@elsewhere.example"]);
}

#[test]
fn msmtp_submits_as_an_application_host_does() {
    let Some(msmtp) = peer_program("msmtp") else {
        return;
    };
    let s = Submission::start(None, &[]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("msmtprc");
    std::fs::write(
        &config,
        format!(
            "account fleet\nhost 127.0.0.1\nport {}\nfrom app@fleet.test\ntls on\ntls_starttls on\n\
             tls_trust_file {}\nauth on\nuser alice\npassword secret\nlogfile {}\naccount default : fleet\n",
            s.submission.port(),
            s.tls.cert.display(),
            dir.path().join("log").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut child = Command::new(msmtp)
        .arg("-C")
        .arg(&config)
        .arg("-t")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"To: alerts@elsewhere.example\nSubject: cron\n\ndisk 91% full\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = stored(&s.server.spool);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, serde_json::json!("alice"));
    assert_eq!(got[0].2, ["alerts@elsewhere.example"]);
}

/// A private Dovecot with only its auth service: a passwd-file with carol
/// ("secret"), a Unix socket for clients.
struct Dovecot {
    /// Dovecot's master and its auth processes, stopped together.
    _process: ProcessGroup,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Dovecot {
    fn start() -> Option<Dovecot> {
        let bin = peer_program("dovecot")?;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let run = d.join("run");
        std::fs::create_dir_all(&run).unwrap();
        let users = d.join("users");
        std::fs::write(&users, format!("carol:{{SHA512-CRYPT}}{ALICE_SECRET}\n")).unwrap();
        let conf = d.join("dovecot.conf");
        std::fs::write(
            &conf,
            format!(
                "base_dir = {run}\nstate_dir = {d}\nlog_path = {d}/log\nprotocols = none\nssl = no\n\
                 disable_plaintext_auth = no\nauth_mechanisms = plain login\nauth_failure_delay = 0\n\
                 passdb {{\n  driver = passwd-file\n  args = {users}\n}}\n\
                 userdb {{\n  driver = static\n  args = uid=nobody gid=nogroup home={d}\n}}\n\
                 service auth {{\n  unix_listener auth-client {{\n    mode = 0666\n  }}\n}}\n\
                 service anvil {{\n  chroot =\n}}\n",
                run = run.display(),
                d = d.display(),
                users = users.display()
            ),
        )
        .unwrap();
        use std::os::unix::process::CommandExt;
        let child = Command::new(bin)
            .arg("-F")
            .arg("-c")
            .arg(&conf)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dovecot");
        let socket = run.join("auth-client");
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(
                std::time::Instant::now() < until,
                "dovecot did not start: {}",
                std::fs::read_to_string(d.join("log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Some(Dovecot {
            _process: ProcessGroup {
                child,
                signal: libc::SIGTERM,
            },
            socket,
            _dir: dir,
        })
    }
}

#[test]
fn dovecot_checks_the_passwords_and_its_absence_is_a_454() {
    let Some(dovecot) = Dovecot::start() else {
        return;
    };
    let target = format!("unix:{}", dovecot.socket.display());
    let s = Submission::start(Some(vec!["--auth-dovecot".into(), target]), &[]);
    let mut c = s.over_tls();
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain("carol", "wrong"))),
        "535 5.7.8 Authentication credentials invalid\r\n"
    );
    // LOGIN is collected by sluice and handed to Dovecot as PLAIN.
    assert_eq!(c.cmd("AUTH LOGIN"), "334 VXNlcm5hbWU6\r\n");
    assert_eq!(
        c.cmd(&base64::engine::general_purpose::STANDARD.encode("carol")),
        "334 UGFzc3dvcmQ6\r\n"
    );
    assert_eq!(
        c.cmd(&base64::engine::general_purpose::STANDARD.encode("secret")),
        "235 2.7.0 Authentication successful\r\n"
    );
    assert_eq!(
        code_of(&c.send_mail(
            "carol@fleet.test",
            "x@elsewhere.example",
            b"via dovecot\r\n"
        )),
        250
    );
    drop(dovecot);
    let mut c = s.over_tls();
    let r = c.cmd(&format!("AUTH PLAIN {}", plain("carol", "secret")));
    assert_eq!(
        r,
        "454 4.7.0 Temporary authentication failure, try again later\r\n"
    );
    let got = stored(&s.server.spool);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, serde_json::json!("carol"));
}

#[test]
fn bad_submission_settings_stop_start_up_with_a_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let tls = Material::new(dir.path(), "mx");
    let users = users_file(dir.path());
    let users = users.to_str().unwrap();
    let flags = tls.flags();
    let tls_flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let with_tls = |extra: &[&str]| {
        let mut a = tls_flags.clone();
        a.extend_from_slice(extra);
        start_error(&a)
    };
    let e = with_tls(&["--submission", "127.0.0.1:0"]);
    assert!(
        e.contains("--submission needs --auth-users FILE or --auth-dovecot"),
        "{e}"
    );
    let e = start_error(&["--submission", "127.0.0.1:0", "--auth-users", users]);
    assert!(
        e.contains("needs --tls-cert and --tls-key (AUTH is offered only over TLS)"),
        "{e}"
    );
    let e = with_tls(&["--auth-users", users]);
    assert!(
        e.contains("--auth-users only makes sense with --submission or --submissions"),
        "{e}"
    );
    let bad = dir.path().join("bad");
    std::fs::write(&bad, "alice:plaintext\n").unwrap();
    let e = with_tls(&[
        "--submissions",
        "127.0.0.1:0",
        "--auth-users",
        bad.to_str().unwrap(),
    ]);
    assert!(
        e.contains("line 1: the hash of \"alice\" is not $6$"),
        "{e}"
    );
    let e = with_tls(&["--submission", "127.0.0.1:0", "--auth-dovecot", "tcp:x"]);
    assert!(e.contains("expected inet:HOST:PORT or unix:PATH"), "{e}");
}

/// The services a private Postfix needs to take mail on `SMTPD` and relay
/// it (no chroot: the queue lives in a temporary directory).
const POSTFIX_MASTER_CF: &str = "\
SMTPD inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
tlsmgr unix - - n 1000? 1 tlsmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
local unix - n n - - local
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
";

/// A private Postfix relaying everything to `relayhost` with SMTP AUTH
/// (`smtp_sasl_auth_enable`) over TLS, as a Postfix in front of sluice's
/// submission port would; it takes mail on a loopback port.
struct Postfix {
    config: PathBuf,
    smtpd: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("postfix")
            .arg("-c")
            .arg(&self.config)
            .arg("stop")
            .output();
    }
}

impl Postfix {
    fn start(relayhost: SocketAddr, user: &str, password: &str) -> Option<Postfix> {
        let bin = peer_program("postfix")?;
        // SAFETY: getuid(2) has no preconditions.
        if unsafe { libc::getuid() } != 0 {
            eprintln!("SKIPPED: Postfix's master must start as root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let config = d.join("etc");
        std::fs::create_dir_all(&config).unwrap();
        std::fs::create_dir_all(d.join("queue")).unwrap();
        std::fs::create_dir_all(d.join("data")).unwrap();
        let chown = Command::new("chown")
            .arg("postfix")
            .arg(d.join("data"))
            .status()
            .unwrap();
        assert!(chown.success());
        let smtpd = loopback(free_port());
        std::fs::write(
            config.join("main.cf"),
            format!(
                "compatibility_level = 3.6\nqueue_directory = {d}/queue\ndata_directory = {d}/data\n\
                 mail_owner = postfix\nsetgid_group = postdrop\nmyhostname = relay.test\n\
                 mydestination =\ninet_interfaces = loopback-only\ninet_protocols = ipv4\n\
                 mynetworks = 127.0.0.0/8\nsmtpd_relay_restrictions = permit_mynetworks, reject\n\
                 relayhost = [{ip}]:{port}\nsmtp_sasl_auth_enable = yes\n\
                 smtp_sasl_password_maps = static:{user}:{password}\n\
                 smtp_sasl_security_options = noanonymous\n\
                 smtp_sasl_tls_security_options = noanonymous\nsmtp_tls_security_level = encrypt\n\
                 smtp_dns_support_level = disabled\nmaillog_file_prefixes = {d}\n\
                 maillog_file = {d}/maillog\nalias_maps =\nalias_database =\n",
                d = d.display(),
                ip = relayhost.ip(),
                port = relayhost.port(),
            ),
        )
        .unwrap();
        std::fs::write(
            config.join("master.cf"),
            POSTFIX_MASTER_CF.replace("SMTPD", &smtpd.to_string()),
        )
        .unwrap();
        let out = Command::new(bin)
            .arg("-c")
            .arg(&config)
            .arg("start")
            .output()
            .unwrap();
        let p = Postfix { config, smtpd, dir };
        assert!(out.status.success(), "postfix start: {}", p.log());
        wait_listening(smtpd);
        Some(p)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }
}

#[test]
fn postfix_relays_through_submission_with_sasl_and_its_dsn_requests_are_kept() {
    let s = Submission::start(None, &["--dsn"]);
    let Some(postfix) = Postfix::start(s.submission, "alice", "secret") else {
        return;
    };
    let mut c = Client::connect(postfix.smtpd);
    assert!(c.cmd("EHLO app.test").contains("250-DSN"));
    assert_eq!(
        code_of(&c.cmd("MAIL FROM:<app@fleet.test> RET=HDRS ENVID=QQ+2B314159")),
        250
    );
    assert_eq!(
        code_of(&c.cmd("RCPT TO:<ops@elsewhere.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Ops+40elsewhere.example")),
        250
    );
    assert_eq!(
        code_of(&c.cmd("RCPT TO:<quiet@elsewhere.example> NOTIFY=NEVER")),
        250
    );
    assert_eq!(code_of(&c.cmd("RCPT TO:<plain@elsewhere.example>")), 250);
    assert_eq!(code_of(&c.cmd("DATA")), 354);
    assert_eq!(
        code_of(&c.cmd("Subject: relayed\r\n\r\nthrough postfix\r\n.")),
        250
    );
    c.cmd("QUIT");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let got = loop {
        let got = exported(&s.server.spool);
        if !got.is_empty() {
            break got;
        }
        assert!(
            std::time::Instant::now() < until,
            "Postfix did not relay:\n{}",
            postfix.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(got.len(), 1, "one message, three recipients");
    let (env, data) = got.into_values().next().unwrap();
    assert_eq!(env["auth"], serde_json::json!("alice"));
    // Postfix passes the requests on (in its own recipient order), with
    // an ORCPT for the recipient that gave none.
    assert_eq!(env["dsn"]["ret"], serde_json::json!("HDRS"));
    assert_eq!(env["dsn"]["envid"], serde_json::json!("QQ+314159"));
    let mut per_rcpt: Vec<(String, serde_json::Value)> = rcpt_to(&env)
        .iter()
        .zip(
            env["dsn"]["rcpt"]
                .as_array()
                .expect("one entry per recipient"),
        )
        .map(|(r, d)| (r.to_string(), d.clone()))
        .collect();
    per_rcpt.sort_by(|a, b| a.0.cmp(&b.0));
    let entry = |notify: serde_json::Value, orcpt: &str| serde_json::json!({"notify": notify, "orcpt": orcpt});
    assert_eq!(
        per_rcpt,
        [
            (
                "ops@elsewhere.example".to_string(),
                entry("SUCCESS,FAILURE".into(), "rfc822;Ops@elsewhere.example")
            ),
            (
                "plain@elsewhere.example".to_string(),
                entry(serde_json::Value::Null, "rfc822;plain@elsewhere.example")
            ),
            (
                "quiet@elsewhere.example".to_string(),
                entry("NEVER".into(), "rfc822;quiet@elsewhere.example")
            ),
        ],
        "{}",
        postfix.log()
    );
    let text = String::from_utf8_lossy(&data);
    assert!(text.contains("by relay.test (Postfix)"), "{text}");
    assert!(text.contains("with ESMTPSA (TLS"), "{text}");
}

#[test]
fn the_drain_carries_the_user_and_the_dsn_requests_as_nats_headers() {
    let Some(cluster) = crate::nats::Cluster::single() else {
        return;
    };
    let s = Submission::start(None, &["--dsn"]);
    let mut c = s.over_tls();
    assert_eq!(
        code_of(&c.cmd(&format!("AUTH PLAIN {}", plain("alice", "secret")))),
        235
    );
    assert_eq!(
        code_of(&c.cmd("MAIL FROM:<app@fleet.test> RET=FULL ENVID=run+3D7")),
        250
    );
    assert_eq!(code_of(&c.cmd("RCPT TO:<a@elsewhere.example>")), 250);
    assert_eq!(
        code_of(
            &c.cmd("RCPT TO:<b@elsewhere.example> NOTIFY=DELAY ORCPT=rfc822;b+40elsewhere.example")
        ),
        250
    );
    assert_eq!(code_of(&c.cmd("DATA")), 354);
    let id = queued_id(&c.cmd("Subject: drained\r\n\r\nhello\r\n."));
    let urls = cluster.urls();
    let dir = tempfile::tempdir().unwrap();
    let _drain = crate::nats::Drain::start(&s.server.spool, &urls, &[], dir.path().join("d.log"));
    let messages = crate::nats::eventually(std::time::Duration::from_secs(60), "1 message", || {
        crate::nats::read_stream(&urls, "MAIL").filter(|m| !m.is_empty())
    });
    let m = &messages[0];
    assert_eq!(m.header("Sluice-Queue-Id"), id);
    assert_eq!(m.header("Sluice-Auth"), "alice");
    assert_eq!(m.header("Sluice-Dsn-Ret"), "FULL");
    assert_eq!(m.header("Sluice-Dsn-Envid"), "run=7");
    assert_eq!(
        m.header("Sluice-Dsn-Rcpt"),
        "1 NOTIFY=DELAY ORCPT=rfc822;b@elsewhere.example"
    );
}

/// Runs the load generator against `target` with `args`; its exit code,
/// JSON report (when it printed one) and stderr.
fn loadgen(target: SocketAddr, args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let out = crate::loadgen::run_against(target, args);
    let report = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (
        out.status.code(),
        report,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn loadgen_authenticates_every_connection_over_starttls_and_implicit_tls() {
    let s = Submission::start(None, &[]);
    let ca = s.tls.cert.to_str().unwrap();
    let common = [
        "--connections",
        "4",
        "--messages-per-connection",
        "9",
        "--verify",
        "--tls-ca",
        ca,
    ];
    let (code, r, err) = loadgen(
        s.submission,
        &[
            &common[..],
            &["--messages", "120", "--tls", "--auth", "alice:secret"],
        ]
        .concat(),
    );
    assert_eq!(
        (code, &r["sent"]),
        (Some(0), &serde_json::json!(120)),
        "{r} {err}"
    );
    let (code, r, err) = loadgen(
        s.submissions,
        &[
            &common[..],
            &[
                "--messages",
                "60",
                "--implicit-tls",
                "--auth",
                "bob:hunter2",
                "--mode",
                "bdat",
            ],
        ]
        .concat(),
    );
    assert_eq!(
        (code, &r["sent"]),
        (Some(0), &serde_json::json!(60)),
        "{r} {err}"
    );
    let stored = exported(&s.server.spool);
    assert_eq!(stored.len(), 180);
    let mut by_user = std::collections::BTreeMap::new();
    for (id, (env, data)) in &stored {
        crate::loadgen::check_loadgen_checksum(id, data);
        *by_user
            .entry(env["auth"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(
        by_user,
        [("alice".to_string(), 120), ("bob".to_string(), 60)].into()
    );
    // A wrong password is a connection error, with the server's words.
    let (code, _, err) = loadgen(
        s.submissions,
        &[
            "--messages",
            "3",
            "--connections",
            "1",
            "--max-time",
            "5s",
            "--implicit-tls",
            "--auth",
            "bob:nope",
        ],
    );
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("AUTH refused: 535"), "{err}");
}

#[test]
fn the_policy_service_is_told_the_sasl_username() {
    use crate::policy::{service, Behaviour, FakeService};
    let fake = FakeService::start(Behaviour::Answer("action=DUNNO\n\n"));
    let s = Submission::start(None, &["--policy-service", &service(fake.addr)]);
    let mut c = s.over_tls();
    assert_eq!(
        code_of(&c.cmd(&format!("AUTH PLAIN {}", plain("bob", "hunter2")))),
        235
    );
    assert_eq!(code_of(&c.cmd("MAIL FROM:<app@fleet.test>")), 250);
    assert_eq!(code_of(&c.cmd("RCPT TO:<x@elsewhere.example>")), 250);
    let requests = fake.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    assert!(
        requests[0].lines().any(|l| l == "sasl_username=bob"),
        "{}",
        requests[0]
    );
    assert!(
        requests[0]
            .lines()
            .any(|l| l.starts_with("encryption_protocol=TLS")),
        "{}",
        requests[0]
    );
}

#[test]
fn sighup_rereads_the_users_file_and_a_bad_one_is_refused() {
    let s = Submission::start(None, &[]);
    let users = s._dir.path().join("users");
    let try_login = |password: &str| {
        let mut c = s.over_tls();
        code_of(&c.cmd(&format!("AUTH PLAIN {}", plain("alice", password))))
    };
    assert_eq!(try_login("secret"), 235);
    let changed = bcrypt::hash("changed", 4).unwrap();
    std::fs::write(&users, format!("alice:{changed}\n")).unwrap();
    crate::support::signal(s.server.child.id(), libc::SIGHUP);
    s.server
        .wait_for_log("core 0: new sessions use configuration generation 1");
    assert_eq!(try_login("secret"), 535);
    assert_eq!(try_login("changed"), 235);
    std::fs::write(&users, "alice:not-a-hash\n").unwrap();
    crate::support::signal(s.server.child.id(), libc::SIGHUP);
    let refused = s.server.wait_for_log("reload refused");
    assert!(
        refused.contains("line 1: the hash of \"alice\""),
        "{refused}"
    );
    assert_eq!(try_login("changed"), 235, "the running file stays");
}

#[test]
fn implicit_tls_behind_a_proxy_header_starts_after_it() {
    let s = Submission::start(None, &["--proxy-protocol"]);
    let mut tcp = std::net::TcpStream::connect(s.submissions).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    use std::io::Write;
    // The header and the ClientHello in one segment, as a balancer sends
    // them: the server must hand the octets after the header to TLS.
    let name = rustls::pki_types::ServerName::try_from("mx.test").unwrap();
    let mut conn = rustls::ClientConnection::new(s.tls.client(), name).unwrap();
    let mut first = b"PROXY TCP4 192.0.2.9 127.0.0.1 5555 465\r\n".to_vec();
    conn.write_tls(&mut first).unwrap();
    tcp.write_all(&first).unwrap();
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .expect("TLS handshake");
    }
    let mut c = Client::without_greeting(stream);
    assert!(c.reply().starts_with("220 "));
    assert!(c.cmd("EHLO app.test").contains("250 AUTH PLAIN LOGIN\r\n"));
    assert_eq!(
        code_of(&c.cmd(&format!("AUTH PLAIN {}", plain("alice", "secret")))),
        235
    );
    assert_eq!(
        code_of(&c.send_mail("app@fleet.test", "x@elsewhere.example", b"hi\r\n")),
        250
    );
    let got = exported(&s.server.spool);
    let (env, _) = got.values().next().unwrap();
    assert_eq!(env["peer"], "192.0.2.9:5555");
    assert_eq!(env["auth"], "alice");
}
