//! The advanced list (docs/behaviour.md §1.3, §1.4) through `config::parse_lists`, next to the example
//! simple list so that the checks across both lists run too.
//!
//! Checks: no panic; every diagnostic names one of the two files and a line that exists; no
//! field of the input that holds a character absent from every message template appears in a
//! message (secrets never reach a message); diagnostics come sorted; a list without errors
//! obeys every rule of docs/behaviour.md §1.4 and reads back the same from its canonical form.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // As `load` reads a file: no byte-order mark, invalid UTF-8 as U+FFFD.
    let text = portknock::config::text(data);
    common::check(common::EXAMPLE_SIMPLE, &text);
});
