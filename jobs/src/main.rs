//! The `reckon` binary: process setup (allocator, logs, async runtime), then the command
//! (`cli/`, one module per command); errors become exit codes.

mod cli;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use cli::Cli;

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
fn tune_the_allocator() {
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

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RECKON_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,datafusion=warn,ballista=warn,ballista_scheduler::display=off,\
             deltalake_core=warn,buoyant_kernel=warn,buoyant_kernel_engine=warn",
        )
    });
    if format == "json" {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .fmt_fields(reckon::logs::JsonSpanFields)
            .event_format(reckon::logs::FlatJson)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tune_the_allocator();
    init_logs(&cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // Collectors get the invocation on every line; people see it in leases and alerts.
    let root = if cli.log_format == "json" {
        tracing::info_span!("reckon", invocation = reckon::lease::invocation_id())
    } else {
        tracing::Span::none()
    };
    let json_line = cli.command.ends_with_json();
    let code = match runtime.block_on(tracing::Instrument::instrument(
        cli::dispatch(cli.command),
        root,
    )) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            if json_line {
                cli::print_json(&serde_json::json!({
                    "status": e.status(),
                    "error": e.to_string(),
                    "exit_code": e.exit_code(),
                }));
            }
            e.exit_code()
        }
    };
    let _ = std::io::stdout().flush();
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
