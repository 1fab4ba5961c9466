//! The Debian package as an operator gets it: its contents and control
//! files (`dpkg-deb`), its systemd units (`systemd-analyze verify`), its
//! man pages (`man -l`), its completions (bash), and its binary started
//! from a throwaway root (`dpkg -x`) with the packaged settings file,
//! taking a message from the packaged load generator.
//!
//! The package is built by `packaging/build-deb.sh` (`.ci/run` does it
//! before the tests); without it these tests are skipped, or fail under
//! `SLUICE_REQUIRE_PEERS`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::support::{peer_program, Server};

/// The newest `target/debian/sluice_*.deb`, if built.
fn package() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/debian");
    let newest = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("sluice_") && name.ends_with(".deb")
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok());
    if newest.is_none() {
        assert!(
            std::env::var_os("SLUICE_REQUIRE_PEERS").is_none(),
            "no package in {}: run packaging/build-deb.sh (SLUICE_REQUIRE_PEERS is set)",
            dir.display()
        );
        eprintln!(
            "SKIPPED: no package in {} (packaging/build-deb.sh)",
            dir.display()
        );
    }
    newest
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The package unpacked into a temporary root.
fn unpacked(deb: &Path) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    run(Command::new("dpkg").arg("-x").arg(deb).arg(root.path()));
    root
}

#[test]
fn the_package_holds_the_binaries_units_settings_man_pages_and_completions() {
    let (Some(deb), Some(_)) = (package(), peer_program("dpkg-deb")) else {
        return;
    };
    let listing = text(&run(Command::new("dpkg-deb").arg("-c").arg(&deb)));
    let paths: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    for want in [
        "./usr/sbin/sluice",
        "./usr/bin/sluice-loadgen",
        "./etc/sluice/sluice.toml",
        "./etc/default/sluice-drain",
        "./usr/lib/systemd/system/sluice.service",
        "./usr/lib/systemd/system/sluice-drain.service",
        "./usr/share/man/man8/sluice.8.gz",
        "./usr/share/man/man8/sluice-serve.8.gz",
        "./usr/share/man/man8/sluice-drain.8.gz",
        "./usr/share/man/man8/sluice-spool-ls.8.gz",
        "./usr/share/man/man1/sluice-loadgen.1.gz",
        "./usr/share/bash-completion/completions/sluice",
        "./usr/share/zsh/vendor-completions/_sluice",
        "./usr/share/fish/vendor_completions.d/sluice.fish",
    ] {
        assert!(paths.contains(&want), "no {want} in\n{listing}");
    }
    let modes: Vec<(&str, &str)> = listing
        .lines()
        .filter_map(|l| Some((l.split_whitespace().next()?, l.split_whitespace().nth(5)?)))
        .collect();
    let mode = |path: &str| modes.iter().find(|(_, p)| *p == path).unwrap().0;
    assert_eq!(mode("./usr/sbin/sluice"), "-rwxr-xr-x");
    assert_eq!(mode("./etc/sluice/sluice.toml"), "-rw-r--r--");

    let control = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(control.path()));
    let read = |name: &str| std::fs::read_to_string(control.path().join(name)).unwrap();
    let conffiles = read("conffiles");
    assert!(
        conffiles.lines().any(|l| l == "/etc/sluice/sluice.toml"),
        "{conffiles}"
    );
    assert!(
        conffiles.lines().any(|l| l == "/etc/default/sluice-drain"),
        "{conffiles}"
    );
    let fields = read("control");
    assert!(fields.contains("Package: sluice\n"), "{fields}");
    assert!(fields.contains("Section: mail\n"), "{fields}");
    let depends = fields.lines().find(|l| l.starts_with("Depends: ")).unwrap();
    assert!(
        depends.contains("adduser") && depends.contains("libc6"),
        "{depends}"
    );
    let postinst = read("postinst");
    assert!(postinst.contains("adduser --system --group"), "{postinst}");
    // The maintainer scripts are valid shell.
    for script in ["postinst", "prerm", "postrm"] {
        run(Command::new("sh")
            .arg("-n")
            .arg(control.path().join(script)));
    }
}

#[test]
fn the_units_verify_and_say_what_the_service_needs() {
    let (Some(deb), Some(analyze)) = (package(), peer_program("systemd-analyze")) else {
        return;
    };
    let root = unpacked(&deb);
    let units = root.path().join("usr/lib/systemd/system");
    let service = std::fs::read_to_string(units.join("sluice.service")).unwrap();
    for line in [
        "Type=notify",
        "ExecStart=/usr/sbin/sluice serve --config /etc/sluice/sluice.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "User=sluice",
        "StateDirectory=sluice",
        "LimitMEMLOCK=infinity",
        "LimitNOFILE=1048576",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
    ] {
        assert!(
            service.lines().any(|l| l == line),
            "no {line} in sluice.service"
        );
    }
    // verify checks that ExecStart's program exists: point the units at
    // the unpacked binary (and environment file), copied beside them.
    let check = tempfile::tempdir().unwrap();
    let bin = root.path().join("usr/sbin/sluice");
    let default = root.path().join("etc/default/sluice-drain");
    for unit in ["sluice.service", "sluice-drain.service"] {
        let text = std::fs::read_to_string(units.join(unit))
            .unwrap()
            .replace("/usr/sbin/sluice", bin.to_str().unwrap())
            .replace("/etc/default/sluice-drain", default.to_str().unwrap());
        std::fs::write(check.path().join(unit), text).unwrap();
    }
    // It also looks the Documentation= man pages up: in the package's.
    let out = Command::new(analyze)
        .env("MANPATH", root.path().join("usr/share/man"))
        .arg("verify")
        .arg(check.path().join("sluice.service"))
        .arg(check.path().join("sluice-drain.service"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    // Outside a booted systemd (a container), verify may note that; it
    // must say nothing about the units themselves.
    let about_units: Vec<&str> = said.lines().filter(|l| l.contains("sluice")).collect();
    assert!(
        out.status.success() && about_units.is_empty(),
        "{}\n{said}",
        out.status
    );

    // The same check does see a mistake: a misspelt key.
    let broken = check.path().join("sluice-broken.service");
    let text = std::fs::read_to_string(check.path().join("sluice.service")).unwrap();
    std::fs::write(&broken, text.replace("ProtectHome=yes", "ProtectHomes=yes")).unwrap();
    let out = Command::new(peer_program("systemd-analyze").unwrap())
        .env("MANPATH", root.path().join("usr/share/man"))
        .arg("verify")
        .arg(&broken)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("Unknown key 'ProtectHomes'"), "{said}");
}

#[test]
fn every_man_page_renders_without_warnings() {
    let (Some(deb), Some(man)) = (package(), peer_program("man")) else {
        return;
    };
    let root = unpacked(&deb);
    let mut pages = 0;
    for section in ["man1", "man8"] {
        let dir = root.path().join("usr/share/man").join(section);
        for page in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = page.path();
            let out = Command::new(&man)
                .args(["--warnings", "-l"])
                .arg(&path)
                .env("MANWIDTH", "80")
                .env("MANPAGER", "cat")
                .output()
                .unwrap();
            let shown = String::from_utf8_lossy(&out.stdout);
            let name = path.file_name().unwrap().to_string_lossy();
            let command = name.split('.').next().unwrap();
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.stderr.is_empty(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                shown.contains("NAME") && shown.contains(command) && shown.contains("OPTIONS"),
                "{name}:\n{shown}"
            );
            pages += 1;
        }
    }
    assert!(pages >= 11, "{pages} man pages");
    // The server's page lists its flags, from the clap definition.
    let serve = Command::new(&man)
        .arg("-l")
        .arg(root.path().join("usr/share/man/man8/sluice-serve.8.gz"))
        .env("MANPAGER", "cat")
        .output()
        .unwrap();
    let serve = String::from_utf8_lossy(&serve.stdout);
    for flag in [
        "--check-config",
        "--accept-domain",
        "--log-format",
        "--policy-service",
    ] {
        assert!(serve.contains(flag), "no {flag} in sluice-serve(8)");
    }
}

#[test]
fn bash_completes_the_subcommands() {
    let (Some(deb), Some(bash)) = (package(), peer_program("bash")) else {
        return;
    };
    let root = unpacked(&deb);
    let script = root
        .path()
        .join("usr/share/bash-completion/completions/sluice");
    let out = run(Command::new(bash).arg("-c").arg(format!(
        "source {}; COMP_WORDS=(sluice s); COMP_CWORD=1; _sluice sluice s sluice; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display()
    )));
    let offered: Vec<String> = text(&out).lines().map(str::to_string).collect();
    assert!(
        offered.contains(&"serve".to_string()) && offered.contains(&"spool".to_string()),
        "{offered:?}"
    );
}

#[test]
fn the_unpacked_binary_runs_with_the_packaged_settings() {
    let Some(deb) = package() else {
        return;
    };
    let root = unpacked(&deb);
    let bin = root.path().join("usr/sbin/sluice");
    let config = root.path().join("etc/sluice/sluice.toml");
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");

    // The packaged file points at the packaged spool; flags win.
    let report = text(&run(Command::new(&bin)
        .args(["serve", "--check-config", "--config"])
        .arg(&config)));
    let file_line = format!("spool = \"/var/spool/sluice\"  # file {}", config.display());
    assert!(report.lines().any(|l| l == file_line), "{report}");
    assert!(
        report.contains("listen = \"127.0.0.1:2525\"  # default"),
        "{report}"
    );

    let mut cmd = Command::new(&bin);
    cmd.args(["serve", "--config"])
        .arg(&config)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--hostname",
            "mx.test",
            "--cores",
            "1",
            "--spool",
        ])
        .arg(&spool)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut server = Server::spawn(cmd, &spool);
    let sent = run(Command::new(root.path().join("usr/bin/sluice-loadgen"))
        .args([
            "--messages",
            "1",
            "--connections",
            "1",
            "--quiet",
            "--json",
            "--target",
        ])
        .arg(server.addr.to_string()));
    let report: serde_json::Value = serde_json::from_slice(&sent.stdout).unwrap();
    assert_eq!(report["sent"], 1, "{report}");
    let id = server.wait_for_log("stored queue_id=");
    let id = id.split(' ').next().unwrap();
    let listed = text(&run(Command::new(&bin)
        .args(["spool", "ls", "--spool"])
        .arg(&spool)));
    assert!(
        listed.lines().any(|l| l.starts_with(id)),
        "{id} not in\n{listed}"
    );
    assert_eq!(server.terminate(), Some(0));
}
