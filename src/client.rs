//! The client side: simple knocks and OTP datagrams (SPEC §5).
