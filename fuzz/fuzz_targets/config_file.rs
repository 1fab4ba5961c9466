//! Arbitrary text as the `--config` TOML file: either a configuration or
//! an error naming what is wrong, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::config::ServeArgs;

fuzz_target!(|text: &str| {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    std::fs::write(&path, text).unwrap();
    let args = ServeArgs {
        config: Some(path),
        ..Default::default()
    };
    if let Err(e) = args.resolve() {
        assert!(!e.to_string().is_empty());
    }
});
