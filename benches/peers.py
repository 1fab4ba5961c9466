#!/usr/bin/env python3
"""sluice against the SMTP servers people run today, same load generator.

Starts each server on a loopback port, runs the same sluice-loadgen
workload against each in turn, and prints one markdown table: messages/s,
MB/s, p50/p99 end-of-data latency, and sluice's ratio to each peer.

Servers:
  sluice        sluice serve, --durability fsync (every 250 durable)
  smtp-sink     Postfix smtp-sink: discards mail, no disk (protocol bound)
  postfix       a private Postfix instance: smtpd + cleanup + queue file
                fsync()ed before the 250, messages put on hold
  haraka        Haraka (Node.js, one worker per CPU) with this folder's
                haraka/durable_queue.js: one file per message, fsync()ed
                and renamed before the 250

Run through benches/peers.sh, which installs and builds what is needed.
Every load is bounded (--duration) and the whole grid finishes in minutes.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLUICE = os.path.join(ROOT, "target", "release", "sluice")
LOADGEN = os.path.join(ROOT, "target", "release", "sluice-loadgen")


def wait_port(port, seconds=20):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(64).startswith(b"220"):
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"peers: nothing answered SMTP on 127.0.0.1:{port}")


def stop_process(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class Sluice:
    name = "sluice"

    def __init__(self, port, workdir, cores):
        self.port, self.cores = port, cores
        self.spool = os.path.join(workdir, "sluice-spool")
        self.proc = None

    def start(self):
        shutil.rmtree(self.spool, ignore_errors=True)
        args = [SLUICE, "serve", "-q", "--listen", f"127.0.0.1:{self.port}",
                "--spool", self.spool, "--max-message-size", "64M"]
        if self.cores:
            args += ["--cores", self.cores]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self):
        stop_process(self.proc)
        shutil.rmtree(self.spool, ignore_errors=True)


class SmtpSink:
    name = "smtp-sink"

    def __init__(self, port, workdir, cores):
        self.port = port
        self.proc = None

    def start(self):
        sink = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
        self.proc = subprocess.Popen(
            [sink, "-u", "nobody", "-m", "1000", f"inet:127.0.0.1:{self.port}", "1024"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self):
        stop_process(self.proc)


class Postfix:
    """A private instance: its own main.cf, master.cf and queue; smtpd on
    the port; every message held in the queue (never delivered)."""
    name = "postfix"

    def __init__(self, port, workdir, cores):
        self.port = port
        self.base = os.path.join(workdir, "postfix")
        self.etc = os.path.join(self.base, "etc")

    def _postfix(self, *args, check=True):
        return subprocess.run(["postfix", "-c", self.etc, *args], check=check,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self):
        shutil.rmtree(self.base, ignore_errors=True)
        queue, data = os.path.join(self.base, "queue"), os.path.join(self.base, "data")
        for d in (self.etc, queue, data):
            os.makedirs(d, exist_ok=True)
        shutil.chown(data, "postfix", "postfix")
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            f.write(f"""compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
myhostname = peer-postfix.localdomain
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
local_recipient_maps =
relay_domains =
alias_maps =
alias_database =
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = check_client_access static:HOLD, permit_mynetworks, reject
smtpd_peername_lookup = no
message_size_limit = 67108864
default_process_limit = 200
in_flow_delay = 0s
biff = no
""")
        # master.cf: Debian's prototype, smtpd on our port, no chroot, and
        # the delivery agents we never use left out.
        unused = {"maildrop", "uucp", "ifmail", "bsmtp", "scalemail-backend", "mailman"}
        out, keep = [], False
        with open("/etc/postfix/master.cf.proto") as proto:
            for line in proto:
                if line.startswith("#") or not line.strip():
                    continue
                if line[0] in " \t":
                    if keep:
                        out.append(line)
                    continue
                fields = line.split()
                keep = fields[0] not in unused
                if not keep:
                    continue
                if fields[0] == "smtp" and fields[1] == "inet":
                    fields[0] = f"127.0.0.1:{self.port}"
                if len(fields) >= 8:
                    fields[4] = "n"
                out.append(" ".join(fields) + "\n")
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.writelines(out)
        self._postfix("set-permissions", check=False)
        self._postfix("start")
        wait_port(self.port)

    def stop(self):
        self._postfix("stop", check=False)
        time.sleep(1)
        shutil.rmtree(self.base, ignore_errors=True)


class Haraka:
    name = "haraka"
    pkg = os.path.join(ROOT, "target", "peers-haraka", "node_modules", "Haraka")

    def __init__(self, port, workdir, cores):
        self.port = port
        self.base = os.path.join(workdir, "haraka")
        self.proc = None

    def start(self):
        shutil.rmtree(self.base, ignore_errors=True)
        config, plugins = os.path.join(self.base, "config"), os.path.join(self.base, "plugins")
        os.makedirs(config)
        os.makedirs(plugins)
        files = {
            "smtp.ini": f"listen=127.0.0.1:{self.port}\nnodes=cpus\ninactivity_timeout=300\nforce_shutdown_timeout=5\n",
            "log.ini": "[main]\nlevel=warn\ntimestamps=false\n",
            "me": "peer-haraka.localdomain\n",
            "host_list": "example.test\n",
            "plugins": "no_rdns\nrcpt_to.in_host_list\ndurable_queue\n",
        }
        for name, text in files.items():
            with open(os.path.join(config, name), "w") as f:
                f.write(text)
        with open(os.path.join(self.pkg, "config", "connection.ini")) as f:
            conn = "".join("bytes=67108864\n" if l.startswith("bytes=") else l for l in f)
        with open(os.path.join(config, "connection.ini"), "w") as f:
            f.write(conn)
        here = os.path.dirname(os.path.abspath(__file__))
        for js in ("durable_queue.js", "no_rdns.js"):
            shutil.copy(os.path.join(here, "haraka", js), plugins)
        env = dict(os.environ, SLUICE_PEER_SPOOL=os.path.join(self.base, "spool"))
        self.proc = subprocess.Popen(
            ["node", os.path.join(self.pkg, "bin", "haraka"), "-c", self.base],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, 60)
        time.sleep(1)  # let every worker start listening

    def stop(self):
        stop_process(self.proc)
        shutil.rmtree(self.base, ignore_errors=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load(port, size, sessions, seconds, cores, extra=()):
    args = [LOADGEN, "--target", f"127.0.0.1:{port}", "--connections", str(sessions),
            "--size", size, "--duration", f"{seconds}s", "--warmup", "1s",
            "--json", "--quiet", "--max-error-rate", "1"]
    if cores:
        args += ["--cores", cores]
    args += list(extra)
    out = subprocess.run(args, check=True, capture_output=True, text=True, timeout=seconds + 60)
    return json.loads(out.stdout)


def main():
    global SLUICE
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=5, help="measured seconds per cell")
    ap.add_argument("--sluice", default=SLUICE, help="the sluice binary (to compare builds)")
    ap.add_argument("--servers", default="sluice,smtp-sink,postfix,haraka")
    ap.add_argument("--sizes", default="1k,64k,1m,realistic")
    ap.add_argument("--sessions", default="1,50")
    ap.add_argument("--server-cores", default="", help="--cores for sluice (default all)")
    ap.add_argument("--loadgen-cores", default="", help="--cores for sluice-loadgen (default all)")
    a = ap.parse_args()
    SLUICE = a.sluice
    kinds = {"sluice": Sluice, "smtp-sink": SmtpSink, "postfix": Postfix, "haraka": Haraka}
    names = a.servers.split(",")
    if "haraka" in names and not os.path.exists(os.path.join(Haraka.pkg, "bin", "haraka")):
        print("peers: Haraka is not installed (benches/peers.sh installs it with npm); skipping it",
              file=sys.stderr)
        names.remove("haraka")
    for n in names:
        if n not in kinds:
            raise SystemExit(f"peers: unknown server {n!r}; choose from {', '.join(kinds)}")
    workdir = tempfile.mkdtemp(prefix="sluice-peers-", dir=os.path.join(ROOT, "target"))
    # Postfix daemons run as the postfix user and must reach their queue.
    os.chmod(workdir, 0o755)
    cells = [(s, int(n)) for s in a.sizes.split(",") for n in a.sessions.split(",")
             if not (s == "realistic" and n == "1")]
    results = {}
    try:
        for i, name in enumerate(names):
            server = kinds[name](2700 + i, workdir, a.server_cores)
            for size, sessions in cells:
                server.start()
                try:
                    r = load(server.port, size, sessions, a.seconds, a.loadgen_cores)
                finally:
                    server.stop()
                results[(name, size, sessions)] = r
                print(f"peers: {name:9s} {size:>9s} x {sessions:<3d} {r['messages_per_s']:10.1f} msg/s "
                      f"{r['mb_per_s']:8.2f} MB/s  p99 {r['latency_eod']['p99_ms']:.2f} ms  errors {r['errors']}",
                      file=sys.stderr)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    peers = [n for n in names if n != "sluice"]
    head = "| workload | server | msgs/s | MB/s | p50 ms | p99 ms | errors |"
    if "sluice" in names:
        head += "".join(f" sluice ÷ {p} |" for p in peers)
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for size, sessions in cells:
        for name in names:
            r = results[(name, size, sessions)]
            row = (f"| {size} × {sessions} | {name} | {r['messages_per_s']:,.0f} | {r['mb_per_s']:,.1f} | "
                   f"{r['latency_eod']['p50_ms']:.2f} | {r['latency_eod']['p99_ms']:.2f} | {r['errors']} |")
            if "sluice" in names:
                for p in peers:
                    if name == "sluice":
                        base = results[(p, size, sessions)]["messages_per_s"]
                        mine = r["messages_per_s"]
                        row += f" {mine / base:.2f}× |" if base > 0 else " n/a |"
                    else:
                        row += " |"
            print(row)


if __name__ == "__main__":
    main()
