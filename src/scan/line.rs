//! The command-line reader: splits buffered input into SMTP command lines.
//!
//! Why it exists: commands and DATA bodies must follow one rule about line
//! endings, or a client can make the two disagree (that is how SMTP
//! smuggling works). Here, as in the DATA scanner, only CRLF ends a line
//! cleanly; a bare LF is reported so the session can refuse it. Lines have
//! a hard length limit (RFC 5321 §4.5.3.1.4: 512 octets with the CRLF);
//! the rest of an over-long line is skipped without being buffered.

use memchr::memchr;

/// One result of [`LineReader::next`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// A complete line: `buf[..len]` without its line ending; `consumed`
    /// bytes (with the ending) are used up.
    Complete {
        len: usize,
        consumed: usize,
        /// The line ended with a LF alone instead of CRLF.
        bare_lf: bool,
    },
    /// The line was longer than the limit. `consumed` bytes, up to and
    /// including its end, were skipped.
    TooLong { consumed: usize },
    /// No line end yet. `consumed` bytes may be dropped (the skipped part
    /// of an over-long line); the rest must be kept for the next call.
    Incomplete { consumed: usize },
}

/// Splits a byte stream into command lines of at most `limit` octets
/// (counting the CRLF).
#[derive(Debug, Clone)]
pub struct LineReader {
    limit: usize,
    /// Inside an over-long line whose end has not arrived yet.
    skipping: bool,
}

impl LineReader {
    /// A reader for lines of at most `limit` octets including CRLF.
    pub fn new(limit: usize) -> Self {
        LineReader {
            limit,
            skipping: false,
        }
    }

    /// The line limit in octets, CRLF included.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Looks for the next line at the start of `buf`.
    pub fn next(&mut self, buf: &[u8]) -> Line {
        let window = &buf[..buf.len().min(self.limit)];
        match memchr(b'\n', window) {
            Some(lf) if !self.skipping => {
                let crlf = lf > 0 && buf[lf - 1] == b'\r';
                Line::Complete {
                    len: if crlf { lf - 1 } else { lf },
                    consumed: lf + 1,
                    bare_lf: !crlf,
                }
            }
            _ if self.skipping => match memchr(b'\n', buf) {
                Some(lf) => {
                    self.skipping = false;
                    Line::TooLong { consumed: lf + 1 }
                }
                None => Line::Incomplete {
                    consumed: buf.len(),
                },
            },
            _ if buf.len() >= self.limit => {
                // A full window without a LF: the line is too long. Skip
                // it to its end, which may be in this buffer or later.
                match memchr(b'\n', &buf[self.limit..]) {
                    Some(lf) => Line::TooLong {
                        consumed: self.limit + lf + 1,
                    },
                    None => {
                        self.skipping = true;
                        Line::Incomplete {
                            consumed: buf.len(),
                        }
                    }
                }
            }
            _ => Line::Incomplete { consumed: 0 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_line_is_split() {
        let mut r = LineReader::new(512);
        assert_eq!(
            r.next(b"NOOP\r\nQUIT\r\n"),
            Line::Complete {
                len: 4,
                consumed: 6,
                bare_lf: false
            }
        );
    }

    #[test]
    fn bare_lf_is_reported() {
        let mut r = LineReader::new(512);
        assert_eq!(
            r.next(b"NOOP\nX"),
            Line::Complete {
                len: 4,
                consumed: 5,
                bare_lf: true
            }
        );
    }

    #[test]
    fn partial_line_waits() {
        let mut r = LineReader::new(512);
        assert_eq!(r.next(b"NOO"), Line::Incomplete { consumed: 0 });
    }

    #[test]
    fn line_of_exactly_the_limit_is_accepted() {
        let mut r = LineReader::new(8);
        assert_eq!(
            r.next(b"ABCDEF\r\n"),
            Line::Complete {
                len: 6,
                consumed: 8,
                bare_lf: false
            }
        );
        assert_eq!(r.next(b"ABCDEFG\r\n"), Line::TooLong { consumed: 9 });
    }

    #[test]
    fn too_long_line_is_skipped_across_reads() {
        let mut r = LineReader::new(8);
        assert_eq!(r.next(b"ABCDEFGHIJ"), Line::Incomplete { consumed: 10 });
        assert_eq!(r.next(b"KLMNOP"), Line::Incomplete { consumed: 6 });
        assert_eq!(r.next(b"Q\r\nNOOP\r\n"), Line::TooLong { consumed: 3 });
        assert_eq!(
            r.next(b"NOOP\r\n"),
            Line::Complete {
                len: 4,
                consumed: 6,
                bare_lf: false
            }
        );
    }
}
