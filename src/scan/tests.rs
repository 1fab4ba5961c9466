//! The DATA scanner against the naive reference: tables of tricky bodies,
//! every split point, and random bodies cut at random places.

use super::differential::{check, stream_with, MAX_LINE};
use super::naive::{self, Reference, SMUGGLING, TRICKY};
use super::DataScanner;
use proptest::prelude::*;

/// Feeds `input` to a scanner in pieces ending at `cuts` (every SIMD
/// level, which must agree).
fn stream(input: &[u8], cuts: &[usize], flush_every: Option<usize>) -> Reference {
    stream_with(input, cuts, flush_every, MAX_LINE)
}

#[test]
fn tricky_bodies_match_reference_whole() {
    for input in TRICKY {
        check(input, &[]);
    }
}

#[test]
fn tricky_bodies_match_reference_at_every_split() {
    for input in TRICKY {
        for a in 0..=input.len() {
            check(input, &[a]);
            for b in a..=input.len() {
                check(input, &[a, b]);
            }
        }
    }
}

#[test]
fn every_byte_a_separate_read() {
    for input in TRICKY {
        let cuts: Vec<usize> = (1..input.len()).collect();
        check(input, &cuts);
    }
}

#[test]
fn terminator_and_stuffed_dot_split_at_every_offset_with_padding() {
    for pad in 0..40 {
        let mut input = vec![b'x'; pad];
        input.extend_from_slice(b"\r\n..x\r\n.\r\nQUIT\r\n");
        for cut in 0..=input.len() {
            let got = stream(&input, &[cut], None);
            let mut body = vec![b'x'; pad];
            body.extend_from_slice(b"\r\n.x\r\n");
            assert_eq!(got.body, body, "pad {pad} cut {cut}");
            assert_eq!(got.end, Some(input.len() - 6), "pad {pad} cut {cut}");
            assert_eq!(got.flags.long_line, pad + 2 > MAX_LINE, "pad {pad}");
            assert!(!got.flags.bare_cr && !got.flags.bare_lf);
        }
    }
}

#[test]
fn pipelined_command_after_terminator_is_left_alone() {
    let mut buf = b"hi\r\n.\r\nMAIL FROM:<a@b>\r\n".to_vec();
    let p = DataScanner::new(1000).scan(&mut buf, 0, 0);
    assert!(p.done);
    assert_eq!(&buf[..p.out], b"hi\r\n");
    assert_eq!(&buf[p.consumed..], b"MAIL FROM:<a@b>\r\n");
}

#[test]
fn smuggling_shapes_do_not_end_the_body() {
    for &input in SMUGGLING {
        let mut buf = input.to_vec();
        let mut s = DataScanner::new(1000);
        let p = s.scan(&mut buf, 0, 0);
        assert!(!p.done, "{input:?} ended the body");
        assert!(
            s.flags().bare_lf || s.flags().bare_cr,
            "{input:?} not flagged"
        );
    }
}

#[test]
fn long_line_limit_counts_crlf_but_not_the_stuffed_dot() {
    let mut s = DataScanner::new(10);
    let mut ok = b"..1234567\r\n.\r\n".to_vec(); // 10 octets after unstuffing
    assert!(s.scan(&mut ok, 0, 0).done);
    assert!(!s.flags().long_line);
    s.reset();
    let mut long = b"123456789\r\n.\r\n".to_vec(); // 11 octets
    assert!(s.scan(&mut long, 0, 0).done);
    assert!(s.flags().long_line);
}

/// Random bodies biased toward the bytes that matter.
fn body_strategy() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => Just(b'.'),
        4 => Just(b'\r'),
        4 => Just(b'\n'),
        3 => Just(b'a'),
        1 => any::<u8>(),
    ];
    let chunk = prop_oneof![
        3 => proptest::collection::vec(byte, 0..4),
        1 => Just(b"\r\n".to_vec()),
        1 => Just(b"\r\n.".to_vec()),
        1 => Just(b"\r\n..".to_vec()),
        1 => Just(vec![b'z'; 25]),
    ];
    proptest::collection::vec(chunk, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn random_bodies_split_randomly_match_reference(
        body in body_strategy(),
        terminate in any::<bool>(),
        cuts in proptest::collection::vec(0usize..200, 0..8),
    ) {
        let mut input = body;
        if terminate {
            input.extend_from_slice(b"\r\n.\r\nRSET\r\n");
        }
        check(&input, &cuts);
    }
}

/// `len` octets of text that move what follows to every offset: a CRLF
/// after every `line`-th octet, with `bare_lf` every ninth octet a bare
/// LF instead, and a CRLF at the end so that what follows starts a line.
fn filler(len: usize, line: usize, bare_lf: bool) -> Vec<u8> {
    let mut text = Vec::new();
    for k in 0..len {
        text.push(if bare_lf && k % 9 == 8 {
            b'\n'
        } else {
            b'a' + (k % 7) as u8
        });
        if k % line == line - 1 {
            text.extend_from_slice(b"\r\n");
        }
    }
    text.extend_from_slice(b"\r\n");
    text
}

/// The block path only runs on 64 octets or more: put every tricky body
/// behind text of every length so each pattern meets every alignment and
/// block boundary, whole and cut.
#[test]
fn tricky_bodies_at_every_alignment_behind_long_text() {
    for input in TRICKY {
        for pad in 0..140 {
            let mut body = filler(pad, 17, true);
            body.extend_from_slice(input);
            check(&body, &[]);
            check(&body, &[pad / 2 + 1, pad + 2]);
        }
    }
}

/// Every tricky body behind CRLF text with nothing for the clean run to
/// stop at, of every length over four blocks, with and without a stuffed
/// dot before it (after one, the run moves every block it passes): the
/// run meets each pattern at every offset of its four-block step.
#[test]
fn tricky_bodies_at_every_offset_behind_clean_text() {
    for dotted in [false, true] {
        for input in TRICKY {
            for pad in 0..260 {
                let mut body = if dotted {
                    b"..x\r\n".to_vec()
                } else {
                    Vec::new()
                };
                body.extend(filler(pad, 11, false));
                body.extend_from_slice(input);
                check(&body, &[]);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn long_random_bodies_match_reference(
        body in proptest::collection::vec(body_strategy(), 1..12).prop_map(|v| v.concat()),
        cuts in proptest::collection::vec(0usize..3000, 0..4),
    ) {
        let mut input = body;
        input.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
        check(&input, &cuts);
    }
}

/// A lone CR or LF, or a CRLF, at every offset of a long dot-free body:
/// the block path must see each across block boundaries.
#[test]
fn line_end_shapes_at_every_offset_in_dot_free_text() {
    for shape in [&b"\r"[..], b"\n", b"\r\n", b"\r\r\n", b"\n\r"] {
        for pos in 0..200 {
            let mut body = vec![b'a'; pos];
            body.extend_from_slice(shape);
            body.extend(std::iter::repeat_n(b'b', 230));
            body.extend_from_slice(b"\r\n.\r\n");
            check(&body, &[]);
        }
    }
}

/// A dot-stuffed line exactly at a line limit (over it if the dot were
/// counted), at every offset of a long body, so it meets every position in
/// a block: first line carried in, a line inside, the last line.
#[test]
fn stuffed_line_at_the_limit_at_every_offset() {
    for limit in [MAX_LINE, 70] {
        let mut line = b"..".to_vec();
        line.extend(std::iter::repeat_n(b'x', limit - 3));
        line.extend_from_slice(b"\r\n"); // `limit` octets once unstuffed
        for pad in 0..200 {
            let mut body = filler(pad, 13, false);
            for _ in 0..3 {
                body.extend_from_slice(&line);
                body.extend_from_slice(b"short\r\n");
            }
            // Room for the block path, in lines short enough that only a
            // miscounted dotted line could set the long-line flag.
            for _ in 0..20 {
                body.extend_from_slice(b"zzzzzzzz\r\n");
            }
            body.extend_from_slice(b".\r\n");
            let reference = naive::scan(&body, limit);
            assert!(
                !reference.flags.long_line,
                "the test body itself is within {limit}"
            );
            check(&body, &[]);
        }
    }
}

/// A line exactly at a line limit and one octet over it, behind short
/// lines that put it at every offset of a block, with and without stuffed
/// dots before (which make the block path move what it reads), and with
/// the terminator right behind it or a few clean blocks later. The block
/// path keeps only a bound on where lines start while blocks are clean,
/// so this is where an off-by-one in its hand-over to the exact masks
/// would show.
#[test]
fn lines_at_and_over_the_limit_at_every_offset() {
    for (limit, dots) in [(70, 0), (1000, 0), (70, 3), (1000, 3)] {
        for (len, after) in [limit, limit + 1]
            .into_iter()
            .flat_map(|len| [(len, 0), (len, 10)])
        {
            let mut line = vec![b'y'; len - 2];
            line.extend_from_slice(b"\r\n");
            // Every offset of a block, and for the long limit (the only one
            // the four-block step of the clean run takes) of four.
            for pad in 0..if limit > 256 { 270 } else { 130 } {
                let mut body = b"..dotted\r\n".repeat(dots);
                body.extend(filler(pad, 11, false));
                body.extend_from_slice(&line);
                // Right behind the line, or after a few clean blocks.
                for _ in 0..after {
                    body.extend_from_slice(b"zzzzzzzz\r\n");
                }
                body.extend_from_slice(b".\r\n");
                let want = naive::scan(&body, limit);
                assert_eq!(want.flags.long_line, len > limit, "the test body itself");
                let got = stream_with(&body, &[], None, limit);
                assert_eq!(got, want, "line of {len} with limit {limit}, pad {pad}");
                check(&body, &[pad + 1]);
            }
        }
    }
}
