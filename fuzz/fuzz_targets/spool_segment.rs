//! Arbitrary bytes as a spool segment: walking it (what `sluice spool`
//! and the drain read) and recovering it (what `serve` does at start-up)
//! must report problems, never panic, and recovery must be idempotent: a
//! second recovery cuts nothing and finds the same messages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::spool::recover::recover_core;
use sluice::spool::walk::{segment_path, walk_core, Event};

fn messages(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let _ = walk_core(dir, |e| {
        if let Event::Message(m) = e {
            found.push(format!("{m:?}"));
        }
        Ok(())
    });
    found
}

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(segment_path(dir.path(), 1), data).unwrap();
    let _ = messages(dir.path());
    if let Ok(first) = recover_core(dir.path()) {
        let after = messages(dir.path());
        let second = recover_core(dir.path()).expect("a recovered spool recovers");
        assert_eq!(second.dropped_bytes, 0, "the second recovery cut more");
        assert_eq!(second.messages, first.messages);
        assert_eq!(messages(dir.path()), after);
    }
});
