//! Depthwise 3x3 (padding 1, stride 1 and 2) kernels against the f64 oracle,
//! on every ISA this CPU has: a proptest suite, canonical shape sweeps around
//! multiples of 8 and 16 lanes, NaN canaries around the input and output
//! slices, and NaN propagation.
//!
//! Run with `cargo test --release -p repconv-kernels --test dwconv3x3` (the
//! crate's dev-dependency on itself turns the `testing` feature on).

mod common {
    #[allow(dead_code)]
    pub mod isas;
}

use proptest::prelude::*;
use repconv_kernels::dwconv3x3::{
    Dw3x3Args, PACKED_PER_CHANNEL, dw3x3_s1p1, dw3x3_s2p1, pack_weights, scratch_len,
};
use repconv_kernels::reference::{RefConv, conv2d_nchw_ref};
use repconv_kernels::{Activation, Isa};

/// Odd offsets of the input and output windows inside their NaN buffers.
const IN_GUARD: usize = 37;
const OUT_GUARD: usize = 13;
/// NaN floats after each window (more than any vector overhang of 16 lanes).
const TAIL_GUARD: usize = 3 * 16 + 5;

/// A deterministic generator (splitmix64), so cases are reproducible from a seed.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
}

#[derive(Clone, Copy, Debug)]
struct Case {
    channels: usize,
    h: usize,
    w: usize,
    stride: usize,
    relu: bool,
    seed: u64,
    /// Plant a NaN at this flat input index (modulo the input length).
    nan_at: Option<usize>,
}

/// Runs one case through every available ISA's kernel and the oracle and checks every output,
/// the canaries around the output window, and (implicitly, through NaN
/// poisoning) that nothing outside the input window was read.
fn check(case: Case) {
    let Case { channels, h, w, stride, relu, seed, nan_at } = case;
    let mut rng = Rng(seed);
    let n_in = channels * h * w;
    let oh = (h - 1) / stride + 1;
    let ow = (w - 1) / stride + 1;
    let n_out = channels * oh * ow;

    // Inputs in [0, 1) like post-ReLU activations; weights in [-1, 1); the bias
    // in [-1, 1) centres the outputs near zero, so about half are negative and
    // ReLU bites.
    let mut input: Vec<f32> = (0..n_in).map(|_| rng.uniform(0.0, 1.0)).collect();
    if let Some(i) = nan_at {
        input[i % n_in] = f32::NAN;
    }
    let weights: Vec<f32> = (0..9 * channels).map(|_| rng.uniform(-1.0, 1.0)).collect();
    let bias: Vec<f32> = (0..channels).map(|_| rng.uniform(-1.0, 1.0)).collect();

    let p = RefConv {
        n: 1,
        cin: channels,
        h,
        w,
        cout: channels,
        kernel: [3, 3],
        stride: [stride, stride],
        padding: [1, 1],
        dilation: [1, 1],
        groups: channels,
        relu,
    };
    let (want, mag) = conv2d_nchw_ref(&p, &input, &weights, Some(&bias));
    assert_eq!(want.len(), n_out);

    let mut packed = vec![f32::NAN; channels * PACKED_PER_CHANNEL];
    pack_weights(&weights, Some(&bias), channels, &mut packed);
    for isa in isas("dwconv3x3") {
        check_isa(isa, &case, &input, &packed, &want, &mag, [oh, ow]);
    }
}

#[allow(clippy::too_many_arguments)]
fn check_isa(
    isa: Isa,
    case: &Case,
    input: &[f32],
    packed: &[f32],
    want: &[f32],
    mag: &[f32],
    [oh, ow]: [usize; 2],
) {
    let &Case { channels, h, w, stride, relu, .. } = case;
    let (n_in, n_out) = (input.len(), want.len());

    // Input window at an odd offset; the slice handed over runs into the NaN
    // tail guard, so a read past `channels*h*w` poisons an output.
    let mut in_buf = vec![f32::NAN; IN_GUARD + n_in + TAIL_GUARD];
    in_buf[IN_GUARD..IN_GUARD + n_in].copy_from_slice(input);
    // Output window at an odd offset; the slice handed over includes the NaN
    // tail, which must stay untouched.
    let mut out_buf = vec![f32::NAN; OUT_GUARD + n_out + TAIL_GUARD];
    // Scratch full of NaN: the drivers must not depend on its contents.
    let mut scratch = vec![f32::NAN; scratch_len(isa, h, w, stride).unwrap()];

    let args = Dw3x3Args {
        channels,
        h,
        w,
        packed,
        input: &in_buf[IN_GUARD..],
        output: &mut out_buf[OUT_GUARD..],
    };
    let act = if relu { Activation::Relu } else { Activation::Identity };
    match stride {
        1 => dw3x3_s1p1(isa, act, args, &mut scratch),
        _ => dw3x3_s2p1(isa, act, args, &mut scratch),
    }

    for (i, v) in out_buf[..OUT_GUARD].iter().chain(&out_buf[OUT_GUARD + n_out..]).enumerate() {
        assert!(
            v.is_nan(),
            "{isa} {case:?}: canary {i} outside the output window overwritten with {v}"
        );
    }
    let got = &out_buf[OUT_GUARD..OUT_GUARD + n_out];
    let mut bad = Vec::new();
    for (i, ((&g, &r), &m)) in got.iter().zip(want).zip(mag).enumerate() {
        let ok = if r.is_nan() { g.is_nan() } else { (g - r).abs() <= 1e-5 * m + 1e-6 };
        if !ok {
            let (c, y, x) = (i / (oh * ow), (i / ow) % oh, i % ow);
            bad.push(format!("(c {c}, y {y}, x {x}): got {g}, want {r}, magnitude {m}"));
        }
    }
    assert!(
        bad.is_empty(),
        "{isa} {case:?} ({} of {n_out} outputs wrong):\n{}",
        bad.len(),
        bad.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// Widths and heights that straddle vector (8 and 16 lanes) and band borders.
fn edge_dims() -> Vec<usize> {
    // Vector widths (8, 16) and stride-1 band heights (multiples of 7, where
    // the band count changes) each with their neighbours.
    let mut d = vec![
        1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 14, 15, 16, 17, 21, 22, 23, 24, 25, 28, 29, 31, 32, 33, 34,
        40, 50,
    ];
    d.sort_unstable();
    d.dedup();
    d
}

fn sweep(stride: usize) {
    let dims = edge_dims();
    let mut seed = 1;
    for &w in &dims {
        for &h in &dims {
            for relu in [false, true] {
                seed += 1;
                check(Case { channels: 3, h, w, stride, relu, seed, nan_at: None });
            }
        }
    }
}

#[test]
fn canonical_widths_and_heights_s1() {
    sweep(1);
}

#[test]
fn canonical_widths_and_heights_s2() {
    sweep(2);
}

#[test]
fn channels_1_to_5_and_tiny_planes() {
    let mut seed = 1000;
    for stride in [1, 2] {
        for channels in 1..=5 {
            for (h, w) in
                [(1, 1), (1, 2), (2, 1), (1, 17), (17, 1), (1, 40), (40, 1), (2, 2), (3, 3)]
            {
                for relu in [false, true] {
                    seed += 1;
                    check(Case { channels, h, w, stride, relu, seed, nan_at: None });
                }
            }
        }
    }
}

#[test]
fn mobileone_plane_sizes() {
    let mut seed = 2000;
    for stride in [1, 2] {
        for hw in [7, 14, 28, 56, 112] {
            for relu in [false, true] {
                seed += 1;
                check(Case { channels: 2, h: hw, w: hw, stride, relu, seed, nan_at: None });
            }
        }
    }
}

/// Outputs whose taps include a NaN input are NaN (also through ReLU); all
/// others stay finite and correct. The oracle computes which are which.
#[test]
fn nan_input_propagates_only_to_its_taps() {
    let mut seed = 3000;
    for stride in [1, 2] {
        for (channels, h, w) in
            [(3, 5, 5), (2, 9, 17), (3, 16, 16), (2, 7, 33), (4, 1, 1), (2, 6, 1)]
        {
            let n_in = channels * h * w;
            // First, last, and plane/row borders.
            let spots =
                [0, n_in - 1, w - 1, w.min(n_in - 1), h * w - 1, (h * w + w / 2) % n_in, n_in / 2];
            for at in spots {
                for relu in [false, true] {
                    seed += 1;
                    check(Case { channels, h, w, stride, relu, seed, nan_at: Some(at) });
                }
            }
        }
    }
}

#[test]
fn relu_bites_about_half() {
    // The data recipe must make ReLU matter: about half of the pre-activation
    // outputs are negative.
    let (channels, h, w) = (5, 20, 20);
    let mut rng = Rng(77);
    let input: Vec<f32> = (0..channels * h * w).map(|_| rng.uniform(0.0, 1.0)).collect();
    let weights: Vec<f32> = (0..9 * channels).map(|_| rng.uniform(-1.0, 1.0)).collect();
    let bias: Vec<f32> = (0..channels).map(|_| rng.uniform(-1.0, 1.0)).collect();
    let mut packed = vec![0.0; channels * PACKED_PER_CHANNEL];
    pack_weights(&weights, Some(&bias), channels, &mut packed);
    let mut out = vec![0.0; channels * h * w];
    let isa = Isa::portable();
    let mut scratch = vec![0.0; scratch_len(isa, h, w, 1).unwrap()];
    let args = Dw3x3Args { channels, h, w, packed: &packed, input: &input, output: &mut out };
    dw3x3_s1p1(isa, Activation::Identity, args, &mut scratch);
    let neg = out.iter().filter(|v| **v < 0.0).count() as f64 / out.len() as f64;
    assert!((0.2..=0.8).contains(&neg), "fraction of negative outputs {neg}");
}

#[test]
fn pack_layout_and_missing_bias() {
    let weights: Vec<f32> = (0..18).map(|i| i as f32).collect();
    let mut dst = vec![f32::NAN; 2 * PACKED_PER_CHANNEL];
    pack_weights(&weights, Some(&[-1.0, -2.0]), 2, &mut dst);
    assert_eq!(dst[0], -1.0);
    assert_eq!(&dst[1..10], &weights[..9]);
    assert_eq!(dst[PACKED_PER_CHANNEL], -2.0);
    assert_eq!(&dst[PACKED_PER_CHANNEL + 1..PACKED_PER_CHANNEL + 10], &weights[9..]);
    pack_weights(&weights, None, 2, &mut dst);
    assert_eq!(dst[0], 0.0);
    assert_eq!(dst[PACKED_PER_CHANNEL], 0.0);
}

#[test]
fn names_follow_conventions() {
    use repconv_kernels::{Op, kernel_info};
    for isa in isas("dwconv3x3") {
        for (op, geom) in [(Op::Dw3x3S1, "dw3x3_s1p1_"), (Op::Dw3x3S2, "dw3x3_s2p1_")] {
            let name = kernel_info(op, isa).name;
            assert!(name.starts_with(geom), "{name}");
            assert!(name.ends_with(&format!("__{isa}")), "{name}");
            assert!(name.contains(&format!("x{}__", isa.lanes())), "{name}");
        }
    }
}

#[test]
#[should_panic(expected = "scratch too short")]
fn short_scratch_panics() {
    let (h, w) = (5, 5);
    let mut packed = vec![0.0; PACKED_PER_CHANNEL];
    pack_weights(&[0.0; 9], None, 1, &mut packed);
    let input = vec![0.0; h * w];
    let mut out = vec![0.0; h * w];
    let isa = Isa::best();
    let mut scratch = vec![0.0; scratch_len(isa, h, w, 1).unwrap() - 1];
    let args = Dw3x3Args { channels: 1, h, w, packed: &packed, input: &input, output: &mut out };
    dw3x3_s1p1(isa, Activation::Identity, args, &mut scratch);
}

#[test]
#[should_panic(expected = "output too short")]
fn short_output_panics() {
    let (h, w) = (6, 6);
    let packed = vec![0.0; 2 * PACKED_PER_CHANNEL];
    let input = vec![0.0; 2 * h * w];
    let mut out = vec![0.0; 2 * 3 * 3 - 1];
    let isa = Isa::portable();
    let mut scratch = vec![0.0; scratch_len(isa, h, w, 2).unwrap()];
    let args = Dw3x3Args { channels: 2, h, w, packed: &packed, input: &input, output: &mut out };
    dw3x3_s2p1(isa, Activation::Relu, args, &mut scratch);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn prop_matches_reference(
        channels in 1usize..=5,
        h in 1usize..=40,
        w in 1usize..=40,
        stride in 1usize..=2,
        relu in any::<bool>(),
        seed in any::<u64>(),
    ) {
        check(Case { channels, h, w, stride, relu, seed, nan_at: None });
    }

    #[test]
    fn prop_nan_propagation(
        channels in 1usize..=4,
        h in 1usize..=24,
        w in 1usize..=40,
        stride in 1usize..=2,
        relu in any::<bool>(),
        seed in any::<u64>(),
        at in any::<usize>(),
    ) {
        check(Case { channels, h, w, stride, relu, seed, nan_at: Some(at) });
    }
}

/// Every ISA this CPU has, printed once per suite (the requirement is checked
/// by [`required_isas_ran`], outside the proptests, which would shrink it).
fn isas(suite: &str) -> Vec<Isa> {
    let all: Vec<Isa> = Isa::available().collect();
    common::isas::print(suite, &all.iter().map(|i| i.name()).collect::<Vec<_>>());
    all
}

/// The loops above run every ISA of [`Isa::available`]: it must include
/// those REPCONV_REQUIRE_ISA names (`.ci/run` sets avx512 on a CPU with it).
#[test]
fn required_isas_ran() {
    let all: Vec<&str> = Isa::available().map(|i| i.name()).collect();
    common::isas::require("dwconv3x3", &all);
}
