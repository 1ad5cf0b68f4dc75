//! Writes what `classify.c` is checked against, computed with the Rust API
//! (not the C API): the input batch as raw float32 and the logits of a
//! MobileOne checkpoint on it.
//!
//! ```text
//! cargo run --release -p repconv-capi --example make_expected -- \
//!     MODEL.safetensors IO.safetensors OUT_DIR [--reparameterize] [--threads N]
//! ```
//!
//! `IO.safetensors` holds the batch as a tensor named `input` (the fixtures'
//! `tests/fixtures/*.io.safetensors`). Writes `OUT_DIR/input.f32` and
//! `OUT_DIR/expected.f32` (native byte order, as `classify.c` reads them) and
//! prints the batch's shape `N C H W` on stdout. `--threads N` runs on a
//! pool of N threads (default: the global pool), like `classify -t N`.

use std::path::PathBuf;
use std::process::ExitCode;

use repconv_rs::Tensor;
use repconv_rs::mobileone::Workspace;
use repconv_rs::weights::{self, LoadOptions};

struct Args {
    model: PathBuf,
    io: PathBuf,
    out_dir: PathBuf,
    reparameterize: bool,
    threads: usize,
}

fn parse() -> Result<Args, String> {
    let mut positional = Vec::new();
    let (mut reparameterize, mut threads) = (false, 0);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--reparameterize" => reparameterize = true,
            "--threads" => {
                let n = args.next().ok_or("--threads needs a value")?;
                threads = n.parse().map_err(|e| format!("--threads {n}: {e}"))?;
            }
            _ => positional.push(PathBuf::from(a)),
        }
    }
    let [model, io, out_dir]: [PathBuf; 3] = positional.try_into().map_err(|_| {
        "usage: make_expected MODEL.safetensors IO.safetensors OUT_DIR [--reparameterize] \
         [--threads N]"
            .to_string()
    })?;
    Ok(Args { model, io, out_dir, reparameterize, threads })
}

fn write_f32(path: PathBuf, values: &[f32]) -> Result<(), String> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_ne_bytes()).collect();
    std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn run() -> Result<(), String> {
    let args = parse()?;
    let err = |e: repconv_rs::Error| e.to_string();
    let mut net = weights::load(&args.model, &LoadOptions::default()).map_err(err)?;
    if args.reparameterize {
        net = net.reparameterize().map_err(err)?;
    }
    let io =
        weights::read_tensors(&std::fs::read(&args.io).map_err(|e| e.to_string())?).map_err(err)?;
    let input = io
        .iter()
        .find(|t| t.name == "input")
        .ok_or_else(|| format!("{}: no tensor named input", args.io.display()))?
        .to_nchw()
        .map_err(err)?;
    let mut logits = Tensor::zeros(net.output_shape(input.shape()).map_err(err)?).map_err(err)?;
    let mut forward = || net.forward_into(input.view(), logits.view_mut(), &mut Workspace::new());
    if args.threads > 0 {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(args.threads)
            .build()
            .map_err(|e| e.to_string())?;
        pool.install(forward)
    } else {
        forward()
    }
    .map_err(err)?;
    write_f32(args.out_dir.join("input.f32"), input.as_slice())?;
    write_f32(args.out_dir.join("expected.f32"), logits.as_slice())?;
    let [n, c, h, w] = input.shape();
    println!("{n} {c} {h} {w}");
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("make_expected: {e}");
            ExitCode::FAILURE
        }
    }
}
