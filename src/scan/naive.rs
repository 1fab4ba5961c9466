//! The byte-at-a-time reference the DATA scanner is checked against.
//!
//! It reads the whole input at once and follows RFC 5321 §4.5.2 literally:
//! lines end only at CRLF; a line that is exactly `.` ends the body; a
//! line that starts with `.` loses that dot. It is slow and obvious on
//! purpose. It is public (but hidden from the docs) so that the benchmark
//! can run it as its "naive" baseline.

use super::BodyFlags;

/// The reference result: the body, the flags, and where the body ended in
/// the input (`None` if no terminator).
#[derive(Debug, PartialEq, Eq)]
pub struct Reference {
    pub body: Vec<u8>,
    pub flags: BodyFlags,
    pub end: Option<usize>,
}

/// Scans `input` byte by byte.
pub fn scan(input: &[u8], max_line: usize) -> Reference {
    let mut body = Vec::new();
    let mut flags = BodyFlags::default();
    let mut line_start = true;
    let mut line_len = 0usize;
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if line_start && b == b'.' {
            if input[i + 1..].starts_with(b"\r\n") {
                return Reference {
                    body,
                    flags,
                    end: Some(i + 3),
                };
            }
            if i + 1 == input.len() || input[i + 1..] == *b"\r" {
                // Undecided: the input ends inside a possible terminator.
                return Reference {
                    body,
                    flags,
                    end: None,
                };
            }
            // A stuffed dot: dropped, not counted in the line length.
            line_start = false;
            i += 1;
            continue;
        }
        line_start = false;
        body.push(b);
        line_len += 1;
        if b == b'\n' {
            if i > 0 && input[i - 1] == b'\r' {
                if line_len > max_line {
                    flags.long_line = true;
                }
                line_len = 0;
                line_start = true;
            } else {
                flags.bare_lf = true;
            }
        } else if b == b'\r' && i + 1 < input.len() && input[i + 1] != b'\n' {
            flags.bare_cr = true;
        }
        i += 1;
    }
    Reference {
        body,
        flags,
        end: None,
    }
}

/// Bodies every reader of DATA must get right: empty bodies, stuffed
/// dots, terminators split and missing, bare CR/LF around dots, lines at
/// the tests' 20-octet limit.
pub const TRICKY: &[&[u8]] = &[
    b"",
    b".\r\n",
    b"\r\n.\r\n",
    b"a\r\n.\r\n",
    b"..\r\n.\r\n",
    b".a\r\n.\r\n",
    b"...\r\n.\r\n",
    b"a\r\n..\r\n.\r\nNOOP\r\n",
    b"a\n.\nb\r\n.\r\n",
    b"a\r.\r\nb\r\n.\r\n",
    b"a\r\n.\nb\r\n.\r\n",
    b"a\r\n.\rb\r\n.\r\n",
    b"a\r\n.\r.\r\n.\r\n",
    b"a\r\n.\r\r\n.\r\n",
    b"a\rb\nc\r\n.\r\n",
    b"\r\r\n\n\r\n.\r\n",
    b"no terminator\r\n",
    b"ends without crlf.\r\n",
    b"ends without crlf\r\n.",
    b"ends without crlf\r\n.\r",
    b"0123456789012345678\r\n.\r\n",
    b"01234567890123456789\r\n.\r\n",
    b".0123456789012345678\r\n.\r\n",
    b"\r\n.\r\n\r\n.\r\n",
];

/// Shapes a smuggler uses to end a body early (RFC 5321 §4.5.2 says only
/// `<CRLF>.<CRLF>` ends it); none of them may.
pub const SMUGGLING: &[&[u8]] = &[b"a\n.\nb", b"a\r.\rb", b"a\r\n.\nb", b"a\n.\r\nb"];
