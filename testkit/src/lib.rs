//! # cairn-testkit: helpers every Cairn test suite shares
//!
//! * [`data`]: deterministic pseudo-random bytes (a xorshift generator), so a failing test
//!   shows the same bytes on every run.
//! * [`process`]: guards that kill a test's processes when it ends, a panicking test included.
//! * [`wait`]: waiting for a condition, with a deadline that fails the test instead of hanging.
//! * [`bins`]: finding the workspace's binaries (`cairn`, `cairn-node`, ...) next to a test.
//!
//! Deliberately light: no RocksDB, libp2p, quinn or tokio, so any crate's tests can use it
//! without building the network stack.

pub mod bins;
pub mod data;
pub mod process;
pub mod wait;
