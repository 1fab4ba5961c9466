//! The body intake: one message's DATA or BDAT octets into its arena,
//! without I/O.
//!
//! Why it exists: receiving a body is where memory, the size limit, the
//! scanner and the spool meet, and where a bug loses or smuggles octets.
//! Here it is a plain state machine that owns the message's [`Arena`] and
//! answers one question again and again: what does it need next?
//!
//! - [`Need::Read`]: fill (part of) this slice with input octets, then
//!   call [`Intake::received`];
//! - [`Need::Spill`]: hand these stored octets to the spool as a chunk
//!   record, then call [`Intake::spilled`] with the outcome;
//! - [`Need::Memory`]: the core is at its memory budget and this message
//!   holds nothing it could spill: wait for memory, then ask again;
//! - [`Need::Done`]: the body (DATA) or the chunk (BDAT) is complete. For
//!   DATA, [`Intake::leftover`] holds the octets read after the
//!   terminator: pipelined commands, which go back to the command buffer.
//!
//! The connection only moves octets (from its command buffer first, then
//! from the socket) and writes spills; every decision is here and is unit
//! tested at every fragment size without a socket.
//!
//! Arena layout, DATA: `[stored: trace header + body | gap | unscanned
//! input | room for the next read]`. The scanner unstuffs in place, so the
//! stored body ends at or before the scanned input (the gap is the dropped
//! dots and a held-back CR). BDAT: `[stored | room]`, no scanning.
//!
//! Reads ask for room in proportion to what the message has shown so far
//! (at least [`MIN_READ`], at most [`READ_CHUNK`]), so the arena grows
//! with the message. When the core's memory budget does not let the
//! arena grow, the intake spills what it stores sooner (in smaller
//! chunks) and reads into the room it already holds.

use super::arena::{arena_size, Arena, MIN_READ, READ_CHUNK};
use crate::scan::{BodyFlags, DataScanner};
use crate::spool::StoreError;

/// What the intake needs next.
#[derive(Debug)]
pub enum Need<'a> {
    /// Put up to `len()` input octets at the start of this slice.
    Read(&'a mut [u8]),
    /// Write these octets to the spool as a chunk record.
    Spill(&'a [u8]),
    /// The core's message memory is used up: wait until some comes back.
    Memory,
    /// The body (DATA) or the current chunk (BDAT) is complete.
    Done,
}

/// The limits a body is received under.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Stored octets beyond this are spilled to the spool.
    pub memory: usize,
    /// Body octets beyond this make the message too big (nothing more is
    /// kept; the session refuses it at the end).
    pub max_size: u64,
}

/// How the octets arrive.
enum Mode {
    /// DATA: scanned up to `<CRLF>.<CRLF>`.
    Data {
        scanner: DataScanner,
        /// Input is scanned up to here...
        scanned: usize,
        /// ...and read up to here.
        filled: usize,
        /// The terminator was seen.
        done: bool,
    },
    /// BDAT: counted; `left` octets of the current chunk still to come.
    Chunks { left: u64 },
}

/// One message's body on its way into the arena.
pub struct Intake {
    arena: Arena,
    limits: Limits,
    mode: Mode,
    /// The stored octets (trace header and body) are `arena[..stored]`.
    stored: usize,
    /// Body octets received (after unstuffing), including any dropped for
    /// being over the size limit; the trace header does not count.
    size: u64,
    /// Over the size limit: octets are counted, not kept.
    oversized: bool,
    /// A spill failed: octets are read and dropped, the commit fails.
    failed: Option<StoreError>,
    /// The trace header's length while it is still in the arena (nothing
    /// spilled yet); headers can be added after it until then.
    head: Option<usize>,
}

impl Intake {
    /// A DATA body whose stored form starts with `header`.
    pub fn data(arena: Arena, header: &[u8], scanner: DataScanner, limits: Limits) -> Intake {
        let mut scanner = scanner;
        scanner.reset();
        Intake::new(
            arena,
            header,
            limits,
            Mode::Data {
                scanner,
                scanned: header.len(),
                filled: header.len(),
                done: false,
            },
        )
    }

    /// A BDAT message whose stored form starts with `header`; call
    /// [`Intake::chunk`] for each chunk.
    pub fn chunks(arena: Arena, header: &[u8], limits: Limits) -> Intake {
        Intake::new(arena, header, limits, Mode::Chunks { left: 0 })
    }

    fn new(mut arena: Arena, header: &[u8], limits: Limits, mode: Mode) -> Intake {
        assert!(
            arena.size() >= arena_size(limits.memory) && header.len() <= READ_CHUNK,
            "the arena is smaller than the message memory budget needs"
        );
        arena.reach(header.len()).copy_from_slice(header);
        Intake {
            arena,
            limits,
            mode,
            stored: header.len(),
            size: 0,
            oversized: false,
            failed: None,
            head: Some(header.len()),
        }
    }

    /// Starts a BDAT chunk of `size` octets.
    pub fn chunk(&mut self, size: u64) {
        if let Mode::Chunks { left } = &mut self.mode {
            *left = size;
        }
    }

    /// What is needed next.
    pub fn need(&mut self) -> Need<'_> {
        let keeping = !self.oversized && self.failed.is_none();
        match &mut self.mode {
            Mode::Data {
                scanner,
                scanned,
                filled,
                done,
            } => {
                if *scanned < *filled && !*done {
                    let p = scanner.scan(&mut self.arena[..*filled], self.stored, *scanned);
                    self.size += (p.out - self.stored) as u64;
                    self.stored = p.out;
                    *scanned = p.consumed;
                    *done = p.done;
                    if self.size > self.limits.max_size {
                        self.oversized = true;
                    }
                    if self.oversized {
                        // Nothing of a message that is too big is kept.
                        self.stored = 0;
                        self.head = None;
                    }
                }
                if *done {
                    return Need::Done;
                }
                // The scanner consumed all input: `scanned == filled`.
                let want = read_room(*filled, self.arena.capacity());
                let fits = self.arena.size() - *filled >= want;
                let affordable = self.arena.can_grow_freely(*filled + want);
                if self.stored >= self.limits.memory || !fits || !affordable {
                    if self.stored > 0 && keeping && !self.oversized {
                        return Need::Spill(&self.arena[..self.stored]);
                    }
                    self.slide();
                }
                let Mode::Data { filled, .. } = self.mode else {
                    unreachable!("still DATA")
                };
                let want = read_room(filled, self.arena.capacity());
                match self.room_for(filled, want) {
                    Some(end) => Need::Read(&mut self.arena.reach(end)[filled..]),
                    None => Need::Memory,
                }
            }
            Mode::Chunks { left } => {
                if *left == 0 {
                    return Need::Done;
                }
                let left = usize::try_from(*left).unwrap_or(usize::MAX);
                let want = read_room(self.stored, self.arena.capacity()).min(left);
                let affordable = self.arena.can_grow_freely(self.stored + want);
                if self.stored >= self.limits.memory || (!affordable && self.stored > 0) {
                    if keeping {
                        return Need::Spill(&self.arena[..self.stored]);
                    }
                    self.stored = 0;
                    self.head = None;
                }
                let at = self.stored;
                match self.room_for(at, want) {
                    Some(end) => Need::Read(&mut self.arena.reach(end)[at..]),
                    None => Need::Memory,
                }
            }
        }
    }

    /// Where a read at `at` that would like `want` octets of room may end:
    /// all of them while the core grows freely, else the room the arena
    /// already holds past `at` (if it is worth a read), else a minimal
    /// read within the whole budget; `None` when the core has no memory
    /// left for this message at all.
    fn room_for(&self, at: usize, want: usize) -> Option<usize> {
        if self.arena.can_grow_freely(at + want) {
            return Some(at + want);
        }
        let least = want.min(MIN_READ);
        let held = self.arena.capacity().saturating_sub(at).min(want);
        if held >= least / 4 && held > 0 {
            return Some(at + held);
        }
        self.arena.can_reach(at + least).then_some(at + least)
    }

    /// `n` octets were put at the start of the last [`Need::Read`] slice.
    pub fn received(&mut self, n: usize) {
        match &mut self.mode {
            Mode::Data { filled, .. } => *filled += n,
            Mode::Chunks { left } => {
                debug_assert!(n as u64 <= *left);
                *left -= n as u64;
                self.stored += n;
                self.size += n as u64;
                if self.size > self.limits.max_size {
                    self.oversized = true;
                }
            }
        }
    }

    /// The last [`Need::Spill`] was written (or failed with `result`).
    pub fn spilled(&mut self, result: Result<(), StoreError>) {
        if let Err(e) = result {
            self.failed = Some(e);
        }
        self.slide();
    }

    /// Forgets the stored octets (they were spilled, or are not kept) and
    /// moves the input to the start of the arena.
    fn slide(&mut self) {
        if let Mode::Data {
            scanned, filled, ..
        } = &mut self.mode
        {
            // Only the gap between the body and the input must survive:
            // its length, not its contents (the scanner writes into it).
            let gap = *scanned - self.stored;
            debug_assert_eq!(scanned, filled, "spills happen between reads");
            *scanned = gap;
            *filled = gap;
        }
        self.stored = 0;
        self.head = None;
    }

    /// The whole stored message (trace header included), when it was
    /// never spilled.
    pub fn stored_whole(&self) -> Option<&[u8]> {
        self.head.map(|_| &self.arena[..self.stored])
    }

    /// The stored message after its trace header (and anything inserted
    /// after it), when it was never spilled.
    pub fn after_head(&self) -> Option<&[u8]> {
        self.head.map(|h| &self.arena[h..self.stored])
    }

    /// Replaces what follows the trace header with `rest`, if the
    /// message was never spilled and `rest` fits the arena; `false`
    /// otherwise (nothing changes). Octets read past a DATA terminator
    /// move along.
    pub fn replace_after_head(&mut self, rest: &[u8]) -> bool {
        let Some(head) = self.head else {
            return false;
        };
        let leftover = self.leftover().to_vec();
        let end = head + rest.len() + leftover.len();
        if end > self.arena.size() {
            return false;
        }
        let buf = self.arena.reach(end);
        buf[head..head + rest.len()].copy_from_slice(rest);
        buf[head + rest.len()..end].copy_from_slice(&leftover);
        self.stored = head + rest.len();
        if let Mode::Data {
            scanned, filled, ..
        } = &mut self.mode
        {
            *scanned = self.stored;
            *filled = end;
        }
        true
    }

    /// Adds `lines` (whole header lines with CRLF) right after the trace
    /// header of a finished message, if it was never spilled and they fit
    /// the arena; `false` otherwise (nothing changes).
    pub fn insert_after_head(&mut self, lines: &[u8]) -> bool {
        let Some(head) = self.head else {
            return false;
        };
        let end = match &self.mode {
            Mode::Data { filled, .. } => (*filled).max(self.stored),
            Mode::Chunks { .. } => self.stored,
        };
        let grown = end + lines.len();
        if grown > self.arena.size() {
            return false;
        }
        let buf = self.arena.reach(grown);
        buf.copy_within(head..end, head + lines.len());
        buf[head..head + lines.len()].copy_from_slice(lines);
        self.stored += lines.len();
        if let Mode::Data {
            scanned, filled, ..
        } = &mut self.mode
        {
            *scanned += lines.len();
            *filled += lines.len();
        }
        self.head = Some(head + lines.len());
        true
    }

    /// DATA: the octets read after the terminator (pipelined commands).
    pub fn leftover(&self) -> &[u8] {
        match &self.mode {
            Mode::Data {
                scanned,
                filled,
                done: true,
                ..
            } => &self.arena[*scanned..*filled],
            _ => &[],
        }
    }

    /// Body octets received so far (after unstuffing, without the trace
    /// header), including any over the size limit.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// What the scanner noticed about a DATA body.
    pub fn flags(&self) -> BodyFlags {
        match &self.mode {
            Mode::Data { scanner, .. } => scanner.flags(),
            Mode::Chunks { .. } => BodyFlags::default(),
        }
    }

    /// The stored octets not yet spilled: the commit record carries them.
    pub fn stored(&self) -> &[u8] {
        &self.arena[..self.stored]
    }

    /// Why a spill failed, if one did (the message cannot be committed).
    pub fn failure(&self) -> Option<&StoreError> {
        self.failed.as_ref()
    }
}

/// The room a read asks for once `filled` octets sit in an arena of
/// `capacity`: as much again, or what the arena already holds past them
/// (a reused or once-grown arena reads at full size after a spill),
/// within [`MIN_READ`]..=[`READ_CHUNK`].
fn read_room(filled: usize, capacity: usize) -> usize {
    filled
        .max(capacity.saturating_sub(filled))
        .clamp(MIN_READ, READ_CHUNK)
}

#[cfg(test)]
#[path = "intake_tests.rs"]
mod tests;
