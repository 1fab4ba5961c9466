//! PROXY protocol v1 and v2 headers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::proxy::{self, Header};

fuzz_target!(|data: &[u8]| {
    match proxy::parse(data) {
        Header::Valid { len, .. } => assert!(len > 0 && len <= data.len()),
        Header::Incomplete => {
            // More input can only complete it or show it broken: a prefix
            // of an incomplete header is incomplete too.
            for cut in 0..data.len() {
                assert!(
                    !matches!(proxy::parse(&data[..cut]), Header::Valid { .. }),
                    "a prefix of an incomplete header was valid"
                );
            }
        }
        Header::Invalid(why) => assert!(!why.is_empty()),
    }
});
