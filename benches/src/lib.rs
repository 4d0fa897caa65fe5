//! Cairn benchmark harness.
