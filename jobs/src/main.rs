//! The `reckon` binary: process setup (the allocator's options, logs, async runtime), then the command
//! (`cli/`, one module per command); errors become exit codes.

mod cli;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use cli::Cli;

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
    reckon::allocator::tune();
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
