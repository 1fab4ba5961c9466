//! The DATA-phase scanner: finds `<CRLF>.<CRLF>`, drops stuffed dots in
//! place and notes bare CR / bare LF and over-long lines, in one pass.
//!
//! Why it exists: the body of a DATA transaction is where an ingest engine
//! spends its bytes. This scanner looks at every byte once, in the buffer
//! the socket read into, and never allocates.
//!
//! # How it works
//!
//! The body is a sequence of lines ended by CRLF. Only the first byte of a
//! line can be special (RFC 5321 §4.5.2): a `.` there is either the start of
//! the terminator `.\r\n` or a stuffed dot that must be dropped. Everything
//! else is copied as is, and moved only once a dot has been dropped (then
//! the rest of the body has to slide left by one).
//!
//! Three paths share the work, fastest first:
//!
//! - the clean run ([`clean_run`]): 64-octet blocks in which every CR is
//!   followed by LF, every LF preceded by CR and no line starts with a dot
//!   are checked with a few vector compares (see `blocks`), four blocks
//!   per branch, and need only a bound on line lengths; a stuffed dot is
//!   dropped without leaving it, and after one, each block is moved down
//!   from the registers it was checked in;
//! - the masks: a block that is not clean (a bare CR or LF, the
//!   terminator, a line that may be too long), and the last part-block of
//!   the input, are settled exactly from their CR, LF and `.` bit masks,
//!   up to the first line-start dot;
//! - the byte path: the state machine below, for line-start dots, the
//!   terminator, the states a read can end in, and the last few octets.
//!
//! The clean run reads its windows without bounds checks (`window_at`),
//! having checked once per run that they fit: per block, the checks cost
//! it about a fifth of its speed.
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

use super::blocks::{clean, masks, move_down, part_masks, troubles, Clean, Masks, Simd};
#[cfg(target_arch = "x86_64")]
use super::blocks::{
    clean_avx2, clean_avx512, masks_avx2, masks_avx512, move_down_avx2, move_down_avx512,
};

/// `DataScanner::skip_blocks_with` compiled for a CPU feature, with that
/// feature's block functions inlined into it.
macro_rules! skip_blocks_compiled_for {
    ($name:ident, $feature:literal, $masks:ident, $clean:ident, $move_down:ident) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feature)]
        fn $name(
            &mut self,
            w: &mut Writer,
            i: usize,
            end: usize,
            line_from: &mut usize,
        ) -> Skipped {
            self.skip_blocks_with(
                w,
                i,
                end,
                line_from,
                Kit {
                    // SAFETY: `skip_blocks` calls this only where
                    // `Simd::detect` found the feature.
                    masks: |b: &[u8; 64]| unsafe { $masks(b) },
                    // SAFETY: as for `masks`.
                    clean: |w: &[u8; 65]| unsafe { $clean(w) },
                    // SAFETY: as for `masks`; the move stays `unsafe` to
                    // call through `MoveDown::call`.
                    move_down: unsafe {
                        MoveDown::new(|base, at, gap, blocks| $move_down(base, at, gap, blocks))
                    },
                },
            )
        }
    };
}

/// Fewer octets than this at the end are left to the byte path.
const SHORT_TAIL: usize = 16;

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
    /// The block functions to use, chosen once for the CPU.
    simd: Simd,
}

impl DataScanner {
    /// A scanner that reports lines longer than `max_line` octets
    /// (counting the CRLF, not counting a stuffed dot).
    pub fn new(max_line: usize) -> Self {
        DataScanner::with_simd(max_line, Simd::detect())
    }

    /// A scanner that uses the block functions of `simd`, which the CPU
    /// must support (see [`Simd::available`]).
    pub(super) fn with_simd(max_line: usize, simd: Simd) -> Self {
        DataScanner {
            state: State::LineStart,
            line_len: 0,
            max_line,
            flags: BodyFlags::default(),
            simd,
        }
    }

    /// Gets ready for the next message, keeping the line limit.
    pub fn reset(&mut self) {
        *self = DataScanner::with_simd(self.max_line, self.simd);
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

        // The main loop: settle the input in 64-octet blocks (and the last
        // part-block) with vector checks, stop at each line-start dot the
        // block path leaves alone, and walk the last few octets by hand.
        loop {
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
            let cr_pending = if end - i < SHORT_TAIL {
                // A few octets are left: a plain loop beats a call.
                let Some(k) = w.buf[i..end].iter().position(|&b| b == b'\r' || b == b'\n') else {
                    i = end;
                    break;
                };
                i += k + 1;
                if w.buf[i - 1] == b'\n' {
                    self.flags.bare_lf = true;
                    continue;
                }
                true
            } else {
                let skipped = self.skip_blocks(&mut w, i, end, &mut line_from);
                i = skipped.next;
                skipped.cr_pending
            };
            if cr_pending {
                // The octet before `i` is a CR whose successor decides.
                if i == end {
                    self.state = State::AfterCr;
                    break;
                }
                self.after_cr(w.buf[i], &mut i, &mut line_from);
            }
        }
        self.line_len += i - line_from;
        w.finish_at(i, false)
    }

    /// Settles the input from `i` in 64-octet blocks, then the last part
    /// of a block if it is at least `SHORT_TAIL` octets: flags, line
    /// lengths, the line structure, and the stuffed dots the clean run
    /// drops itself. Stops at a line-start dot the run leaves alone (the
    /// terminator, or one next to a bare CR or LF, for the byte path to
    /// handle), or before a shorter tail. Called in state `InLine` (the octet
    /// before `i` is never an unresolved CR then); leaves the state for
    /// the octet at `next`.
    #[inline]
    fn skip_blocks(
        &mut self,
        w: &mut Writer,
        i: usize,
        end: usize,
        line_from: &mut usize,
    ) -> Skipped {
        match self.simd {
            // SAFETY: `Simd::detect` found AVX-512BW on this CPU.
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => unsafe { self.skip_blocks_avx512(w, i, end, line_from) },
            // SAFETY: `Simd::detect` found AVX2 on this CPU.
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => unsafe { self.skip_blocks_avx2(w, i, end, line_from) },
            Simd::Baseline => self.skip_blocks_with(w, i, end, line_from, baseline_kit()),
        }
    }

    skip_blocks_compiled_for!(
        skip_blocks_avx512,
        "avx512bw",
        masks_avx512,
        clean_avx512,
        move_down_avx512
    );
    skip_blocks_compiled_for!(
        skip_blocks_avx2,
        "avx2",
        masks_avx2,
        clean_avx2,
        move_down_avx2
    );

    /// The block loop. Most blocks are clean (see [`clean`]): every CR
    /// and LF pairs up and no line starts with a dot, so [`clean_run`]
    /// only has to see whether a line could have grown too long. The
    /// others go through the three masks, which say exactly where each
    /// bare CR or LF, line end and line-start dot is.
    #[inline(always)]
    fn skip_blocks_with(
        &mut self,
        w: &mut Writer,
        mut i: usize,
        end: usize,
        line_from: &mut usize,
        kit: Kit<
            impl Fn(&[u8; 64]) -> Masks,
            impl Fn(&[u8; 65]) -> Clean,
            impl Fn(*mut u8, usize, usize, usize),
        >,
    ) -> Skipped {
        let mut exact = Exact {
            prev_cr: 0,
            line_start: u64::from(self.state == State::LineStart),
            lone_cr: 0,
            lone_lf: 0,
            long: false,
            lines: Lines {
                carried: self.line_len,
                from: *line_from,
                max: self.max_line,
            },
        };
        let mut dot_stop = false;
        while i + 64 <= end {
            // The clean run needs the octet at `i` to fit with the one
            // before it; after the run, the masks take the block it
            // stopped at.
            let first = w.buf[i];
            let seam_clean = (exact.prev_cr != 0) == (first == b'\n')
                && !(exact.line_start != 0 && first == b'.');
            if seam_clean {
                let lines = &mut exact.lines;
                let run = clean_run(
                    w,
                    i,
                    end,
                    lines.from.wrapping_sub(lines.carried),
                    lines.max,
                    &kit,
                );
                if run.next > i {
                    i = run.next;
                    match run.line {
                        RunLine::Unchanged => {}
                        RunLine::At(from) => {
                            lines.from = from;
                            lines.carried = 0;
                        }
                    }
                    exact.prev_cr = u64::from(w.buf[i - 1] == b'\r');
                    exact.line_start = u64::from(w.buf[i - 1] == b'\n');
                    if i + 64 > end {
                        break;
                    }
                }
            }
            let block: &[u8; 64] = w.buf[i..i + 64].try_into().expect("64 octets");
            if let Some(dot) = exact.settle((kit.masks)(block), i, 64) {
                i += dot;
                dot_stop = true;
                break;
            }
            i += 64;
        }
        // The last octets, fewer than a block, through the same masks.
        if !dot_stop && end - i >= SHORT_TAIL {
            match exact.settle(part_masks(w.buf, i, end, &kit.masks), i, end - i) {
                Some(dot) => {
                    i += dot;
                    dot_stop = true;
                }
                None => i = end,
            }
        }
        *line_from = exact.lines.from;
        self.line_len = exact.lines.carried;
        self.flags.bare_cr |= exact.lone_cr != 0;
        self.flags.bare_lf |= exact.lone_lf != 0;
        self.flags.long_line |= exact.long;
        self.state = if dot_stop || exact.line_start != 0 {
            State::LineStart
        } else {
            State::InLine
        };
        Skipped {
            next: i,
            cr_pending: !dot_stop && exact.prev_cr != 0,
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

/// One SIMD level's block move: moves `blocks` checked blocks at `at`
/// down by `gap` octets through a raw pointer, so calling it is `unsafe`.
///
/// It wraps a closure made inside the level's `skip_blocks_*` (closures
/// inherit its CPU features, so the move is inlined into the clean run;
/// a plain `unsafe fn` pointer was not, and the run lost a third of its
/// speed even on text that never moves a block). The closure is private
/// to this wrapper: the only way to call it is the `unsafe fn` below.
struct MoveDown<F>(F);

impl<F: Fn(*mut u8, usize, usize, usize)> MoveDown<F> {
    /// # Safety
    ///
    /// `f` must be one of `blocks::move_down*` for a CPU feature this CPU
    /// has (wrapped, not changed).
    #[inline(always)]
    unsafe fn new(f: F) -> Self {
        MoveDown(f)
    }

    /// # Safety
    ///
    /// The bounds of `blocks::move_down` hold.
    #[inline(always)]
    unsafe fn call(&self, base: *mut u8, at: usize, gap: usize, blocks: usize) {
        (self.0)(base, at, gap, blocks)
    }
}

/// One SIMD level's block functions (see `blocks`), made inside that
/// level's `skip_blocks_*`, so that they are compiled, and inlined, with
/// its CPU features. The checks are safe closures (they read references
/// and the level's feature is known); the move is an `unsafe fn`, so
/// every call of it must say why its raw pointer stays in bounds.
struct Kit<M, C, V> {
    masks: M,
    clean: C,
    move_down: MoveDown<V>,
}

/// The baseline level's [`Kit`]: SSE2 on x86_64, byte loops elsewhere.
#[allow(
    clippy::type_complexity,
    reason = "the same closure types `skip_blocks_with` takes"
)]
#[inline(always)]
fn baseline_kit() -> Kit<
    impl Fn(&[u8; 64]) -> Masks,
    impl Fn(&[u8; 65]) -> Clean,
    impl Fn(*mut u8, usize, usize, usize),
> {
    Kit {
        masks,
        clean,
        // SAFETY: the baseline move needs no CPU feature; it stays
        // `unsafe` to call through `MoveDown::call`.
        move_down: unsafe {
            MoveDown::new(|base, at, gap, blocks| move_down(base, at, gap, blocks))
        },
    }
}

/// Where [`DataScanner::skip_blocks`] stopped and why.
struct Skipped {
    /// The first octet not settled.
    next: usize,
    /// The octet before `next` is a CR not yet paired or flagged.
    cr_pending: bool,
}

/// Where [`clean_run`] stopped.
struct CleanRun {
    /// The first octet not settled: the start of a block that is not
    /// clean, or where too few octets are left.
    next: usize,
    /// What the run learned about where the current line starts.
    line: RunLine,
}

/// Where the current line starts after a clean run.
enum RunLine {
    /// The run ended no line.
    Unchanged,
    /// Here: after the last LF or the last dropped stuffed dot.
    At(usize),
}

/// Runs over clean blocks from `i` (whose seam with the octet before it
/// the caller has checked) and stops at the first block that is not
/// clean, where fewer than 65 octets are left, or where a line might be
/// longer than `max`. `line_start` is where the current line started,
/// counting octets from earlier calls (so it may wrap below zero).
///
/// A block that is not clean only because a line in it starts with a
/// stuffed dot does not stop the run: the dot is dropped here, the way
/// the byte path would, and the run goes on after it. Dot-stuffed text
/// has one every few lines, and leaving the run for each cost more than
/// the scan itself.
///
/// Why it is separate: this is the loop nearly every octet of a message
/// goes through. It keeps no line positions, only a bound below the start
/// of the current line (the start of the last block with a LF, or the
/// octet after the last dropped dot), which bounds every line that ends
/// after it; a line that might be over the limit by that bound is left to
/// the exact masks.
#[inline(always)]
fn clean_run(
    w: &mut Writer,
    mut i: usize,
    end: usize,
    line_start: usize,
    max: usize,
    kit: &Kit<
        impl Fn(&[u8; 64]) -> Masks,
        impl Fn(&[u8; 65]) -> Clean,
        impl Fn(*mut u8, usize, usize, usize),
    >,
) -> CleanRun {
    let mut bound = line_start;
    // Whether `bound` is the start of a block with a LF (else it is exact).
    let mut bound_is_block = false;
    let mut dropped_dot = false;
    // Settled octets move down by `gap` as they are read, so nothing may
    // be pending from before.
    w.flush(i);
    // At most `i`, as `out <= seg <= i` and they only move up together.
    let mut gap = w.seg - w.out;
    let buf = &mut *w.buf;
    // Never past the buffer: the unchecked windows below rely on it.
    let end = end.min(buf.len());
    while i + 65 <= end {
        // Four blocks at a time while all are clean: one branch for four.
        if end - i >= 257 {
            let last = end - 257;
            while i <= last {
                // SAFETY: `i <= last`, and `last + 257 = end <= buf.len()`,
                // so all four windows lie inside `buf`.
                let (a, b, c, d) = unsafe {
                    (
                        (kit.clean)(window_at(buf, i)),
                        (kit.clean)(window_at(buf, i + 64)),
                        (kit.clean)(window_at(buf, i + 128)),
                        (kit.clean)(window_at(buf, i + 192)),
                    )
                };
                let has_lf = (a.lf | b.lf | c.lf | d.lf) != 0;
                if (a.trouble | b.trouble | c.trouble | d.trouble) != 0
                    || (has_lf && (i + 256).wrapping_sub(bound) > max)
                {
                    // Keep the first half if it is clean: dot-stuffed text
                    // stops here every few hundred octets.
                    let has_lf = (a.lf | b.lf) != 0;
                    if (a.trouble | b.trouble) == 0
                        && !(has_lf && (i + 128).wrapping_sub(bound) > max)
                    {
                        bound = last_lf_block(i, [a.lf, b.lf], bound);
                        bound_is_block |= has_lf;
                        if gap > 0 {
                            // SAFETY: the first two windows are inside
                            // `buf`, and `gap <= i` (see above).
                            unsafe { kit.move_down.call(buf.as_mut_ptr(), i, gap, 2) };
                        }
                        i += 128;
                    }
                    break;
                }
                bound = last_lf_block(i, [a.lf, b.lf, c.lf, d.lf], bound);
                bound_is_block |= has_lf;
                if gap > 0 {
                    // SAFETY: all four windows are inside `buf`, and
                    // `gap <= i` (see above).
                    unsafe { kit.move_down.call(buf.as_mut_ptr(), i, gap, 4) };
                }
                i += 256;
            }
        }
        if i + 65 > end {
            break;
        }
        // SAFETY: `i + 65 <= end <= buf.len()`.
        let window = unsafe { window_at(buf, i) };
        let Clean { trouble: 0, lf } = (kit.clean)(window) else {
            let Some(dot) = stuffed_dot(window, &kit.masks) else {
                break;
            };
            let d = i + dot;
            // What follows the dot: CRLF makes it the terminator, a lone LF
            // a bare one; the byte path and the masks deal with those.
            let follows = buf[..end].get(d + 1..d + 3);
            if follows.is_none_or(|f| f[0] == b'\n' || f == b"\r\n") || d.wrapping_sub(bound) > max
            {
                break;
            }
            if gap > 0 {
                buf.copy_within(i..d, i - gap);
            }
            gap += 1;
            i = d + 1;
            bound = i;
            bound_is_block = false;
            dropped_dot = true;
            continue;
        };
        let has_lf = lf != 0;
        if has_lf && (i + 64).wrapping_sub(bound) > max {
            break;
        }
        if gap > 0 {
            // SAFETY: the block is inside `buf` as the window is, and
            // `gap <= i`.
            unsafe { kit.move_down.call(buf.as_mut_ptr(), i, gap, 1) };
        }
        bound = if has_lf { i } else { bound };
        bound_is_block |= has_lf;
        i += 64;
    }
    w.seg = i;
    w.out = i - gap;
    let line = if bound_is_block {
        // The block now sits `gap` lower (the next one may have overwritten
        // the end of the original).
        let block = w.buf[bound - gap..bound - gap + 64]
            .try_into()
            .expect("64 octets");
        RunLine::At(bound + 64 - (kit.masks)(block).lf.leading_zeros() as usize)
    } else if dropped_dot {
        RunLine::At(bound)
    } else {
        RunLine::Unchanged
    };
    CleanRun { next: i, line }
}

/// The start of the last of the clean blocks from `at` (with LF
/// summaries `lfs`) that holds a LF, else `otherwise`: where the clean
/// run's line bound moves when it passes them.
#[inline(always)]
fn last_lf_block<const N: usize>(at: usize, lfs: [u64; N], otherwise: usize) -> usize {
    match lfs.iter().rposition(|&lf| lf != 0) {
        Some(k) => at + 64 * k,
        None => otherwise,
    }
}

/// The 65 octets of `buf` from `at`, without a bounds check: the loops of
/// [`clean_run`] know their bounds once per run, and a check per block
/// cost them about a fifth of their speed.
///
/// # Safety
///
/// `at + 65 <= buf.len()`.
#[inline(always)]
unsafe fn window_at(buf: &[u8], at: usize) -> &[u8; 65] {
    debug_assert!(at + 65 <= buf.len());
    // SAFETY: the caller keeps the 65 octets inside `buf`.
    unsafe { &*buf.as_ptr().add(at).cast::<[u8; 65]>() }
}

/// For a block that is not clean: if its only trouble is lines that start
/// with a dot (every CR and LF pairs up), the offset in `window` of the
/// first such dot (1..=64).
#[inline(always)]
fn stuffed_dot(window: &[u8; 65], masks: &impl Fn(&[u8; 64]) -> Masks) -> Option<usize> {
    let t = troubles(window, masks(window[..64].try_into().expect("64 octets")));
    (t.unpaired == 0 && t.dot_lines != 0).then(|| t.dot_lines.trailing_zeros() as usize + 1)
}

/// The exact path's account of the blocks it has settled, carried from
/// one block to the next.
struct Exact {
    /// 1 when the octet before the next block is a CR not yet paired.
    prev_cr: u64,
    /// 1 when the next block starts a line.
    line_start: u64,
    lone_cr: u64,
    lone_lf: u64,
    long: bool,
    lines: Lines,
}

impl Exact {
    /// Settles the `n` octets (1..=64) at `at`, whose masks are `m` (with
    /// no bits at `n` or above), up to the first line-start dot, and
    /// returns that dot's offset if there is one.
    #[inline(always)]
    fn settle(&mut self, m: Masks, at: usize, n: usize) -> Option<usize> {
        let valid = u64::MAX >> (64 - n);
        let cr_before = (m.cr << 1) | self.prev_cr;
        let crlf = m.lf & cr_before;
        let dots = m.dot & ((crlf << 1) | self.line_start);
        // Only the octets before the first line-start dot are settled.
        let settled = if dots == 0 {
            valid
        } else {
            (1u64 << dots.trailing_zeros()) - 1
        };
        self.lone_cr |=
            ((m.cr & !(m.lf >> 1) & (valid >> 1)) | (self.prev_cr & !m.lf & 1)) & settled;
        self.lone_lf |= m.lf & !cr_before & settled;
        self.long |= self.lines.end_at(at + 1, crlf & settled);
        if dots != 0 {
            return Some(dots.trailing_zeros() as usize);
        }
        self.prev_cr = (m.cr >> (n - 1)) & 1;
        self.line_start = (crlf >> (n - 1)) & 1;
        None
    }
}

/// Line-length bookkeeping for the block loop.
struct Lines {
    /// Octets of the current line before `from` (from earlier calls).
    carried: usize,
    /// Where the current line started in this call.
    from: usize,
    max: usize,
}

impl Lines {
    /// Ends a line just before `base + k` for each bit `k` of `ends`, and
    /// says whether any of them was longer than the limit. Lines that
    /// start and end inside one block are under 64 octets, so only the
    /// first is checked unless the limit is that short (tests).
    #[inline(always)]
    fn end_at(&mut self, base: usize, ends: u64) -> bool {
        if ends == 0 {
            return false;
        }
        let first = base + ends.trailing_zeros() as usize;
        let mut long = self.carried + (first - self.from) > self.max;
        if self.max < 64 {
            let mut prev = first;
            let mut rest = ends & (ends - 1);
            while rest != 0 {
                let e = base + rest.trailing_zeros() as usize;
                long |= e - prev > self.max;
                prev = e;
                rest &= rest - 1;
            }
        }
        self.from = base + 63 - ends.leading_zeros() as usize;
        self.carried = 0;
        long
    }
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
