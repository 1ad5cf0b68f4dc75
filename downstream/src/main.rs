//! The downstream proof: a plain dependent of `repconv` (no build flags)
//! runs a few layers and a small MobileOne, checks them against the
//! library's reference convolution, and fails unless the kernels chosen on
//! this CPU are the best instantiation the CPU supports, as detected here
//! independently of repconv.
//!
//! `cargo run --release` checks; `cargo run --release -- --time` also times
//! MobileOne-S0 fused at 224x224 (batch 1) on 1 and 2 threads.

use std::process::ExitCode;
use std::time::Instant;

use repconv::mobileone::{MobileOne, MobileOneConfig, Variant, Workspace};
use repconv::{Activation, Conv2d, Conv2dParams, Isa, Tensor};
use repconv_kernels::reference::{RefConv, conv2d_nchw_ref};

/// The best ISA name this CPU supports, asked of the CPU directly.
fn expected_isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        let avx512 = std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512dq");
        if avx2 && avx512 {
            return "avx512";
        }
        if avx2 {
            return "avx2";
        }
    }
    "portable"
}

/// Deterministic values in [-1, 1).
fn values(seed: u64, len: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Runs one layer and checks it against the reference; returns its kernel name.
fn check_layer(params: Conv2dParams, shape: [usize; 4], seed: u64) -> Result<String, String> {
    let weights = values(seed, params.weight_len().map_err(|e| e.to_string())?);
    let bias = values(seed ^ 1, params.out_channels);
    let conv =
        Conv2d::new(params, &weights, Some(&bias), Activation::Relu).map_err(|e| e.to_string())?;
    let x = values(seed ^ 2, shape.iter().product());
    let input = Tensor::from_vec(shape, x.clone()).map_err(|e| e.to_string())?;
    let got = conv.forward(&input).map_err(|e| e.to_string())?;
    let r = RefConv {
        n: shape[0],
        cin: shape[1],
        h: shape[2],
        w: shape[3],
        cout: params.out_channels,
        kernel: params.kernel,
        stride: params.stride,
        padding: params.padding,
        dilation: params.dilation,
        groups: params.groups,
        relu: true,
    };
    let (want, mag) = conv2d_nchw_ref(&r, &x, &weights, Some(&bias));
    for (i, ((g, w), m)) in got.as_slice().iter().zip(&want).zip(&mag).enumerate() {
        // NaN-aware: a NaN on one side only is a mismatch.
        let ok = if w.is_nan() || g.is_nan() {
            w.is_nan() && g.is_nan()
        } else {
            (g - w).abs() <= 1e-5 * m + 1e-6
        };
        if !ok {
            return Err(format!("{}: element {i}: got {g}, want {w}", conv.kernel_name()));
        }
    }
    Ok(conv.kernel_name().to_string())
}

fn run() -> Result<(), String> {
    let expected = expected_isa();
    let best = Isa::best();
    println!("CPU's best ISA (std::arch): {expected}; repconv's default: {best}");
    if best.name() != expected {
        return Err(format!("repconv picked {best}, the CPU supports {expected}"));
    }
    let layers = [
        (Conv2dParams::new(128, 128, [1, 1]), [1, 128, 28, 28]),
        (Conv2dParams::new(3, 48, [3, 3]).with_stride([2, 2]).with_padding([1, 1]), [1, 3, 64, 64]),
        (Conv2dParams::new(32, 40, [3, 3]).with_padding([1, 1]), [1, 32, 14, 14]),
        (Conv2dParams::new(48, 48, [3, 3]).with_padding([1, 1]).with_groups(48), [1, 48, 28, 28]),
        (
            Conv2dParams::new(64, 64, [3, 3])
                .with_stride([2, 2])
                .with_padding([1, 1])
                .with_groups(64),
            [1, 64, 28, 28],
        ),
        (Conv2dParams::new(48, 48, [1, 1]).with_groups(48), [1, 48, 14, 14]),
        (Conv2dParams::new(8, 12, [5, 5]).with_padding([2, 2]), [1, 8, 17, 19]),
    ];
    for (i, (p, shape)) in layers.into_iter().enumerate() {
        let name = check_layer(p, shape, 10 + i as u64)?;
        if !name.ends_with(&format!("__{expected}")) {
            return Err(format!("{name} is not the {expected} instantiation"));
        }
        println!("ok  {name}");
    }

    // A small MobileOne-S0, both forms; every block on the best ISA, the two
    // forms agreeing, and the same network on the portable baseline agreeing.
    let config = MobileOneConfig::variant(Variant::S0).with_num_classes(10);
    let multi = MobileOne::random(config, 3).map_err(|e| e.to_string())?;
    let fused = multi.reparameterize().map_err(|e| e.to_string())?;
    for (name, block) in fused.blocks() {
        if block.isa().name() != expected {
            return Err(format!("block {name} runs {}", block.isa()));
        }
    }
    let portable = fused.clone().with_isa(Isa::portable()).map_err(|e| e.to_string())?;
    let x =
        Tensor::from_vec([2, 3, 64, 64], values(99, 2 * 3 * 64 * 64)).map_err(|e| e.to_string())?;
    let outs: Vec<Tensor> = [&multi, &fused, &portable]
        .iter()
        .map(|n| n.forward(&x).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let scale = outs[0].as_slice().iter().fold(0f32, |m, v| if v.abs() > m { v.abs() } else { m });
    for (what, o) in [("fused", &outs[1]), ("portable fused", &outs[2])] {
        for (a, b) in outs[0].as_slice().iter().zip(o.as_slice()) {
            if !a.is_finite() || !b.is_finite() || (a - b).abs() > 1e-4 * scale {
                return Err(format!("multi-branch {a} vs {what} {b} (scale {scale})"));
            }
        }
    }
    println!(
        "ok  MobileOne-S0 64x64 batch 2: multi-branch == fused ({expected}) == fused (portable)"
    );
    Ok(())
}

/// Median ms of MobileOne-S0 fused at 224x224, batch 1, on `threads` threads.
fn time_s0(threads: usize) -> Result<f64, String> {
    let pool =
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().map_err(|e| e.to_string())?;
    pool.install(|| {
        let net = MobileOne::random(MobileOneConfig::variant(Variant::S0), 0)
            .and_then(|n| n.reparameterize())
            .map_err(|e| e.to_string())?;
        let x = Tensor::from_vec([1, 3, 224, 224], values(5, 3 * 224 * 224))
            .map_err(|e| e.to_string())?;
        let mut y = Tensor::zeros(net.output_shape(x.shape()).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        let mut ws = Workspace::new();
        let start = Instant::now();
        while start.elapsed().as_secs_f64() < 1.0 {
            net.forward_into(x.view(), y.view_mut(), &mut ws).map_err(|e| e.to_string())?;
        }
        let mut times = Vec::new();
        for _ in 0..40 {
            let t = Instant::now();
            net.forward_into(x.view(), y.view_mut(), &mut ws).map_err(|e| e.to_string())?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    })
}

fn main() -> ExitCode {
    if let Err(e) = run() {
        eprintln!("downstream check FAILED: {e}");
        return ExitCode::FAILURE;
    }
    if std::env::args().any(|a| a == "--time") {
        for threads in [1, 2] {
            match time_s0(threads) {
                Ok(ms) => println!(
                    "MobileOne-S0 fused 224x224 batch 1, {threads} thread(s): {ms:.3} ms (median of 40)"
                ),
                Err(e) => {
                    eprintln!("timing failed: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    ExitCode::SUCCESS
}
