//! `repconv layers`: every benchmarked layer shape through `Conv2d`.

use crate::measure::{bf16_peak_gflops, fma_peak_gflops, median_ms};
use crate::precision::{self, PrecisionArg};
use crate::shapes::{LayerShape, all_layers};
use clap::Args;
use repconv::conv::KernelChoice;
use repconv::{Activation, Conv2d, Tensor};
use serde::Serialize;

/// Options of `repconv layers`.
#[derive(Args, Debug, Clone)]
pub struct LayersArgs {
    /// Worker threads (0 = all cores).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Timed runs per layer (the median is reported).
    #[arg(long, default_value_t = 30)]
    pub runs: usize,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Run the general im2col path instead of the planned kernel (a baseline).
    #[arg(long)]
    pub general: bool,
    /// Only layers whose name contains this text.
    #[arg(long)]
    pub filter: Option<String>,
    /// Instruction set: avx512, avx2, portable or best (default: $REPCONV_ISA,
    /// else the best this CPU has).
    #[arg(long)]
    pub isa: Option<String>,
    /// Precision: f32, or bf16 (the 1x1 layers on the bf16 kernel, against
    /// the in-process vdpbf16ps peak; the other layers stay f32, against the
    /// FMA peak). bf16 needs AVX512_BF16, or REPCONV_BF16=emulated for the
    /// software model (its times are the model's, against no peak).
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    pub precision: PrecisionArg,
}

impl Default for LayersArgs {
    fn default() -> Self {
        LayersArgs {
            threads: 1,
            runs: 30,
            json: false,
            general: false,
            filter: None,
            isa: None,
            precision: PrecisionArg::F32,
        }
    }
}

/// The peaks a row can be measured against.
#[derive(Clone, Copy, Debug)]
struct Peaks {
    /// The f32 FMA peak.
    fma: f64,
    /// The `vdpbf16ps` peak, where the CPU has AVX512_BF16.
    bf16: Option<f64>,
}

#[derive(Serialize)]
struct Row {
    layer: &'static str,
    kernel: &'static str,
    isa: &'static str,
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    groups: usize,
    threads: usize,
    /// The precision asked for (`--precision`).
    precision: &'static str,
    /// The precision the layer's kernel computes in: `bf16` for the 1x1
    /// layers' bf16 kernel, `f32` for every other layer.
    compute: &'static str,
    mflop: f64,
    ms: f64,
    gflops: f64,
    /// Which peak `peak_gflops` is: `fma_f32`, `vdpbf16ps`, or `none` (the
    /// bf16 software model).
    peak: &'static str,
    peak_gflops: Option<f64>,
    pct_peak: Option<f64>,
}

fn measure(
    isa: repconv::Isa,
    layer: &LayerShape,
    args: &LayersArgs,
    threads: usize,
    peaks: Peaks,
) -> Result<Row, repconv::Error> {
    let params = layer.params();
    let (weights, bias, input) = layer.example_data()?;
    let choice = if args.general { KernelChoice::General } else { KernelChoice::Auto };
    let conv =
        Conv2d::with_choice_on(params, &weights, Some(&bias), Activation::Relu, choice, isa)?
            .with_precision(args.precision.precision())?;
    let shape = layer.input_shape();
    let mut output = Tensor::zeros(conv.output_shape(shape)?)?;
    let flops = params.flops(shape)? as f64;
    // One checked run first: the timed runs repeat it on the same tensors, so
    // their `expect` cannot fire.
    conv.forward_into(input.view(), output.view_mut())?;
    let ms = median_ms(3, args.runs, || {
        conv.forward_into(input.view(), output.view_mut()).expect("ran above on the same tensors");
    });
    let gflops = flops / ms / 1e6;
    let (compute, peak, peak_gflops) = match conv.plan().bf16() {
        Some(b) if precision::is_emulated(b) => ("bf16", "none", None),
        Some(_) => ("bf16", "vdpbf16ps", peaks.bf16),
        None => ("f32", "fma_f32", Some(peaks.fma)),
    };
    let [_, _, h, w] = shape;
    Ok(Row {
        layer: layer.name,
        kernel: conv.kernel_name(),
        isa: isa.name(),
        cin: layer.cin,
        cout: layer.cout,
        h,
        w,
        k: layer.k,
        stride: layer.stride,
        groups: layer.groups,
        threads,
        precision: args.precision.precision().name(),
        compute,
        mflop: flops / 1e6,
        ms,
        gflops,
        peak,
        peak_gflops,
        pct_peak: peak_gflops.map(|p| 100.0 * gflops / p),
    })
}

/// Runs the layer table.
pub fn run(args: &LayersArgs) -> Result<(), Box<dyn std::error::Error>> {
    let isa = super::main_job::chosen_isa(args.isa.as_deref())?;
    // bf16 that cannot run is refused before anything is measured.
    let bf16 = match args.precision {
        PrecisionArg::Bf16 => {
            Some(precision::bf16_on(isa).map_err(|e| format!("layers --precision bf16: {e}"))?)
        }
        PrecisionArg::F32 => None,
    };
    let pool = super::timing_pool(args.threads)?;
    let threads = pool.current_num_threads();
    let fma = fma_peak_gflops(isa, threads)?;
    let peaks = Peaks {
        fma,
        bf16: match bf16 {
            Some(b) if !precision::is_emulated(b) => bf16_peak_gflops(threads)?,
            _ => None,
        },
    };
    if !args.json {
        outln!("CPU: {}", crate::machine::cpu_description());
        outln!(
            "repconv layers: {threads} thread(s), ISA {isa} ({} lanes), in-process FMA peak {fma:.1} GFLOP/s",
            isa.lanes()
        );
        match (bf16, peaks.bf16) {
            (Some(_), Some(p)) => outln!(
                "precision bf16: the 1x1 layers on the bf16 kernel against the in-process vdpbf16ps peak {p:.1} GFLOP/s, every other layer f32 against the FMA peak"
            ),
            (Some(b), _) => outln!(
                "precision bf16 on the kernels' software model ({}={}): bf16 rows are the model's times, against no peak; every other layer f32 against the FMA peak",
                repconv::BF16_ENV,
                b.name()
            ),
            (None, _) => {}
        }
        outln!(
            "{:<22} {:<34} {:>8} {:>9} {:>8} {:>7}{}",
            "layer",
            "kernel",
            "MFLOP",
            "ms",
            "GFLOP/s",
            "%peak",
            if bf16.is_some() { "  peak" } else { "" }
        );
    }
    for layer in all_layers() {
        if args.filter.as_deref().is_some_and(|f| !layer.name.contains(f)) {
            continue;
        }
        let row = pool.install(|| measure(isa, layer, args, threads, peaks))?;
        if args.json {
            outln!("{}", serde_json::to_string(&row)?);
        } else {
            let pct = row.pct_peak.map_or("-".to_string(), |p| format!("{p:.1}%"));
            // Which peak, in bf16 tables (f32 tables have one peak).
            let peak = match (bf16, row.peak) {
                (None, _) => "",
                (Some(_), "fma_f32") => "  fma",
                (Some(_), "vdpbf16ps") => "  bf16",
                (Some(_), _) => "  none",
            };
            outln!(
                "{:<22} {:<34} {:>8.2} {:>9.4} {:>8.1} {:>7}{}",
                row.layer,
                row.kernel,
                row.mflop,
                row.ms,
                row.gflops,
                pct,
                peak
            );
        }
    }
    Ok(())
}
