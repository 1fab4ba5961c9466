//! `sluice tune check`: reads the host settings that limit an ingest
//! node and says what to change, and why.
//!
//! Why it exists: most "slow MTA" reports are host limits (a listen queue
//! of 128, 1024 file descriptors, io_uring disabled, a spool on tmpfs).
//! Reading the facts is separate from judging them ([`advise`] is a pure
//! function) so the judgement is unit-tested.

use std::path::Path;

/// What the check reads from the host.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub cpus: usize,
    pub somaxconn: Option<u64>,
    pub tcp_max_syn_backlog: Option<u64>,
    pub ip_local_port_range: Option<(u64, u64)>,
    pub nofile_soft: Option<u64>,
    pub memlock_soft: Option<u64>,
    pub io_uring_disabled: Option<u64>,
    /// File system type of the spool directory (from `statfs`).
    pub spool_fs: Option<String>,
    /// Connections per core the operator plans for.
    pub connections_per_core: u64,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advice {
    pub setting: &'static str,
    pub current: String,
    /// `None` when the setting is fine.
    pub change_to: Option<String>,
    pub why: &'static str,
}

/// glommio binds with a backlog of 1024; the kernel caps it at somaxconn.
const LISTEN_BACKLOG: u64 = 1024;
/// Memory each executor locks for io_uring, plus headroom.
const MEMLOCK_PER_CORE: u64 = 1 << 20;

/// Judges the facts.
pub fn advise(f: &Facts) -> Vec<Advice> {
    let mut out = Vec::new();
    let show = |v: Option<u64>| v.map_or("unknown".to_string(), |v| v.to_string());
    out.push(Advice {
        setting: "net.core.somaxconn",
        current: show(f.somaxconn),
        change_to: f.somaxconn.filter(|&v| v < LISTEN_BACKLOG).map(|_| LISTEN_BACKLOG.to_string()),
        why: "each core listens with a backlog of 1024; the kernel silently caps it at somaxconn, and a full queue drops connection bursts",
    });
    out.push(Advice {
        setting: "net.ipv4.tcp_max_syn_backlog",
        current: show(f.tcp_max_syn_backlog),
        change_to: f
            .tcp_max_syn_backlog
            .filter(|&v| v < 4096)
            .map(|_| "4096".into()),
        why: "half-open connections queue here during bursts from many senders",
    });
    let want_files = f.connections_per_core * f.cpus.max(1) as u64 + 1024;
    out.push(Advice {
        setting: "nofile (ulimit -n / LimitNOFILE)",
        current: show(f.nofile_soft),
        change_to: f
            .nofile_soft
            .filter(|&v| v < want_files)
            .map(|_| want_files.to_string()),
        why: "one descriptor per connection on every core, plus spool segments and listeners",
    });
    let want_lock = MEMLOCK_PER_CORE * f.cpus.max(1) as u64;
    out.push(Advice {
        setting: "memlock (ulimit -l / LimitMEMLOCK)",
        current: f.memlock_soft.map_or("unknown".into(), |v| {
            if v == u64::MAX { "unlimited".into() } else { format!("{} KiB", v / 1024) }
        }),
        change_to: f
            .memlock_soft
            .filter(|&v| v < want_lock)
            .map(|_| format!("{} KiB (or unlimited)", want_lock / 1024)),
        why: "every executor registers io_uring buffers that must be locked in memory; too little and start-up fails",
    });
    out.push(Advice {
        setting: "kernel.io_uring_disabled",
        current: show(f.io_uring_disabled),
        change_to: f.io_uring_disabled.filter(|&v| v != 0).map(|_| "0".into()),
        why: "sluice runs on io_uring (glommio); with it disabled the server cannot start",
    });
    out.push(Advice {
        setting: "net.ipv4.ip_local_port_range",
        current: f.ip_local_port_range.map_or("unknown".into(), |(a, b)| format!("{a} {b}")),
        change_to: f
            .ip_local_port_range
            .filter(|&(a, b)| b.saturating_sub(a) < 28_000)
            .map(|_| "1024 65535".into()),
        why: "matters on load generators and relays that open many outgoing connections (not for the listener itself)",
    });
    let volatile = matches!(
        f.spool_fs.as_deref(),
        Some("tmpfs") | Some("ramfs") | Some("overlayfs")
    );
    out.push(Advice {
        setting: "spool file system",
        current: f.spool_fs.clone().unwrap_or_else(|| "unknown".into()),
        change_to: volatile.then(|| "ext4 or xfs on a local disk".into()),
        why: "a 250 promises the message survives power loss; tmpfs and container overlays do not keep that promise",
    });
    out
}

/// Reads the facts of this host for a spool at `spool`.
pub fn read_facts(spool: &Path, connections_per_core: u64) -> Facts {
    let num =
        |path: &str| -> Option<u64> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<u64>());
            Some((it.next()?.ok()?, it.next()?.ok()?))
        });
    Facts {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        somaxconn: num("/proc/sys/net/core/somaxconn"),
        tcp_max_syn_backlog: num("/proc/sys/net/ipv4/tcp_max_syn_backlog"),
        ip_local_port_range: range,
        nofile_soft: rlimit(libc::RLIMIT_NOFILE),
        memlock_soft: rlimit(libc::RLIMIT_MEMLOCK),
        io_uring_disabled: num("/proc/sys/kernel/io_uring_disabled"),
        spool_fs: fs_type(spool),
        connections_per_core,
    }
}

fn rlimit(resource: libc::__rlimit_resource_t) -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    (unsafe { libc::getrlimit(resource, &mut r) } == 0).then_some(
        if r.rlim_cur == libc::RLIM_INFINITY {
            u64::MAX
        } else {
            r.rlim_cur
        },
    )
}

/// The file system type of `path` (or its nearest existing parent).
fn fs_type(path: &Path) -> Option<String> {
    let mut p = path;
    while !p.exists() {
        p = p.parent()?;
    }
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statfs is plain integers; all zeroes is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: statfs fills the struct we own from a valid C string.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(
        match st.f_type {
            0xEF53 => "ext4",
            0x5846_5342 => "xfs",
            0x9123_683E => "btrfs",
            0x0102_1994 => "tmpfs",
            0x8584_58f6 => "ramfs",
            0x794C_7630 => "overlayfs",
            0x2FC1_2FC1 => "zfs",
            _ => "other",
        }
        .to_string(),
    )
}

/// Prints the report; returns whether everything is fine.
pub fn print_report(advice: &[Advice]) -> bool {
    let mut fine = true;
    for a in advice {
        match &a.change_to {
            None => println!("ok      {:<36} {}", a.setting, a.current),
            Some(to) => {
                fine = false;
                println!(
                    "CHANGE  {:<36} {} -> {}\n        why: {}",
                    a.setting, a.current, to, a.why
                );
            }
        }
    }
    if fine {
        println!("all checked settings are fine for this node");
    } else {
        println!("see tuning/GUIDE.md for how to make these changes persistent");
    }
    fine
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Facts {
        Facts {
            cpus: 4,
            somaxconn: Some(4096),
            tcp_max_syn_backlog: Some(8192),
            ip_local_port_range: Some((1024, 65535)),
            nofile_soft: Some(1 << 20),
            memlock_soft: Some(u64::MAX),
            io_uring_disabled: Some(0),
            spool_fs: Some("xfs".into()),
            connections_per_core: 10_000,
        }
    }

    fn changes(f: &Facts) -> Vec<&'static str> {
        advise(f)
            .into_iter()
            .filter(|a| a.change_to.is_some())
            .map(|a| a.setting)
            .collect()
    }

    #[test]
    fn a_tuned_host_needs_nothing() {
        assert!(changes(&good()).is_empty());
    }

    #[test]
    fn each_limit_is_flagged_with_its_reason() {
        let f = Facts {
            somaxconn: Some(128),
            nofile_soft: Some(1024),
            memlock_soft: Some(64 << 10),
            io_uring_disabled: Some(2),
            spool_fs: Some("tmpfs".into()),
            ..good()
        };
        let c = changes(&f);
        for s in [
            "net.core.somaxconn",
            "nofile (ulimit -n / LimitNOFILE)",
            "memlock (ulimit -l / LimitMEMLOCK)",
            "kernel.io_uring_disabled",
            "spool file system",
        ] {
            assert!(c.contains(&s), "{s} not flagged in {c:?}");
        }
        let nofile = advise(&f)
            .into_iter()
            .find(|a| a.setting.starts_with("nofile"))
            .unwrap();
        assert_eq!(
            nofile.change_to.as_deref(),
            Some("41024"),
            "4 cores x 10000 + 1024"
        );
    }

    #[test]
    fn unknown_values_are_not_guessed_at() {
        let f = Facts {
            somaxconn: None,
            spool_fs: None,
            ..good()
        };
        assert!(changes(&f).is_empty());
    }
}
