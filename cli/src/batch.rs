//! `repconv batch`: fused-network throughput (images/s) against the batch
//! size, the thread count and the batch schedule ([`BatchSplit`]), each
//! against the in-process FMA peak of that many threads; `--precision bf16`
//! runs the network's 1x1 layers on the bf16 kernel.

use clap::Args;
use repconv::Tensor;
use repconv::mobileone::{BatchSplit, MobileOne, MobileOneConfig, SplitMix64, Variant, Workspace};
use serde::Serialize;

use crate::main_job::chosen_isa;
use crate::measure::{fma_peak_gflops, median_ms};
use crate::precision::{self, PrecisionArg};

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
    /// Precision: f32, or bf16 (the 1x1 layers on the bf16 kernel, the rest
    /// f32). bf16 needs AVX512_BF16, or REPCONV_BF16=emulated for the
    /// software model (its times are the model's, against no peak).
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    pub precision: PrecisionArg,
}

#[derive(Serialize)]
struct Row {
    variant: String,
    cpu: String,
    isa: &'static str,
    threads: usize,
    /// `f32` or `bf16`.
    precision: &'static str,
    /// The bf16 implementation (`avx512bf16` or `emulated`) with bf16, else
    /// `None`.
    bf16: Option<&'static str>,
    /// The f32 FMA peak; `None` for the bf16 software model.
    peak_gflops: Option<f64>,
    batch: usize,
    split: String,
    ms: f64,
    images_per_s: f64,
    gflops: f64,
    peak_fraction: Option<f64>,
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
    let precision = args.precision.precision();
    // `random_on`: an explicit --isa never consults REPCONV_ISA.
    let fused = MobileOne::random_on(config, 0, isa)?
        .reparameterize()?
        .with_precision(precision)
        .map_err(|e| format!("batch --precision {}: {e}", precision.name()))?;
    let bf16 = precision::bf16_layers(&fused).isa;
    let emulated = bf16.is_some_and(precision::is_emulated);
    let flops_per_image = fused.flops([1, 3, args.size, args.size])? as f64;
    let mut rng = SplitMix64::new(1);
    if !args.json {
        outln!("CPU: {cpu}");
        outln!(
            "MobileOne-{} fused, {}x{}, ISA {isa}, precision {}: throughput by batch, threads and schedule",
            args.variant,
            args.size,
            args.size,
            precision.name()
        );
        match bf16 {
            Some(b) if precision::is_emulated(b) => outln!(
                "bf16 on the kernels' software model ({}=emulated): the model's times, against no peak",
                repconv::BF16_ENV
            ),
            Some(_) => {
                outln!("bf16: the 1x1 layers on vdpbf16ps, the rest f32; %peak of the f32 FMA peak")
            }
            None => {}
        }
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
        let peak = if emulated { None } else { Some(fma_peak_gflops(isa, threads)?) };
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
                    precision: precision.name(),
                    bf16: bf16.map(|b| b.name()),
                    peak_gflops: peak,
                    batch,
                    split: format!("{split:?}"),
                    ms,
                    images_per_s: batch as f64 / ms * 1e3,
                    gflops,
                    peak_fraction: peak.map(|p| gflops / p),
                };
                if args.json {
                    outln!("{}", serde_json::to_string(&row)?);
                } else {
                    let dash = || "-".to_string();
                    outln!(
                        "{:>7} {:>10} {:>6} {:>12} {:>10.2} {:>10.1} {:>8.1} {:>7}",
                        row.threads,
                        row.peak_gflops.map_or_else(dash, |p| format!("{p:.1}")),
                        row.batch,
                        row.split,
                        row.ms,
                        row.images_per_s,
                        row.gflops,
                        row.peak_fraction.map_or_else(dash, |f| format!("{:.1}%", 100.0 * f))
                    );
                }
            }
        }
    }
    Ok(())
}
