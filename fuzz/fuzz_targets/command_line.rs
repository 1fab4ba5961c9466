//! One SMTP command line, as the session gets it (without its CRLF).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::smtp::command;

fuzz_target!(|line: &[u8]| {
    match command::parse(line) {
        Ok(_) => {}
        Err(e) => {
            // Every refusal renders as one well-formed reply line.
            let mut out = Vec::new();
            e.write_reply(&mut out);
            assert!(out.len() <= 512 && out.ends_with(b"\r\n"), "{out:?}");
            assert!(matches!(out[0], b'5'), "{out:?}");
        }
    }
});
