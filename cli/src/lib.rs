//! The `repconv` command line as a library: argument parsing and dispatch
//! ([`Cli`], [`run()`]), one module per command, and the helpers the
//! commands, `benches/kernels.rs` and the Python package share ([`measure`],
//! [`shapes`], [`compare`], and [`precision`] for `--precision bf16`). The
//! binary (`src/main.rs`) only parses and reports errors.
//!
//! This crate is not published. It exists so that the CLI's own dependencies
//! (clap, plotters) stay out of the build of every user of the library
//! `repconv`.

/// `println!` that returns the write error instead of panicking, so that
/// `repconv layers | head` ends quietly when the pipe closes.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)?;
    }};
}

pub mod batch;
pub mod compare;
pub mod info;
pub mod layers;
pub mod machine;
pub mod main_job;
pub mod measure;
pub mod precision;
pub mod reparam;
pub mod run;
pub mod shapes;
pub mod sweep;

use clap::{Parser, Subcommand};

/// Hand-tuned SIMD NCHW convolutions and the MobileOne reparameterization.
#[derive(Parser, Debug)]
#[command(name = "repconv", version, about)]
pub struct Cli {
    /// The command; without one, the main job runs.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of the main job (MobileOne multi-branch vs fused).
    #[command(flatten)]
    pub main: main_job::MainArgs,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Time every MobileOne-S0/S1 layer shape (and generic shapes) through
    /// `Conv2d` with bias + ReLU and report GFLOP/s and % of the in-process peak.
    Layers(layers::LayersArgs),
    /// Fused-network throughput (images/s) for batch sizes, thread counts and
    /// batch schedules, against the in-process FMA peak.
    Batch(batch::BatchArgs),
    /// Block latency against the branch count k, multi-branch vs fused,
    /// plotted to an SVG (e.g. `--out docs/branches.svg`).
    SweepBranches(sweep::SweepArgs),
    /// Reparameterize a train-form timm checkpoint into a fused one, checking
    /// both forms agree layer by layer first.
    Reparam(reparam::ReparamArgs),
    /// Run a checkpoint on an input tensor and write its logits.
    Run(run::RunArgs),
    /// Describe a checkpoint: variant, form, parameters, FLOPs at 224x224.
    Info(info::InfoArgs),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Some(Command::Layers(args)) => layers::run(&args),
        Some(Command::Batch(args)) => batch::run(&args),
        Some(Command::SweepBranches(args)) => sweep::run(&args),
        Some(Command::Reparam(args)) => reparam::run(&args),
        Some(Command::Run(args)) => run::run(&args),
        Some(Command::Info(args)) => info::run(&args),
        None => main_job::run(&cli.main),
    }
}

/// Builds a rayon pool with `threads` threads (0 = all cores), warmed up for
/// timing (see [`warm_up`]).
pub fn timing_pool(threads: usize) -> Result<rayon::ThreadPool, Box<dyn std::error::Error>> {
    let pool = pool(threads)?;
    warm_up(&pool);
    Ok(pool)
}

/// Runs ~1 s of short fork-joins on `pool`. On the VM this was measured on, a
/// fresh 2-thread pool ran at 1-thread speed for the first second or so:
/// waking an idle worker (an idle virtual CPU) was slow until the host adapted
/// to frequent wake-ups. Steady-state numbers need that second behind them.
pub fn warm_up(pool: &rayon::ThreadPool) {
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(1) {
        pool.install(|| {
            rayon::join(
                || repconv_kernels::peak::fma_loop(repconv::Isa::best(), 2_000),
                || repconv_kernels::peak::fma_loop(repconv::Isa::best(), 2_000),
            )
        });
    }
}

/// Builds a rayon pool with `threads` threads (0 = all cores).
pub fn pool(threads: usize) -> Result<rayon::ThreadPool, Box<dyn std::error::Error>> {
    let n = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(n).build()?;
    Ok(pool)
}
