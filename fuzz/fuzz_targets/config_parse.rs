//! Any text given to the config loader yields a config or positioned errors, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(errors) = gatehouse_config::parse(text, "fuzz.toml") {
            assert!(!errors.0.is_empty());
            let _ = errors.to_string();
        }
    }
});
