//! The memory allocator of every reckon process (`reckon`, `reckon-executor`,
//! `reckon-scheduler`): mimalloc, and the options each binary sets first thing in `main`
//! ([`tune`]). The executors do a cluster's joins, sorts and merges, so they take memory the
//! way the embedded engine does.

/// mimalloc returns freed memory to the system sooner than glibc's allocator under
/// DataFusion's many threads, which lowers the peak resident memory of a large join.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in the mimalloc.h of libmimalloc-sys 0.1.49 (pinned exactly in
/// Cargo.toml; the Rust bindings do not name it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long mimalloc keeps freed pages before giving them back to the system, in ms.
///
/// Its default of 10 ms returns a stage's short-lived buffers (a sort's runs, a join's
/// batches, a bucket's hash tables) before the next bucket asks for the same memory again,
/// and each page comes back through a fault that zeroes it (BENCHMARKS.md: a 10M reconcile
/// took 2.1M page faults at 0 ms, 0.3M at 1 s). A process holds at most its peak a second
/// longer.
const PURGE_DELAY_MS: std::os::raw::c_long = 1000;

/// Sets how the process takes memory from the system; `MIMALLOC_PURGE_DELAY` and
/// `MIMALLOC_ALLOW_THP` in the environment still win.
///
/// Transparent huge pages are turned off for the process. mimalloc asks for them on its
/// arenas (`MADV_HUGEPAGE`), and on a machine whose free memory is fragmented (a page cache
/// full of the day's files) each 2 MiB page is found by compaction and zeroed whole: on the
/// 10M day collect spent 14-18 s of system time that way and reconcile 11-16 s, against 3 s
/// and 5-6 s without them, and both ran 20-30% faster in less memory.
#[allow(unsafe_code)]
pub fn tune() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mi_option_set stores an integer option; it has no preconditions and is safe
        // to call at any time from any thread.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: PR_SET_THP_DISABLE takes an integer flag and touches no memory of ours; it
        // applies to the whole process, the mappings mimalloc already made included. A kernel
        // without it returns an error, which leaves huge pages as they were.
        let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
}
