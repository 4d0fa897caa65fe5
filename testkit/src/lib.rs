//! # cairn-testkit: helpers every Cairn test suite shares
//!
//! * [`data`]: deterministic pseudo-random bytes (a xorshift generator), so a failing test
//!   shows the same bytes on every run.

pub mod data;
