//! Reverse and forward paths (with ESMTP parameters after them), domains
//! and address literals.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::smtp::path;

fuzz_target!(|text: &str| {
    for allow_null in [false, true] {
        if let Ok((mailbox, rest)) = path::parse_path(text, allow_null) {
            assert!(rest.len() <= text.len());
            if mailbox.is_none() {
                assert!(allow_null, "<> only where allowed");
            }
        }
    }
    let _ = path::check_domain(text);
    let _ = path::check_address_literal(text);
});
