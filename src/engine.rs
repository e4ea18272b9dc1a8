//! The simple-mode knock engine (SPEC §2).
