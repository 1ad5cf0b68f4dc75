//! `repconv batch`: fused-network throughput (images/s) against the batch
//! size, the thread count and the batch schedule ([`BatchSplit`]), each
//! against the in-process FMA peak of that many threads.

use clap::Args;
use repconv::Tensor;
use repconv::mobileone::{BatchSplit, MobileOne, MobileOneConfig, SplitMix64, Variant, Workspace};
use serde::Serialize;

use crate::main_job::chosen_isa;
use crate::measure::{fma_peak_gflops, median_ms};

/// Options of `repconv batch`.
#[derive(Args, Debug, Clone)]
pub struct BatchArgs {
    /// Network variant: s0, s1, s2, s3 or s4.
    #[arg(long, default_value = "s0")]
    pub variant: Variant,
    /// Input height and width.
    #[arg(long, default_value_t = 224)]
    pub size: usize,
    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    pub batches: Vec<usize>,
    /// Thread counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub threads: Vec<usize>,
    /// Timed runs per row (the median is reported), after 2 warm-up runs.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// One JSON object per line instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Instruction set: avx512, avx2, portable or best (default: $REPCONV_ISA,
    /// else the best this CPU has).
    #[arg(long)]
    pub isa: Option<String>,
}

#[derive(Serialize)]
struct Row {
    variant: String,
    cpu: String,
    isa: &'static str,
    threads: usize,
    peak_gflops: f64,
    batch: usize,
    split: String,
    ms: f64,
    images_per_s: f64,
    gflops: f64,
    peak_fraction: f64,
}

/// The schedules worth timing for a batch on `threads` threads: with one
/// thread or one image they are all the same loop.
fn splits(batch: usize, threads: usize) -> Vec<BatchSplit> {
    if batch == 1 || threads == 1 {
        vec![BatchSplit::Auto]
    } else {
        vec![BatchSplit::Auto, BatchSplit::Images, BatchSplit::WithinImage]
    }
}

/// Runs `repconv batch`.
pub fn run(args: &BatchArgs) -> Result<(), Box<dyn std::error::Error>> {
    let isa = chosen_isa(args.isa.as_deref())?;
    let cpu = crate::machine::cpu_description();
    let config = MobileOneConfig::variant(args.variant);
    let fused = MobileOne::random(config, 0)?.reparameterize()?.with_isa(isa)?;
    let flops_per_image = fused.flops([1, 3, args.size, args.size])? as f64;
    let mut rng = SplitMix64::new(1);
    if !args.json {
        outln!("CPU: {cpu}");
        outln!(
            "MobileOne-{} fused, {}x{}, ISA {isa}: throughput by batch, threads and schedule",
            args.variant,
            args.size,
            args.size
        );
        outln!(
            "{:>7} {:>10} {:>6} {:>12} {:>10} {:>10} {:>8} {:>7}",
            "threads",
            "peak GF/s",
            "batch",
            "split",
            "ms",
            "images/s",
            "GFLOP/s",
            "%peak"
        );
    }
    for &threads in &args.threads {
        let pool = crate::timing_pool(threads)?;
        let peak = fma_peak_gflops(isa, threads)?;
        for &batch in &args.batches {
            let shape = [batch, 3, args.size, args.size];
            let len = shape.iter().product();
            let x = Tensor::from_vec(shape, rng.uniform_vec(len, -1.0, 1.0))?;
            let mut logits = Tensor::zeros(fused.output_shape(shape)?)?;
            for split in splits(batch, threads) {
                let model = fused.clone().with_batch_split(split);
                let mut ws = Workspace::new();
                let mut result = Ok(());
                let ms = pool.install(|| {
                    median_ms(2, args.runs, || {
                        if result.is_ok() {
                            result = model.forward_into(x.view(), logits.view_mut(), &mut ws);
                        }
                    })
                });
                result?;
                let gflops = flops_per_image * batch as f64 / ms / 1e6;
                let row = Row {
                    variant: args.variant.to_string(),
                    cpu: cpu.clone(),
                    isa: isa.name(),
                    threads,
                    peak_gflops: peak,
                    batch,
                    split: format!("{split:?}"),
                    ms,
                    images_per_s: batch as f64 / ms * 1e3,
                    gflops,
                    peak_fraction: gflops / peak,
                };
                if args.json {
                    outln!("{}", serde_json::to_string(&row)?);
                } else {
                    outln!(
                        "{:>7} {:>10.1} {:>6} {:>12} {:>10.2} {:>10.1} {:>8.1} {:>6.1}%",
                        row.threads,
                        row.peak_gflops,
                        row.batch,
                        row.split,
                        row.ms,
                        row.images_per_s,
                        row.gflops,
                        100.0 * row.peak_fraction
                    );
                }
            }
        }
    }
    Ok(())
}
