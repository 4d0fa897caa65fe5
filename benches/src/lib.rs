//! Cairn benchmark harness: criterion benches in `benches/`, the end-to-end run in `src/bin/e2e.rs`.
