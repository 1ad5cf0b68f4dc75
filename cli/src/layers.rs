//! `repconv layers`: every benchmarked layer shape through `Conv2d`.

use crate::measure::{fma_peak_gflops, median_ms};
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
}

impl Default for LayersArgs {
    fn default() -> Self {
        LayersArgs { threads: 1, runs: 30, json: false, general: false, filter: None, isa: None }
    }
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
    mflop: f64,
    ms: f64,
    gflops: f64,
    peak_gflops: f64,
    pct_peak: f64,
}

fn measure(
    isa: repconv::Isa,
    layer: &LayerShape,
    args: &LayersArgs,
    threads: usize,
    peak: f64,
) -> Result<Row, repconv::Error> {
    let params = layer.params();
    let (weights, bias, input) = layer.example_data()?;
    let choice = if args.general { KernelChoice::General } else { KernelChoice::Auto };
    let conv = Conv2d::with_choice(params, &weights, Some(&bias), Activation::Relu, choice)?
        .with_isa(isa)?;
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
        mflop: flops / 1e6,
        ms,
        gflops,
        peak_gflops: peak,
        pct_peak: 100.0 * gflops / peak,
    })
}

/// Runs the layer table.
pub fn run(args: &LayersArgs) -> Result<(), Box<dyn std::error::Error>> {
    let pool = super::timing_pool(args.threads)?;
    let threads = pool.current_num_threads();
    let isa = super::main_job::chosen_isa(args.isa.as_deref())?;
    let peak = fma_peak_gflops(isa, threads)?;
    if !args.json {
        outln!("CPU: {}", crate::machine::cpu_description());
        outln!(
            "repconv layers: {threads} thread(s), ISA {isa} ({} lanes), in-process FMA peak {peak:.1} GFLOP/s",
            isa.lanes()
        );
        outln!(
            "{:<22} {:<34} {:>8} {:>9} {:>8} {:>7}",
            "layer",
            "kernel",
            "MFLOP",
            "ms",
            "GFLOP/s",
            "%peak"
        );
    }
    for layer in all_layers() {
        if args.filter.as_deref().is_some_and(|f| !layer.name.contains(f)) {
            continue;
        }
        let row = pool.install(|| measure(isa, layer, args, threads, peak))?;
        if args.json {
            outln!("{}", serde_json::to_string(&row)?);
        } else {
            outln!(
                "{:<22} {:<34} {:>8.2} {:>9.4} {:>8.1} {:>6.1}%",
                row.layer,
                row.kernel,
                row.mflop,
                row.ms,
                row.gflops,
                row.pct_peak
            );
        }
    }
    Ok(())
}
