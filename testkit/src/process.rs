//! Processes a test starts, and making sure none of them outlives the test, even one that
//! panics half-way: a guard that kills a child it owns, and a guard that kills every process
//! working in a test's temporary directory, however it was started (through a library that
//! keeps the handles to itself, restarted under a new pid, paused with SIGSTOP).
//!
//! Linux only (it reads `/proc`), like the network tests that use it.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Child;

/// Sends SIGKILL to `pid` (a paused process dies of it too). Errors, such as the process being
/// gone already, are ignored.
pub fn kill(pid: u32) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

/// Every process but this one whose command line names `dir` or a path inside it, e.g. a node
/// started with `--data-dir DIR/node-0`.
pub fn pids_mentioning(dir: &Path) -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| mentions(&cmdline, dir.as_os_str()))
        })
        .collect()
}

/// Whether one of the NUL-separated arguments in `cmdline` is `dir` or has `dir/` in it.
fn mentions(cmdline: &[u8], dir: &OsStr) -> bool {
    let dir = dir.as_bytes();
    let dir = dir.strip_suffix(b"/").unwrap_or(dir);
    if dir.is_empty() {
        return false;
    }
    let inside = [dir, b"/"].concat();
    cmdline
        .split(|&b| b == 0)
        .any(|arg| arg == dir || arg.windows(inside.len()).any(|w| w == inside))
}

/// Kills, when dropped, every process whose command line names its directory (see
/// [`pids_mentioning`]). Give each test its own temporary directory, put every process's
/// data there, hold one of these beside it, and a failing test leaves nothing running.
///
/// Declare it before the handles of the processes it covers (fields drop in order of
/// declaration, locals in reverse), or anywhere: killing a process another handle still waits
/// for is harmless.
#[derive(Debug)]
pub struct KillOnDrop {
    dir: PathBuf,
}

impl KillOnDrop {
    /// A guard over the processes working in `dir`.
    pub fn mentioning(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kills them now; how many there were.
    pub fn kill_now(&self) -> usize {
        let pids = pids_mentioning(&self.dir);
        for &pid in &pids {
            kill(pid);
        }
        pids.len()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// A child process killed and reaped when dropped, so a panicking test leaves nothing behind.
/// Derefs to the [`Child`].
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for ChildGuard {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::time::Duration;

    use super::*;
    use crate::wait::Deadline;

    fn alive(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.contains(") Z ") && !s.contains(") X "))
    }

    #[test]
    fn an_argument_names_the_directory_or_a_path_inside_it() {
        let dir = OsStr::new("/tmp/.tmpAbC123");
        assert!(mentions(
            b"node\0run\0--data-dir\0/tmp/.tmpAbC123/node-0\0",
            dir
        ));
        assert!(mentions(b"x\0--dir=/tmp/.tmpAbC123/a\0", dir));
        assert!(mentions(b"ls\0/tmp/.tmpAbC123\0", dir));
        assert!(mentions(
            b"ls\0/tmp/.tmpAbC123\0",
            OsStr::new("/tmp/.tmpAbC123/")
        ));
        // Another directory that merely starts the same way is not this one.
        assert!(!mentions(b"ls\0/tmp/.tmpAbC1234/x\0", dir));
        assert!(!mentions(b"ls\0/tmp/.tmpAbC12\0", dir));
        assert!(!mentions(b"ls\0/\0", OsStr::new("/")));
    }

    #[test]
    fn the_guard_kills_what_works_in_its_directory_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("cairn-testkit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // `tail -f FILE` runs until killed, with FILE on its command line.
        let follow = |file: PathBuf| {
            std::fs::write(&file, b"").unwrap();
            ChildGuard(Command::new("tail").arg("-f").arg(file).spawn().unwrap())
        };
        let mut inside = follow(dir.join("node-0"));
        let mut outside = follow(dir.with_extension("other"));
        let guard = KillOnDrop::mentioning(&dir);
        // A child shows its own command line only once it has exec'd `tail`: until then
        // /proc has the test's. Wait for that, not for anything else: the other child must
        // never be named.
        let started = Deadline::after(Duration::from_secs(10), "the children exec `tail`");
        loop {
            let named = pids_mentioning(&dir);
            if named == vec![inside.id()] {
                break;
            }
            started.check_with(format!("named {named:?}, want only {}", inside.id()));
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(guard);
        let deadline = Deadline::after(Duration::from_secs(10), "the killed child exits");
        while inside.try_wait().unwrap().is_none() {
            deadline.check();
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            outside.try_wait().unwrap().is_none(),
            "the other one runs on"
        );
        let pid = outside.id();
        drop(outside);
        assert!(
            !alive(pid),
            "a dropped ChildGuard kills and reaps its child"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_file(dir.with_extension("other")).unwrap();
    }
}
