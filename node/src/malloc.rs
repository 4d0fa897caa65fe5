//! Allocator tuning for shard-sized buffers.
//!
//! Every fetch, store and read handles a few 1 MiB buffers (a shard, a RocksDB value, a receive
//! buffer). With its defaults, glibc's malloc serves allocations above its mmap threshold
//! (128 KiB at start, raised as blocks are freed) with a fresh `mmap`, and gives memory at the top
//! of a heap back to the kernel once more than 128 KiB is free there. Either way a new 1 MiB
//! buffer comes back as 256 untouched pages, and the first write to each costs a page fault and a
//! page zeroing. In the `node` benchmark that was 11 % of all CPU; see docs/BENCHMARKS.md.
//!
//! [`tune`] keeps such buffers inside malloc's heaps instead: allocations up to
//! [`MMAP_THRESHOLD`] come from the heap, and up to [`TRIM_THRESHOLD`] of free memory at a heap's
//! top is kept for reuse. An operator's own `GLIBC_TUNABLES` malloc settings win.
//!
//! Only `cairn-node` calls it. The gateway was measured with it too, and its p99 time to first
//! byte got worse (about 20 % in `s3bench`) while its RSS grew by 50 MiB, so it keeps glibc's
//! defaults.

/// Allocations up to this size come from malloc's heaps, not a fresh `mmap` each time.
pub const MMAP_THRESHOLD: usize = 8 << 20;
/// Free memory at the top of a heap that malloc keeps for reuse instead of returning it.
pub const TRIM_THRESHOLD: usize = 64 << 20;

/// Applies the settings above. Call it first thing in `main`, before any thread starts.
/// Returns whether they were applied (glibc on Linux, and no `GLIBC_TUNABLES` malloc setting).
pub fn tune() -> bool {
    let operator_set = std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc."));
    if operator_set {
        return false;
    }
    apply()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn apply() -> bool {
    // SAFETY: `mallopt` takes two plain integers and no pointers; it only changes malloc's
    // parameters and touches no memory the caller owns. glibc marks it "MT-Unsafe init
    // const:mallopt": its first call may initialise malloc unsynchronised (malloc is already
    // initialised here: the program has allocated), and other threads may read the two
    // thresholds while they change, which at worst serves one allocation under the old value.
    // `tune` is meant for the start of `main`, before any thread exists, which rules out both.
    // The values are within the documented ranges (mmap threshold at most 32 MiB on 64-bit).
    let ok = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int) == 1
    };
    if !ok {
        tracing::debug!("malloc tuning refused by this libc");
    }
    ok
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> bool {
    false
}

#[cfg(test)]
mod tests {
    #[test]
    fn glibc_accepts_the_settings() {
        // The harness's other threads may be running (see the SAFETY note on `apply`).
        if cfg!(all(target_os = "linux", target_env = "gnu"))
            && std::env::var_os("GLIBC_TUNABLES").is_none()
        {
            assert!(super::tune(), "glibc refused the malloc settings");
        }
    }
}
