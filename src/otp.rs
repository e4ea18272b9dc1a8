//! One-time passwords of advanced mode (SPEC §3).
