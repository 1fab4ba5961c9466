//! The command line reader fed input in pieces: the first octet picks the
//! piece size, the second the line limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::scan::{Line, LineReader};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let piece = usize::from(data[0]).max(1);
    let limit = usize::from(data[1]).max(3);
    let input = &data[2..];
    let mut reader = LineReader::new(limit);
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    while fed < input.len() {
        let end = (fed + piece).min(input.len());
        buf.extend_from_slice(&input[fed..end]);
        fed = end;
        loop {
            match reader.next(&buf) {
                Line::Complete {
                    len,
                    consumed,
                    bare_lf,
                } => {
                    assert!(len < consumed && consumed <= buf.len());
                    assert!(len <= limit, "a line over the limit came out whole");
                    assert_eq!(buf[consumed - 1], b'\n');
                    assert_eq!(bare_lf, consumed - len == 1);
                    buf.drain(..consumed);
                }
                Line::TooLong { consumed } => {
                    assert!(consumed > 0 && consumed <= buf.len());
                    buf.drain(..consumed);
                }
                Line::Incomplete { consumed } => {
                    assert!(consumed <= buf.len());
                    buf.drain(..consumed);
                    break;
                }
            }
        }
    }
});
