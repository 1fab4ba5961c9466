//! The DATA scanner against the naive reference: the first octet says how
//! many cut points follow (two octets each), the rest is the body. Every
//! SIMD level the CPU has, three line limits, with and without the buffer
//! sliding between reads; any difference panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::scan::differential;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 8).min(rest.len() / 2);
    let (cut_bytes, body) = rest.split_at(n * 2);
    let cuts: Vec<usize> = cut_bytes
        .chunks(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (body.len() + 1))
        .collect();
    differential::check(body, &cuts);
});
