//! The body intake against the naive reference, fed at every fragment
//! size a socket might deliver, with spills, the size limit, failed
//! spills and pipelined commands after the terminator.

use std::rc::Rc;
use std::sync::Arc;

use super::*;
use crate::scan::naive::{self, SMUGGLING, TRICKY};
use crate::server::arena::ArenaPool;

/// Read sizes a socket may hand over (Seastar's parser tests use such a
/// list): every one must give the same message.
const FRAGMENTS: [usize; 7] = [1, 2, 3, 7, 64, 4096, 65536];
const HEADER: &[u8] = b"Received: from test\r\n";
/// The line limit these tests scan with (the tricky table's lines sit
/// around 20 octets).
const MAX_LINE: usize = 20;

/// What driving an intake produced.
#[derive(Debug, Default)]
struct Fed {
    /// Octets handed to the spool, in order.
    spooled: Vec<u8>,
    spills: usize,
    /// The largest spill.
    largest_spill: usize,
    /// Input octets the intake took.
    taken: usize,
    /// `Need::Done` came (else the input ran out first).
    done: bool,
}

/// Plays the connection: gives the intake at most `fragment` octets of
/// `input` per read, writes its spills (the `fail`-th one fails).
fn drive(intake: &mut Intake, input: &[u8], fragment: usize, fail: Option<usize>) -> Fed {
    let mut fed = Fed::default();
    loop {
        match intake.need() {
            Need::Done => {
                fed.done = true;
                return fed;
            }
            Need::Spill(octets) => {
                fed.spooled.extend_from_slice(octets);
                fed.largest_spill = fed.largest_spill.max(octets.len());
                let r = if fail == Some(fed.spills) {
                    Err(StoreError::Io(Arc::new(std::io::Error::other(
                        "disk on fire",
                    ))))
                } else {
                    Ok(())
                };
                fed.spills += 1;
                intake.spilled(r);
            }
            Need::Memory => panic!("these tests never run out of memory"),
            Need::Read(room) => {
                assert!(!room.is_empty(), "a read of nothing");
                let n = fragment.min(room.len()).min(input.len() - fed.taken);
                if n == 0 {
                    return fed;
                }
                room[..n].copy_from_slice(&input[fed.taken..fed.taken + n]);
                fed.taken += n;
                intake.received(n);
            }
        }
    }
}

fn limits(memory: usize) -> Limits {
    Limits {
        memory,
        max_size: 1 << 30,
    }
}

fn data(pool: &Rc<ArenaPool>, limits: Limits) -> Intake {
    Intake::data(pool.take(), HEADER, DataScanner::new(MAX_LINE), limits)
}

/// Feeds `body` followed by pipelined commands at every fragment size and
/// checks the result against the reference.
fn check_data(body: &[u8], memory: usize) {
    check_data_within(body, memory, usize::MAX);
}

/// [`check_data`] with a core memory budget; the largest spill.
fn check_data_within(body: &[u8], memory: usize, budget: usize) -> usize {
    let pool = ArenaPool::new(memory, 4, budget);
    let mut largest = 0;
    let pipelined = b"MAIL FROM:<a@b.test>\r\nQUIT\r\n";
    let input = [body, &pipelined[..]].concat();
    let want = naive::scan(&input, MAX_LINE);
    for fragment in FRAGMENTS {
        let mut intake = data(&pool, limits(memory));
        let fed = drive(&mut intake, &input, fragment, None);
        let what = format!("{:?} at fragment {fragment}", String::from_utf8_lossy(body));
        let Some(end) = want.end else {
            assert!(!fed.done, "{what}: ended without a terminator");
            assert_eq!(fed.taken, input.len(), "{what}: stopped reading");
            continue;
        };
        assert!(fed.done, "{what}: no end");
        let mut stored = fed.spooled.clone();
        stored.extend_from_slice(intake.stored());
        assert_eq!(stored, [HEADER, &want.body].concat(), "{what}");
        assert_eq!(intake.size(), want.body.len() as u64, "{what}");
        assert_eq!(intake.flags(), want.flags, "{what}");
        assert!(intake.failure().is_none());
        // What was read past the terminator, then what was never read:
        // together exactly the pipelined input, for the command buffer.
        let rest = [intake.leftover(), &input[fed.taken..]].concat();
        assert_eq!(rest, &input[end..], "{what}: pipelined octets");
        assert!(fed.largest_spill <= memory + READ_CHUNK, "{what}");
        assert!(pool.held() <= budget, "{what}: {} held", pool.held());
        largest = largest.max(fed.largest_spill);
    }
    largest
}

#[test]
fn a_tight_memory_budget_spills_sooner_and_loses_nothing() {
    let body = long_body(300_000);
    let budget = 24 << 10;
    let largest = check_data_within(&body, 256 << 10, budget);
    assert!(
        largest <= budget,
        "a spill of {largest} octets under a {budget} budget"
    );
    assert!(largest > 0, "the body was spilled");
}

#[test]
fn a_message_without_memory_waits_until_another_gives_it_back() {
    let pool = ArenaPool::new(256 << 10, 4, 24 << 10);
    let mut first = data(&pool, limits(256 << 10));
    let body = long_body(100_000);
    let fed = drive(&mut first, &body[..50_000], 4096, None);
    assert!(
        !fed.done && fed.taken == 50_000,
        "the first body is half read"
    );
    let mut second = data(&pool, limits(256 << 10));
    // Under pressure the second spills its trace header first.
    assert!(matches!(second.need(), Need::Spill(h) if h == HEADER));
    second.spilled(Ok(()));
    assert!(matches!(second.need(), Need::Memory), "no memory is left");
    drop(first);
    assert!(
        matches!(second.need(), Need::Read(_)),
        "the first gave it back"
    );
}

#[test]
fn tricky_and_smuggling_bodies_at_every_fragment_size() {
    for body in TRICKY {
        check_data(body, 4096);
    }
    for shape in SMUGGLING {
        // A smuggled end must not end the body; the real one does.
        check_data(&[shape, &b"\r\n.\r\n"[..]].concat(), 4096);
        check_data(shape, 4096);
    }
}

/// A body of `len` octets of dot-stuffed text with the tricky shapes in it.
fn long_body(len: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(len + 64);
    let mut k = 0;
    while body.len() < len {
        match k % 5 {
            0 => body.extend_from_slice(b"..a stuffed line\r\n"),
            1 => body.extend_from_slice(b"plain text line\r\n"),
            2 => body.extend_from_slice(b"a bare\nlf\r\n"),
            3 => body.extend_from_slice(b".\r.\r\n"),
            _ => body.extend_from_slice(b"x\r\n"),
        }
        k += 1;
    }
    body.extend_from_slice(b".\r\n");
    body
}

#[test]
fn bodies_over_the_memory_budget_spill_in_order() {
    for len in [4095, 4096, 9000, 70_000, 300_000] {
        let body = long_body(len);
        check_data(&body, 4096);
        let pool = ArenaPool::new(4096, 1, usize::MAX);
        let mut intake = data(&pool, limits(4096));
        let fed = drive(&mut intake, &body, 65536, None);
        assert!(fed.done);
        assert!(
            fed.spills >= len / (4096 + READ_CHUNK),
            "{len}: {} spills",
            fed.spills
        );
    }
}

#[test]
fn a_body_over_the_size_limit_is_counted_not_kept() {
    let pool = ArenaPool::new(4096, 1, usize::MAX);
    let body = long_body(50_000);
    let want = naive::scan(&body, MAX_LINE);
    for fragment in FRAGMENTS {
        let mut intake = data(
            &pool,
            Limits {
                memory: 4096,
                max_size: 10_000,
            },
        );
        let fed = drive(&mut intake, &body, fragment, None);
        assert!(fed.done, "the body is read to its end");
        assert_eq!(intake.size(), want.body.len() as u64);
        assert!(intake.stored().is_empty(), "nothing of it is kept");
        assert!(fed.spooled.len() < 10_000 + HEADER.len() + READ_CHUNK);
    }
}

#[test]
fn after_a_failed_spill_the_body_is_read_to_its_end_and_not_kept() {
    let pool = ArenaPool::new(4096, 1, usize::MAX);
    let body = long_body(100_000);
    for fragment in [7, 4096, 65536] {
        let mut intake = data(&pool, limits(4096));
        let fed = drive(&mut intake, &body, fragment, Some(0));
        assert!(fed.done);
        assert_eq!(fed.spills, 1, "no spill after the failed one");
        assert_eq!(fed.taken, body.len());
        assert!(matches!(intake.failure(), Some(StoreError::Io(_))));
    }
}

#[test]
fn bdat_chunks_take_exactly_their_octets_at_every_fragment_size() {
    let chunks: [&[u8]; 4] = [b"", b"a\r\n.\r\n", &[b'.'; 9000], &long_body(70_000)];
    let next_command = b"BDAT 0 LAST\r\n";
    for fragment in FRAGMENTS {
        let pool = ArenaPool::new(4096, 1, usize::MAX);
        let mut intake = Intake::chunks(pool.take(), HEADER, limits(4096));
        let mut spooled = Vec::new();
        for chunk in chunks {
            intake.chunk(chunk.len() as u64);
            let input = [chunk, &next_command[..]].concat();
            let fed = drive(&mut intake, &input, fragment, None);
            assert!(fed.done, "fragment {fragment}");
            assert_eq!(fed.taken, chunk.len(), "not one octet of the next command");
            spooled.extend_from_slice(&fed.spooled);
            assert!(intake.leftover().is_empty());
        }
        spooled.extend_from_slice(intake.stored());
        let want = [HEADER, &chunks.concat()].concat();
        assert_eq!(spooled.len(), want.len(), "fragment {fragment}");
        assert!(spooled == want, "fragment {fragment}: octets differ");
        assert_eq!(intake.size(), (want.len() - HEADER.len()) as u64);
    }
}

#[test]
fn a_dropped_intake_gives_its_arena_back() {
    let pool = ArenaPool::new(4096, 2, usize::MAX);
    let mut intake = data(&pool, limits(4096));
    let _ = drive(&mut intake, b"half a body", 3, None);
    assert_eq!(pool.free(), 0);
    drop(intake);
    assert_eq!(pool.free(), 1);
}

#[test]
fn headers_go_in_after_the_trace_header_of_a_message_never_spilled() {
    let added = b"X-Policy: one\r\nX-Spam: Yes\r\n";
    let body = b"Subject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n";
    for fragment in FRAGMENTS {
        let pool = ArenaPool::new(4096, 4, usize::MAX);
        let mut intake = data(&pool, limits(4096));
        let fed = drive(&mut intake, body, fragment, None);
        assert!(fed.done && fed.spills == 0);
        assert!(intake.insert_after_head(added));
        let want = [HEADER, &added[..], b"Subject: hi\r\n\r\nbody\r\n"].concat();
        assert_eq!(intake.stored(), want, "fragment {fragment}");
        // The pipelined command after the terminator is still there.
        let rest = [intake.leftover(), &body[fed.taken..]].concat();
        assert_eq!(rest, b"QUIT\r\n", "fragment {fragment}");
    }
    // BDAT too.
    let pool = ArenaPool::new(4096, 4, usize::MAX);
    let mut intake = Intake::chunks(pool.take(), HEADER, limits(4096));
    intake.chunk(5);
    drive(&mut intake, b"hello", 2, None);
    assert!(intake.insert_after_head(added));
    assert_eq!(intake.stored(), [HEADER, &added[..], b"hello"].concat());
}

#[test]
fn a_spilled_message_takes_no_headers_after_its_trace_header() {
    let pool = ArenaPool::new(4096, 4, usize::MAX);
    let mut intake = data(&pool, limits(4096));
    let body = [long_body(20_000), b".\r\n".to_vec()].concat();
    let fed = drive(&mut intake, &body, 4096, None);
    assert!(fed.done && fed.spills > 0);
    let before = intake.stored().to_vec();
    assert!(!intake.insert_after_head(b"X-Late: no\r\n"));
    assert_eq!(intake.stored(), before, "nothing changed");
}
