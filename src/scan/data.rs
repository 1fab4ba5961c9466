//! The DATA-phase scanner: finds `<CRLF>.<CRLF>`, drops stuffed dots in
//! place and notes bare CR / bare LF and over-long lines, in one pass.
//!
//! Why it exists: the body of a DATA transaction is where an ingest engine
//! spends its bytes. This scanner looks at every byte once, with memchr's
//! SIMD search doing the looking, and never allocates.
//!
//! # How it works
//!
//! The body is a sequence of lines ended by CRLF. Only the first byte of a
//! line can be special (RFC 5321 §4.5.2): a `.` there is either the start of
//! the terminator `.\r\n` or a stuffed dot that must be dropped. Everything
//! else is copied as is. So the scanner jumps from one CR or LF to the next
//! with `memchr2`, checks the byte after a CRLF, and moves bytes only when a
//! dot has been dropped (then the rest of the body has to slide left by one).
//!
//! Input arrives in TCP-sized pieces, so any of `\r`, `\n`, `.` may be the
//! last byte of a piece. The scanner keeps a small [`State`] between calls
//! instead of asking the caller to keep bytes around; the one byte it may
//! hold back (the `\r` of a line that starts `.\r`) is written out later
//! into the gap that the dropped dot left, which is why the caller must
//! never close the gap between output and input (see [`DataScanner::scan`]).
//!
//! Bare LF and bare CR (CVE-2023-51764 "SMTP smuggling") never end a line
//! here: only CRLF does, so `\n.\n` or `\r.\r` inside a body are just body.
//! They are reported so the session can apply its policy.

use memchr::memchr2;

#[cfg(target_arch = "x86_64")]
use super::blocks::masks_avx2;
use super::blocks::{masks, Masks};

/// Where the scanner stands in the line structure between two calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the first byte of a line (the body starts here too).
    LineStart,
    /// Inside a line; the previous byte was not a CR.
    InLine,
    /// Inside a line; the previous byte was a CR, already written out.
    AfterCr,
    /// A line started with `.`; the dot has been dropped.
    Dot,
    /// A line started with `.\r`; the dot is dropped and the CR held back.
    DotCr,
    /// The terminator has been seen; nothing more belongs to this body.
    Done,
}

/// What one call to [`DataScanner::scan`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The body now ends at this index of the buffer (exclusive).
    pub out: usize,
    /// Input up to this index has been consumed. When `done`, the next
    /// command (pipelined after the terminator) starts here.
    pub consumed: usize,
    /// The terminator `<CRLF>.<CRLF>` was found.
    pub done: bool,
}

/// What was noticed about a body, for the session's policies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BodyFlags {
    /// A LF not preceded by CR was seen.
    pub bare_lf: bool,
    /// A CR not followed by LF was seen.
    pub bare_cr: bool,
    /// A line (with its CRLF, without a stuffed dot) was longer than the
    /// limit given to [`DataScanner::new`].
    pub long_line: bool,
}

/// A streaming DATA scanner for one message. Reset with
/// [`DataScanner::reset`] to reuse it for the next one.
#[derive(Debug, Clone)]
pub struct DataScanner {
    state: State,
    /// Bytes of the current line seen in earlier calls.
    line_len: usize,
    max_line: usize,
    flags: BodyFlags,
}

impl DataScanner {
    /// A scanner that reports lines longer than `max_line` octets
    /// (counting the CRLF, not counting a stuffed dot).
    pub fn new(max_line: usize) -> Self {
        DataScanner {
            state: State::LineStart,
            line_len: 0,
            max_line,
            flags: BodyFlags::default(),
        }
    }

    /// Gets ready for the next message, keeping the line limit.
    pub fn reset(&mut self) {
        *self = DataScanner::new(self.max_line);
    }

    /// What has been noticed about the body so far.
    pub fn flags(&self) -> BodyFlags {
        self.flags
    }

    /// Scans `buf[input..]` and writes the unstuffed body to `buf[out..]`.
    ///
    /// The caller keeps two cursors into one buffer: where the body ends
    /// (`out`) and where unscanned input starts (`input`), with
    /// `out <= input`. After each call it must pass back the returned `out`
    /// and continue with input at the returned `consumed`, appending new
    /// bytes after the old ones. It may slide `buf[out..]` to the left (for
    /// example after flushing the body), but must not shrink the distance
    /// between the two cursors: a held-back CR is written into that gap.
    pub fn scan(&mut self, buf: &mut [u8], out: usize, input: usize) -> Progress {
        debug_assert!(out <= input && input <= buf.len());
        let mut w = Writer {
            buf,
            out,
            seg: input,
        };
        let end = w.buf.len();
        let mut i = input;
        // Start of the current line's counted bytes within this call.
        let mut line_from = input;

        // Finish whatever state the last call left open, byte by byte.
        loop {
            match self.state {
                State::Done => return w.finish_at(i, true),
                State::InLine | State::LineStart if i < end => break,
                _ if i == end => {
                    self.line_len += i - line_from;
                    return w.finish_at(i, false);
                }
                State::AfterCr => self.after_cr(w.buf[i], &mut i, &mut line_from),
                State::Dot => match w.buf[i] {
                    b'\r' => {
                        // Hold the CR back: it is body only if no LF follows.
                        i += 1;
                        w.seg = i;
                        line_from = i;
                        self.state = State::DotCr;
                    }
                    _ => self.state = State::InLine,
                },
                State::DotCr => {
                    if w.buf[i] == b'\n' {
                        self.state = State::Done;
                        return w.finish_at(i + 1, true);
                    }
                    // `.\r` then something else: the dot was stuffing and
                    // the CR is a bare CR that belongs to the body.
                    w.flush(i);
                    w.put(b'\r');
                    self.line_len += 1;
                    self.flags.bare_cr = true;
                    self.state = State::InLine;
                }
                State::InLine | State::LineStart => unreachable!(),
            }
        }

        // Whole 64-octet blocks are tried from here on (see `skip_blocks`).
        let mut blocks_from = i;
        // The main loop: settle whole blocks while no line starts with a
        // dot; otherwise jump between CR and LF with memchr2.
        loop {
            if i >= blocks_from && i + 64 <= end {
                let skipped = self.skip_blocks(w.buf, i, end, &mut line_from);
                if skipped.dot_at_line_start {
                    blocks_from = skipped.next + 64;
                }
                i = skipped.next;
                if skipped.cr_pending {
                    // The octet before `i` is a CR whose successor decides.
                    if i == end {
                        self.state = State::AfterCr;
                        break;
                    }
                    self.after_cr(w.buf[i], &mut i, &mut line_from);
                }
                continue;
            }
            if self.state == State::LineStart {
                if i == end {
                    break;
                }
                if w.buf[i] == b'.' {
                    // Drop the dot: flush the body before it, skip it.
                    w.flush(i);
                    i += 1;
                    w.seg = i;
                    line_from = i;
                    if i + 1 < end && w.buf[i] == b'\r' && w.buf[i + 1] == b'\n' {
                        self.state = State::Done;
                        return w.finish_at(i + 2, true);
                    }
                    if i == end {
                        self.state = State::Dot;
                        break;
                    }
                    if i + 1 == end && w.buf[i] == b'\r' {
                        i += 1;
                        w.seg = i;
                        line_from = i;
                        self.state = State::DotCr;
                        break;
                    }
                }
                self.state = State::InLine;
            }
            let Some(k) = memchr2(b'\r', b'\n', &w.buf[i..end]) else {
                i = end;
                break;
            };
            let p = i + k;
            if w.buf[p] == b'\n' {
                self.flags.bare_lf = true;
                i = p + 1;
                continue;
            }
            // A CR: see what follows.
            if p + 1 == end {
                i = end;
                self.state = State::AfterCr;
                break;
            }
            if w.buf[p + 1] == b'\n' {
                i = p + 2;
                self.end_line(i - line_from);
                line_from = i;
                self.state = State::LineStart;
            } else {
                self.flags.bare_cr = true;
                i = p + 1;
            }
        }
        self.line_len += i - line_from;
        w.finish_at(i, false)
    }

    /// Settles whole 64-octet blocks from `i` with bit masks, as long as
    /// no line in them starts with a dot: such blocks need no output
    /// change, only their flags and line lengths. Called in state
    /// `LineStart` or `InLine` (the octet before `i` is never an
    /// unresolved CR then); leaves the state for the octet at `next`.
    #[inline]
    fn skip_blocks(&mut self, buf: &[u8], i: usize, end: usize, line_from: &mut usize) -> Skipped {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { self.skip_blocks_avx2(buf, i, end, line_from) };
        }
        self.skip_blocks_with(buf, i, end, line_from, masks)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn skip_blocks_avx2(
        &mut self,
        buf: &[u8],
        i: usize,
        end: usize,
        line_from: &mut usize,
    ) -> Skipped {
        self.skip_blocks_with(buf, i, end, line_from, |b| {
            // SAFETY: this function only runs where AVX2 was detected.
            unsafe { masks_avx2(b) }
        })
    }

    #[inline(always)]
    fn skip_blocks_with(
        &mut self,
        buf: &[u8],
        mut i: usize,
        end: usize,
        line_from: &mut usize,
        masks: impl Fn(&[u8; 64]) -> Masks,
    ) -> Skipped {
        let mut line_start = u64::from(self.state == State::LineStart);
        let mut prev_cr = 0u64;
        let mut dot_at_line_start = false;
        let (mut lone_cr, mut lone_lf, mut long) = (0u64, 0u64, false);
        // Octets of the current line before `line_from`.
        let mut carried = self.line_len;
        let max = self.max_line;
        // Kept in a register in the loop, written back after it.
        let mut from = *line_from;
        // Slicing to `end` lets the compiler drop the per-block bounds check.
        let buf = &buf[..end];
        while i + 64 <= buf.len() {
            let block: &[u8; 64] = buf[i..i + 64].try_into().expect("64 octets");
            let m = masks(block);
            let cr_before = (m.cr << 1) | prev_cr;
            let crlf = m.lf & cr_before;
            if m.dot & ((crlf << 1) | line_start) != 0 {
                dot_at_line_start = true;
                break;
            }
            lone_cr |= (m.cr & !(m.lf >> 1) & (u64::MAX >> 1)) | (prev_cr & !m.lf & 1);
            lone_lf |= m.lf & !cr_before;
            if crlf != 0 {
                let first = i + crlf.trailing_zeros() as usize + 1;
                long |= carried + (first - from) > max;
                if max < 64 {
                    // Short limits (tests): every line in the block counts.
                    let mut prev = first;
                    let mut rest = crlf & (crlf - 1);
                    while rest != 0 {
                        let e = i + rest.trailing_zeros() as usize + 1;
                        long |= e - prev > max;
                        prev = e;
                        rest &= rest - 1;
                    }
                }
                // Lines inside one block are under 64 octets.
                from = i + 64 - crlf.leading_zeros() as usize;
                carried = 0;
            }
            prev_cr = m.cr >> 63;
            line_start = crlf >> 63;
            i += 64;
        }
        *line_from = from;
        self.line_len = carried;
        self.flags.bare_cr |= lone_cr != 0;
        self.flags.bare_lf |= lone_lf != 0;
        self.flags.long_line |= long;
        self.state = if line_start != 0 {
            State::LineStart
        } else {
            State::InLine
        };
        Skipped {
            next: i,
            cr_pending: prev_cr != 0,
            dot_at_line_start,
        }
    }

    /// Decides a CR (just before `*i`) by the octet that follows it: with
    /// a LF it ends the line, otherwise it is a bare CR.
    #[inline]
    fn after_cr(&mut self, next: u8, i: &mut usize, line_from: &mut usize) {
        if next == b'\n' {
            *i += 1;
            self.end_line(*i - *line_from);
            *line_from = *i;
            self.state = State::LineStart;
        } else {
            self.flags.bare_cr = true;
            self.state = State::InLine;
        }
    }

    /// Accounts for a finished line of `tail` bytes in this call.
    #[inline]
    fn end_line(&mut self, tail: usize) {
        if self.line_len + tail > self.max_line {
            self.flags.long_line = true;
        }
        self.line_len = 0;
    }
}

/// Where [`DataScanner::skip_blocks`] stopped and why.
struct Skipped {
    /// The first octet not settled.
    next: usize,
    /// The octet before `next` is a CR not yet paired or flagged.
    cr_pending: bool,
    /// Stopped at a block with a dot at a line start (the terminator or a
    /// stuffed dot), which the byte path must handle.
    dot_at_line_start: bool,
}

/// The in-place output half of the scanner: body bytes between `seg` and
/// the scan position are still where they arrived and are moved down to
/// `out` only when something (a dropped dot) forces it.
struct Writer<'a> {
    buf: &'a mut [u8],
    out: usize,
    /// Start of input bytes that belong to the body but are not yet at `out`.
    seg: usize,
}

impl Writer<'_> {
    /// Moves the pending body bytes `seg..to` down to `out`.
    #[inline]
    fn flush(&mut self, to: usize) {
        let n = to - self.seg;
        if n > 0 {
            if self.out != self.seg {
                self.buf.copy_within(self.seg..to, self.out);
            }
            self.out += n;
        }
        self.seg = to;
    }

    /// Writes one byte at `out`; the caller guarantees `out < seg`.
    #[inline]
    fn put(&mut self, byte: u8) {
        debug_assert!(self.out < self.seg, "no gap for a held-back byte");
        self.buf[self.out] = byte;
        self.out += 1;
    }

    /// Ends the call at `consumed`. Without the terminator the pending
    /// body octets are moved down first; with it they were flushed before
    /// the terminating dot, and nothing after it is body.
    fn finish_at(mut self, consumed: usize, done: bool) -> Progress {
        if !done {
            self.flush(consumed);
        }
        Progress {
            out: self.out,
            consumed,
            done,
        }
    }
}
