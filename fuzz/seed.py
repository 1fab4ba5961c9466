#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/seeds/<target>/.

Why it exists: libFuzzer finds deep paths far sooner from inputs that
already reach them. The seeds are the cases of the unit-test tables
(commands, paths, PROXY headers, DATA bodies, config files) and, for the
spool target, segments written by the real server (`--spool-seed DIR`
copies the *.seg files of a spool that `sluice serve` filled).
The campaign's minimised corpora live in fuzz/corpus/; these seeds are
where they started.
"""
import os
import shutil
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

COMMANDS = [
    b"EHLO client.example", b"HELO client.example", b"HELO a b", b"EHLO",
    b"EHLO [192.0.2.1]", b"EHLO [IPv6:2001:db8::1]",
    b"MAIL FROM:<A@B.example>", b"mail from:<a@b> SIZE=1000 BODY=8BITMIME SMTPUTF8",
    b"MAIL FROM:<> SIZE=1000 BODY=8BITMIME SMTPUTF8", b"MAIL FROM:<a@b> FOO=bar",
    b"MAIL FROM:<a@b> BODY=BINARYMIME", b"MAIL FROM:a@b", b"MAIL TO:<a@b>",
    b"MAIL FROM:<a@b> SIZE=x", b"MAIL FROM:<a@b>SIZE=1",
    b"MAIL FROM:<@relay.example:user@example.com>",
    b"MAIL FROM:<\"quoted local\"@example.com>",
    b"MAIL FROM:<j\xc3\xb6rg@b\xc3\xbccher.example> SMTPUTF8",
    b"rCpT tO:<x@y>", b"RCPT TO: <x@y>", b"RCPT TO:<>", b"RCPT TO:<Postmaster>",
    b"RCPT TO:<a@b> NOTIFY=NEVER", b"RCPT TO:<user@[127.0.0.1]>",
    b"DATA", b"DATA now", b"BDAT 100", b"bdat 0 last", b"BDAT", b"BDAT 10 NOW",
    b"BDAT 99999999999999999999", b"RSET", b"NOOP", b"NOOP anything", b"HELP",
    b"VRFY", b"VRFY user", b"EXPN list", b"QUIT", b"QuIt", b"QUIT please",
    b"STARTTLS", b"AUTH PLAIN", b"FOO", b"", b"HELLO x", b"MAILFROM:<a@b>", b"\xff\xfe",
]

PATHS = [
    "<a@b.example>", "<> SIZE=10", "<a@b> BODY=8BITMIME SMTPUTF8", "<@r1,@r2:a@b>",
    "<\"x y\"@b>", "<a@[192.0.2.1]>", "<a@[IPv6:2001:db8::1]>", "<a@[IPv6:::ffff:1.2.3.4]>",
    "<a@[tag:text]>", "<a.b.c@d-e.f>", "<a..b@c>", "<a@-b>", "<Postmaster>", "a@b",
    "<a@b", "<\u00e4@\u00fc.example>", "example.com", "[127.0.0.1]", "[IPv6:::1]",
    "[300.1.1.1]", "a" * 64 + "@" + "b" * 63 + ".example",
]

DATA = [
    b"Subject: hi\r\n\r\nhello\r\n.\r\n",
    b"..leading dot\r\n...two\r\n.\r\n",
    b"\r\n.\r\n",
    b".\r\n",
    b"bare\nlf\n.\n",
    b"bare cr\r.\r\n.\r\n",
    b"line\r\n.\r\nafter the end",
    b"x" * 1100 + b"\r\n.\r\n",
    b"8bit \xc3\xa9\xff\r\n.\r\n",
    b"no terminator\r\n",
    b"a\r\n" * 40 + b".\r\n",
]

def v2(command, family, body):
    return b"\r\n\r\n\0\r\nQUIT\n" + bytes([0x20 | command, family]) + struct.pack(">H", len(body)) + body

PROXY = [
    b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\nEHLO x\r\n",
    b"PROXY TCP6 2001:db8::1 2001:db8::2 1 25\r\n",
    b"PROXY UNKNOWN\r\n",
    b"PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n",
    v2(1, 0x11, bytes([192, 0, 2, 7, 198, 51, 100, 1]) + struct.pack(">HH", 40000, 25)),
    v2(1, 0x21, bytes(range(32)) + struct.pack(">HH", 1, 25)),
    v2(0, 0x00, b""),
    v2(1, 0x11, bytes(12) + b"\x01\x00\x02h2"),
    v2(1, 0x31, bytes(216)),
]

SESSIONS = [
    b"\x00EHLO c\nMAIL FROM:<a@b>\nRCPT TO:<x@ok.test>\nDATA\nQUIT\n",
    b"\x01EHLO c\nSTARTTLS\nEHLO c\nMAIL FROM:<a@b> SIZE=10\nRCPT TO:<x@ok.test>\nBDAT 5 LAST\nQUIT\n",
    b"\x02HELO c\nMAIL FROM:<>\nRCPT TO:<x@no.test>\nRCPT TO:<y@ok.test>\nRSET\nDATA\nNOOP\nQUIT\n",
    b"\x03EHLO c\nMAIL FROM:<a@b>\nRCPT TO:<1@ok.test>\nRCPT TO:<2@ok.test>\nRCPT TO:<3@ok.test>\nRCPT TO:<4@ok.test>\nBDAT 3\nBDAT x\nBDAT 0 LAST\n",
    b"\x00FOO\nFOO\nFOO\nFOO\nFOO\nFOO\nFOO\nFOO\n",
    b"\x01MAIL FROM:<a@b>\nEHLO c\nMAIL FROM:<a@b> BODY=8BITMIME SMTPUTF8\nMAIL FROM:<a@b>\nVRFY x\nHELP\n",
]

CONFIGS = [
    'listen = ["127.0.0.1:2525"]\nspool = "spool"\ncores = 2\n',
    'hostname = "mx.example"\naccept-domain = ["example.com", "example.org"]\n'
    'max-message-size = "10M"\ndurability = "fsync"\n',
    'trusted-network = ["10.0.0.0/8"]\nclient-connection-limit = 5\nerror-delay = 0.5\n'
    'dnsbl = ["zen.example=127.0.0.[2..11]*3"]\ndnsbl-threshold = 3\n',
    'proxy-protocol = true\nproxy-from = ["10.0.0.0/24"]\nmetrics = "127.0.0.1:9325"\n',
    'listen = 25\n', 'cores = "two"\n', '[table]\nx = 1\n', 'unknown-key = true\n',
    'greet-pause = -1\n', 'error-delay = 1e400\n',
]

LINES = [
    b"\x07\x40EHLO x\r\nMAIL FROM:<a@b>\r\n",
    b"\x01\x08short\r\nthis line is far too long\r\nok\n",
    b"\x40\xffbare\nlf\r\n\r\n",
    b"\x03\x05\r\r\r\n\n",
]


def write(target, items):
    out = os.path.join(HERE, "seeds", target)
    os.makedirs(out, exist_ok=True)
    for n, item in enumerate(items):
        if isinstance(item, str):
            item = item.encode()
        with open(os.path.join(out, f"seed-{n:03}"), "wb") as f:
            f.write(item)


def main():
    write("command_line", COMMANDS)
    write("path", PATHS)
    # data_scanner: first octet = number of cut points, then two octets each.
    write("data_scanner", [bytes([0]) + d for d in DATA]
          + [bytes([2]) + struct.pack("<HH", 3, 9) + d for d in DATA])
    write("proxy_header", PROXY)
    write("session", SESSIONS)
    write("config_file", CONFIGS)
    write("line_reader", LINES)
    if len(sys.argv) == 3 and sys.argv[1] == "--spool-seed":
        out = os.path.join(HERE, "seeds", "spool_segment")
        os.makedirs(out, exist_ok=True)
        n = 0
        for root, _, files in os.walk(sys.argv[2]):
            for name in sorted(files):
                if name.endswith(".seg"):
                    shutil.copy(os.path.join(root, name), os.path.join(out, f"seg-{n:03}"))
                    n += 1
        print(f"{n} spool segments copied")


if __name__ == "__main__":
    main()
