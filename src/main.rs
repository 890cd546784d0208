//! The `strata` command: parses flags, calls the crates, prints through one printer.

mod cli;
mod commands;
mod printer;
mod progress;
mod signals;
mod template;
mod unionfs;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;
use crate::commands::Context;
use crate::printer::Printer;

/// jemalloc keeps the large buffers of the layer pipelines (tar chunks, gzip blocks) for reuse
/// where glibc's malloc returned them to the kernel and faulted them in again (bench/RESULTS.md,
/// layers).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read when it starts (a C string at the symbol `_rjem_malloc_conf`, as
/// the prefixed jemalloc of `tikv-jemallocator` names it). One arena: with jemalloc's default
/// of four per CPU, the buffers that a pull passes between threads were kept by every arena
/// they passed through, and its peak RSS went past its bound (DESIGN.md: 32 MB; 34–36 MB with
/// eight arenas, 30–31 MB with one); the layer commit is as fast either way (bench/RESULTS.md).
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: JemallocConf = JemallocConf(c"narenas:1".as_ptr());

/// A `const char *` that may live in a static.
#[repr(transparent)]
struct JemallocConf(*const std::ffi::c_char);

// SAFETY: the pointer is to a string literal, immutable for the life of the program.
unsafe impl Sync for JemallocConf {}

fn main() -> ExitCode {
    // A multi-threaded strata (a build) starts containers through a fresh copy of itself.
    runner::run_setup_helper_if_requested();
    // strata is also its own FUSE union daemon (started under that name, or linked to it).
    if invoked_as(layerfs::fuse::DAEMON_NAME) {
        return unionfs::main();
    }
    if let Ok(me) = std::env::current_exe() {
        layerfs::fuse::set_daemon_program(me);
    }
    let cli = Cli::parse();
    init_logging(&cli.global.log_level);
    let printer = Printer;
    let is_run = matches!(cli.command, cli::Command::Run(_));
    let ctx = match Context::new(&cli.global, printer) {
        Ok(ctx) => ctx,
        Err(e) => {
            printer.error(&e);
            return ExitCode::from(if is_run { 125 } else { 1 });
        }
    };
    match commands::dispatch(cli.command, &ctx) {
        Ok(code) => code,
        Err(e) => {
            printer.error(&e);
            // `run` keeps 1..=124 for the container's own exit codes.
            ExitCode::from(if is_run { 125 } else { 1 })
        }
    }
}

/// Whether this process was started under the program name `name` (its `argv[0]`).
fn invoked_as(name: &str) -> bool {
    std::env::args_os()
        .next()
        .is_some_and(|arg0| std::path::Path::new(&arg0).file_name() == Some(name.as_ref()))
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .init();
}
