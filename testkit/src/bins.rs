//! The workspace's binaries as tests run them: built by `cargo build --release --workspace
//! --bins` into the same target directory as the test itself.
//!
//! A test can use `env!("CARGO_BIN_EXE_name")` only for its own package's binaries; these
//! helpers find the others (a node test running the `cairn` CLI, say).

use std::path::PathBuf;

/// The directory the running test's binaries are built into: `target/<profile>/` (the test
/// itself runs from `target/<profile>/deps/`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the running test's path");
    let dir = exe.parent().expect("the test binary lies in a directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().unwrap_or(dir).to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// The workspace binary `name`, next to the running test's target directory. Panics, saying how
/// to build it, when it is not there.
#[track_caller]
pub fn sibling(name: &str) -> PathBuf {
    let path = target_dir().join(name);
    assert!(
        path.is_file(),
        "{} not found: this test runs the `{name}` binary; build it first with \
         `cargo build --release --workspace --bins` (./scripts/test does)",
        path.display()
    );
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_dir_holds_this_test() {
        let exe = std::env::current_exe().unwrap();
        assert!(exe.starts_with(target_dir()));
    }

    #[test]
    #[should_panic(expected = "cargo build --release --workspace --bins")]
    fn a_missing_binary_says_how_to_build_it() {
        sibling("no-such-cairn-binary");
    }
}
