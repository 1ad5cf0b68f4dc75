//! Helpers shared by the integration tests: deterministic data and the
//! tolerance check against the reference convolution.
#![allow(dead_code)]

pub mod isas;
pub mod watchdog;

use repconv::{Activation, Conv2dParams, Isa};
use repconv_kernels::reference::RefConv;

/// Every instruction set this CPU supports, best first, for a per-ISA loop
/// called `suite`: reported through [`isas::report`] (printed, and checked
/// against REPCONV_REQUIRE_ISA).
pub fn available_isas(suite: &str) -> Vec<Isa> {
    let all: Vec<Isa> = Isa::available().collect();
    isas::report(suite, &all.iter().map(|i| i.name()).collect::<Vec<_>>());
    all
}

/// Deterministic pseudo-random values in [-1, 1) (SplitMix64), so tests never
/// depend on a global RNG.
pub fn values(seed: u64, len: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..len)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// The reference problem for `params` on an input of `shape`.
pub fn ref_conv(params: &Conv2dParams, shape: [usize; 4], act: Activation) -> RefConv {
    RefConv {
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
        relu: act == Activation::Relu,
    }
}

/// `|got - want| <= 1e-5 * magnitude + 1e-6` elementwise (NaN must match NaN);
/// on failure, the first mismatches with their flat index.
pub fn check_close(got: &[f32], want: &[f32], magnitude: &[f32]) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("length {} != {}", got.len(), want.len()));
    }
    let mut bad = Vec::new();
    for (i, ((&g, &w), &m)) in got.iter().zip(want).zip(magnitude).enumerate() {
        let ok = if w.is_nan() { g.is_nan() } else { (g - w).abs() <= 1e-5 * m + 1e-6 };
        if !ok {
            bad.push(format!("[{i}] got {g} want {w} (magnitude {m})"));
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!("{} mismatches, first: {}", bad.len(), bad[..bad.len().min(8)].join("; ")))
    }
}

// The NaN-aware differences, shared with the CLI and the Python package
// (each test binary uses some of them).
#[allow(unused_imports)]
pub use repconv::compare::{abs_diff, check_matches, max_abs_diff};

/// The largest `|v[i]|`, or NaN if any value is NaN (so a tolerance scaled
/// by it fails every comparison instead of silently ignoring the NaN).
pub fn max_abs(v: &[f32]) -> f64 {
    v.iter()
        .map(|&x| f64::from(x.abs()))
        .fold(0.0, |m, x| if m.is_nan() || x.is_nan() { f64::NAN } else { m.max(x) })
}
