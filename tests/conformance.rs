//! Every specialised kernel on every instruction set this CPU has, through
//! `Conv2d`, against the reference: random shapes that straddle the register
//! tiles of every ISA, the canonical edge cases, NaN canaries around the
//! output view, NaN guard bands around the input (an out-of-bounds read would
//! poison a result), odd slice offsets, bitwise-identical results for serial
//! and 1/2/3-thread runs of each ISA, and guards that every registry entry the
//! CPU supports ran, with the ISA's own instructions.

mod common;

use common::{check_close, ref_conv, values};
use proptest::prelude::*;
use repconv::conv::{Family, KernelChoice};
use repconv::{
    Activation, Conv2d, Conv2dParams, Isa, IsaKind, Parallelism, TensorView, TensorViewMut,
};
use repconv_kernels::reference::conv2d_nchw_ref;
use repconv_kernels::{Op, Precision, kernels};

/// The largest tile dimensions of any ISA (AVX-512: 8 x 48, 16 lanes): the
/// strategies straddle these, and so the smaller ones too.
const MR: usize = 8;
const NR: usize = 48;
const LANES: usize = 16;

/// One conformance problem.
#[derive(Clone, Debug)]
struct Problem {
    params: Conv2dParams,
    shape: [usize; 4],
    relu: bool,
    bias_shift: f32,
    seed: u64,
    /// Odd offset of the input and output windows inside their NaN buffers.
    offset: usize,
}

impl Problem {
    fn act(&self) -> Activation {
        if self.relu { Activation::Relu } else { Activation::None }
    }

    fn weights(&self) -> Vec<f32> {
        values(self.seed, self.params.weight_len().unwrap())
    }

    fn bias(&self) -> Vec<f32> {
        let b = values(self.seed ^ 7, self.params.out_channels);
        b.iter().map(|b| b + self.bias_shift).collect()
    }

    fn build(&self, choice: KernelChoice, isa: Isa) -> Conv2d {
        let (weights, bias) = (self.weights(), self.bias());
        Conv2d::with_choice(self.params, &weights, Some(&bias), self.act(), choice)
            .unwrap()
            .with_isa(isa)
            .unwrap()
    }

    /// Runs `conv` on the problem's input inside NaN guard bands and returns
    /// the output window after checking that nothing outside it was written.
    fn run(&self, conv: &Conv2d) -> Result<Vec<f32>, String> {
        let in_len: usize = self.shape.iter().product();
        let out_shape = conv.output_shape(self.shape).map_err(|e| e.to_string())?;
        let out_len: usize = out_shape.iter().product();
        let guard = 3 * LANES + 5;
        let mut xbuf = vec![f32::NAN; self.offset + in_len + guard];
        xbuf[self.offset..self.offset + in_len].copy_from_slice(&values(self.seed ^ 3, in_len));
        let mut ybuf = vec![f32::NAN; self.offset + out_len + guard];
        let x = TensorView::new(self.shape, &xbuf[self.offset..self.offset + in_len]).unwrap();
        let y =
            TensorViewMut::new(out_shape, &mut ybuf[self.offset..self.offset + out_len]).unwrap();
        conv.forward_into(x, y).map_err(|e| e.to_string())?;
        let outside = ybuf[..self.offset].iter().chain(&ybuf[self.offset + out_len..]);
        if let Some(v) = outside.into_iter().find(|v| !v.is_nan()) {
            return Err(format!("write outside the output view: {v}"));
        }
        let out = ybuf[self.offset..self.offset + out_len].to_vec();
        if out.iter().any(|v| v.is_nan()) {
            return Err("NaN in output: unwritten element or out-of-bounds read".into());
        }
        Ok(out)
    }

    /// [`Problem::check_isa`] on every ISA this CPU has.
    fn check(&self, family: Family) -> Result<(), String> {
        common::available_isas("conformance")
            .into_iter()
            .try_for_each(|isa| self.check_isa(family, isa))
    }

    fn check_isa(&self, family: Family, isa: Isa) -> Result<(), String> {
        let choice =
            if family == Family::General { KernelChoice::General } else { KernelChoice::Auto };
        let conv = self.build(choice, isa);
        if conv.plan().family() != family || conv.isa() != isa {
            return Err(format!(
                "planned {:?} ({}), expected {family:?} on {isa}",
                conv.plan().family(),
                conv.kernel_name()
            ));
        }
        let got = self.run(&conv)?;
        let rp = ref_conv(&self.params, self.shape, self.act());
        let x = values(self.seed ^ 3, self.shape.iter().product());
        // The oracle gets the data this test made, not what `conv` stored.
        let (want, mag) = conv2d_nchw_ref(&rp, &x, &self.weights(), Some(&self.bias()));
        check_close(&got, &want, &mag).map_err(|e| format!("{} {e}", conv.kernel_name()))?;
        // Any split of the work gives the same bits.
        let serial = self.run(&conv.clone().with_parallelism(Parallelism::Serial))?;
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let par = pool.install(|| self.run(&conv.clone().with_parallel_threshold(0)))?;
            if par.iter().map(|v| v.to_bits()).ne(serial.iter().map(|v| v.to_bits())) {
                return Err(format!("{}: {threads}-thread result differs", conv.kernel_name()));
            }
        }
        if got.iter().map(|v| v.to_bits()).ne(serial.iter().map(|v| v.to_bits())) {
            return Err("default parallelism differs from serial".into());
        }
        Ok(())
    }
}

fn conv1x1(cin: usize, cout: usize, n: usize, h: usize, w: usize) -> (Conv2dParams, [usize; 4]) {
    (Conv2dParams::new(cin, cout, [1, 1]), [n, cin, h, w])
}

fn conv3x3(
    cin: usize,
    cout: usize,
    s: usize,
    n: usize,
    h: usize,
    w: usize,
) -> (Conv2dParams, [usize; 4]) {
    (Conv2dParams::new(cin, cout, [3, 3]).with_stride([s, s]).with_padding([1, 1]), [n, cin, h, w])
}

fn dw3x3(c: usize, s: usize, n: usize, h: usize, w: usize) -> (Conv2dParams, [usize; 4]) {
    (
        Conv2dParams::new(c, c, [3, 3]).with_stride([s, s]).with_padding([1, 1]).with_groups(c),
        [n, c, h, w],
    )
}

fn problem(
    (params, shape): (Conv2dParams, [usize; 4]),
    relu: bool,
    bias_shift: f32,
    seed: u64,
    offset: usize,
) -> Problem {
    Problem { params, shape, relu, bias_shift, seed, offset }
}

fn extras() -> impl Strategy<Value = (bool, f32, u64, usize)> {
    (any::<bool>(), -0.5f32..0.5, any::<u64>(), (0usize..8).prop_map(|o| 2 * o + 1))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn conv1x1_matches_reference(
        cin in 1..=2 * LANES + 1, cout in 1..=3 * MR + 1, n in 1usize..=2,
        h in 1usize..=4, w in 1..=3 * NR + 2, (relu, shift, seed, off) in extras(),
    ) {
        problem(conv1x1(cin, cout, n, h, w), relu, shift, seed, off)
            .check(Family::Conv1x1).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn conv3x3_s1_matches_reference(
        cin in 1usize..=7, cout in 1..=3 * MR + 1, n in 1usize..=2,
        h in 1usize..=9, w in 1..=2 * NR + 2, (relu, shift, seed, off) in extras(),
    ) {
        problem(conv3x3(cin, cout, 1, n, h, w), relu, shift, seed, off)
            .check(Family::Conv3x3).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn conv3x3_s2_matches_reference(
        cin in 1usize..=7, cout in 1..=3 * MR + 1, n in 1usize..=2,
        h in 1usize..=11, w in 1..=4 * NR + 3, (relu, shift, seed, off) in extras(),
    ) {
        problem(conv3x3(cin, cout, 2, n, h, w), relu, shift, seed, off)
            .check(Family::Conv3x3).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn dw3x3_s1_matches_reference(
        c in 2usize..=9, n in 1usize..=2, h in 1usize..=20, w in 1..=3 * LANES + 2,
        (relu, shift, seed, off) in extras(),
    ) {
        problem(dw3x3(c, 1, n, h, w), relu, shift, seed, off)
            .check(Family::Dw3x3).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn dw3x3_s2_matches_reference(
        c in 2usize..=9, n in 1usize..=2, h in 1usize..=21, w in 1..=4 * LANES + 3,
        (relu, shift, seed, off) in extras(),
    ) {
        problem(dw3x3(c, 2, n, h, w), relu, shift, seed, off)
            .check(Family::Dw3x3).map_err(TestCaseError::fail)?;
    }
}

/// The canonical cases for each family (XNNPACK-style): tile-equal, smaller,
/// larger and multiple widths, one pixel, one input channel, ReLU clipping
/// about half the outputs, prime row lengths.
fn canonical(
    family: Family,
    make: impl Fn(usize, usize, usize, usize) -> (Conv2dParams, [usize; 4]),
) {
    // Around 8 and 16 lanes and the 16- and 48-pixel tiles.
    let widths = [1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 37, 47, 48, 49, 96, 97];
    let mut seed = 1;
    for &w in &widths {
        for &(cin, cout, h) in
            &[(1, 1, 1), (1, 6, 3), (1, MR, 3), (3, 7, 2), (3, MR + 1, 2), (5, 12, 5), (17, 23, 4)]
        {
            for relu in [false, true] {
                seed += 1;
                let p = problem(make(cin, cout, h, w), relu, if relu { 0.0 } else { 0.3 }, seed, 1);
                if let Err(e) = p.check(family) {
                    panic!("{family:?} cin={cin} cout={cout} h={h} w={w} relu={relu}: {e}");
                }
            }
        }
    }
}

#[test]
fn conv1x1_canonical_cases() {
    canonical(Family::Conv1x1, |cin, cout, h, w| conv1x1(cin, cout, 1, h, w));
}

#[test]
fn conv3x3_s1_canonical_cases() {
    canonical(Family::Conv3x3, |cin, cout, h, w| conv3x3(cin, cout, 1, 1, h, w));
}

#[test]
fn conv3x3_s2_canonical_cases() {
    canonical(Family::Conv3x3, |cin, cout, h, w| conv3x3(cin, cout, 2, 1, h, w));
}

#[test]
fn dw3x3_canonical_cases() {
    // Channels are cin + 1 (one channel would be a dense 3x3); cout is unused.
    canonical(Family::Dw3x3, |cin, _, h, w| dw3x3(cin + 1, 1, 1, h, w));
    canonical(Family::Dw3x3, |cin, _, h, w| dw3x3(cin + 1, 2, 1, h, w));
}

#[test]
fn dw1x1_canonical_cases() {
    for s in [1, 2] {
        canonical(Family::Dw1x1, |cin, _, h, w| {
            let c = cin + 1;
            (Conv2dParams::new(c, c, [1, 1]).with_stride([s, s]).with_groups(c), [2, c, h, w])
        });
    }
}

#[test]
fn general_path_canonical_cases() {
    // The general path under the same harness (canaries, offsets, determinism).
    canonical(Family::General, |cin, cout, h, w| {
        let p = Conv2dParams::new(cin, cout, [2, 3]).with_padding([1, 0]).with_dilation([1, 2]);
        (p, [1, cin, h + 1, w + 4])
    });
}

#[test]
fn nan_propagates_like_pytorch() {
    // A NaN input poisons exactly the outputs whose receptive field holds it,
    // through the bias and the ReLU (PyTorch: relu(NaN) = NaN).
    for (params, shape) in
        [conv1x1(3, 9, 1, 2, 20), conv3x3(3, 9, 1, 1, 5, 20), conv3x3(2, 9, 2, 1, 6, 21)]
    {
        for relu in [false, true] {
            let act = if relu { Activation::Relu } else { Activation::None };
            let weights = vec![-0.25; params.weight_len().unwrap()];
            let conv =
                Conv2d::new(params, &weights, Some(&vec![-5.0; params.out_channels]), act).unwrap();
            let len: usize = shape.iter().product();
            let mut x = vec![1.0; len];
            x[shape[3] + 2] = f32::NAN; // channel 0, row 1, column 2
            let y = conv.forward(&repconv::Tensor::from_vec(shape, x.clone()).unwrap()).unwrap();
            let rp = ref_conv(&params, shape, act);
            let (want, _) = conv2d_nchw_ref(&rp, &x, &weights, conv.bias());
            let nan_got: Vec<bool> = y.as_slice().iter().map(|v| v.is_nan()).collect();
            let nan_want: Vec<bool> = want.iter().map(|v| v.is_nan()).collect();
            assert!(nan_want.iter().any(|&b| b), "reference must see the NaN");
            assert_eq!(nan_got, nan_want, "{} relu={relu}", conv.kernel_name());
        }
    }
}

#[test]
fn plan_table_maps_shapes_to_kernels() {
    let cases: Vec<(Conv2dParams, Op)> = vec![
        (Conv2dParams::new(128, 128, [1, 1]), Op::Conv1x1),
        (Conv2dParams::new(3, 48, [3, 3]).with_stride([2, 2]).with_padding([1, 1]), Op::Conv3x3S2),
        (Conv2dParams::new(64, 64, [3, 3]).with_padding([1, 1]), Op::Conv3x3S1),
        (Conv2dParams::new(48, 48, [3, 3]).with_padding([1, 1]).with_groups(48), Op::Dw3x3S1),
        (
            Conv2dParams::new(256, 256, [3, 3])
                .with_stride([2, 2])
                .with_padding([1, 1])
                .with_groups(256),
            Op::Dw3x3S2,
        ),
        (Conv2dParams::new(1, 1, [3, 3]).with_padding([1, 1]), Op::Conv3x3S1),
        (Conv2dParams::new(48, 48, [1, 1]).with_groups(48), Op::Dw1x1S1),
        (Conv2dParams::new(48, 48, [1, 1]).with_stride([2, 2]).with_groups(48), Op::Dw1x1S2),
        // Near misses fall back to the general path.
        (Conv2dParams::new(48, 96, [3, 3]).with_padding([1, 1]).with_groups(48), Op::General),
        (Conv2dParams::new(48, 48, [3, 3]).with_groups(48), Op::General),
        (Conv2dParams::new(64, 64, [1, 1]).with_stride([2, 2]), Op::General),
        (Conv2dParams::new(64, 64, [1, 1]).with_padding([1, 1]), Op::General),
        (Conv2dParams::new(64, 64, [3, 3]), Op::General),
        (Conv2dParams::new(64, 64, [3, 3]).with_padding([1, 1]).with_dilation([2, 2]), Op::General),
        (Conv2dParams::new(64, 64, [3, 3]).with_padding([1, 1]).with_stride([1, 2]), Op::General),
        (Conv2dParams::new(64, 64, [3, 3]).with_padding([1, 1]).with_groups(2), Op::General),
        (Conv2dParams::new(64, 64, [5, 5]).with_padding([2, 2]), Op::General),
    ];
    for isa in common::available_isas("conformance") {
        for (p, op) in &cases {
            let w = vec![0.0; p.weight_len().unwrap()];
            let conv = Conv2d::new(*p, &w, None, Activation::None).unwrap().with_isa(isa).unwrap();
            let k = conv.plan().kernel();
            assert_eq!((k.op, k.isa), (*op, isa.kind()), "{p:?} on {isa}: {}", k.name);
            assert!(conv.kernel_name().ends_with(&format!("__{isa}")), "{}", conv.kernel_name());
        }
    }
}

/// A problem that the planner sends to `op`, small enough to check quickly.
fn problem_for(op: Op, seed: u64) -> (Problem, Family) {
    let (pair, family) = match op {
        Op::Conv1x1 => (conv1x1(5, 13, 1, 3, 53), Family::Conv1x1),
        Op::Conv3x3S1 => (conv3x3(3, 11, 1, 1, 6, 51), Family::Conv3x3),
        Op::Conv3x3S2 => (conv3x3(3, 11, 2, 1, 7, 53), Family::Conv3x3),
        Op::Dw3x3S1 => (dw3x3(5, 1, 1, 9, 37), Family::Dw3x3),
        Op::Dw3x3S2 => (dw3x3(5, 2, 1, 9, 37), Family::Dw3x3),
        Op::Dw1x1S1 | Op::Dw1x1S2 => {
            let s = if op == Op::Dw1x1S1 { 1 } else { 2 };
            let p = Conv2dParams::new(5, 5, [1, 1]).with_stride([s, s]).with_groups(5);
            ((p, [1, 5, 7, 37]), Family::Dw1x1)
        }
        Op::General => {
            let p = Conv2dParams::new(4, 6, [2, 3]).with_padding([1, 0]).with_dilation([1, 2]);
            ((p, [1, 4, 6, 41]), Family::General)
        }
    };
    (problem(pair, true, 0.0, seed, 3), family)
}

/// No silent skips: every registry entry whose ISA this CPU has is planned
/// and checked against the reference here, and every ISA the CPU reports
/// (asked directly, not through repconv) is available to repconv.
#[test]
fn every_supported_registry_entry_runs_and_matches() {
    #[cfg(target_arch = "x86_64")]
    {
        let has = |f: &str| match f {
            "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
            "avx512vl" => std::arch::is_x86_feature_detected!("avx512vl"),
            "avx512dq" => std::arch::is_x86_feature_detected!("avx512dq"),
            "avx2" => std::arch::is_x86_feature_detected!("avx2"),
            _ => std::arch::is_x86_feature_detected!("fma"),
        };
        let avx2 = has("avx2") && has("fma");
        assert_eq!(Isa::new(IsaKind::Avx2).is_ok(), avx2, "AVX2+FMA detection");
        assert_eq!(
            Isa::new(IsaKind::Avx512).is_ok(),
            avx2 && has("avx512f") && has("avx512vl") && has("avx512dq"),
            "AVX-512 detection"
        );
    }
    // The f32 entries; the bf16 ones are exercised by tests/bf16.rs.
    let f32_kernels: Vec<_> = kernels().iter().filter(|k| k.precision == Precision::F32).collect();
    let mut ran = 0;
    for (i, k) in f32_kernels.iter().enumerate() {
        let Ok(isa) = Isa::new(k.isa) else { continue };
        let (p, family) = problem_for(k.op, 100 + i as u64);
        let choice =
            if family == Family::General { KernelChoice::General } else { KernelChoice::Auto };
        assert_eq!(p.build(choice, isa).kernel_name(), k.name, "problem_for({:?})", k.op);
        p.check_isa(family, isa).unwrap_or_else(|e| panic!("{}: {e}", k.name));
        ran += 1;
    }
    let compiled = IsaKind::ALL.into_iter().filter(|k| k.compiled()).count();
    let expected = Isa::available().count() * f32_kernels.len() / compiled;
    assert_eq!(ran, expected, "registry entries exercised");
}

/// The x86 instantiations really run their own instructions: `a * a + c`
/// with `a = 1 + 2^-12`, `c = -(1 + 2^-11)` is `2^-24` when fused (one
/// rounding) and `0` when the product is rounded first (to even), as the
/// portable SSE2 build does. The GEMM, both depthwise 3x3 and the depthwise
/// 1x1 kernels are probed through `Conv2d`.
#[test]
fn x86_isas_execute_fused_multiply_add() {
    let a = 1.0 + 2f32.powi(-12);
    let c = -(1.0 + 2f32.powi(-11));
    let fused = a.mul_add(a, c);
    assert_eq!(fused, 2f32.powi(-24));
    assert_eq!(std::hint::black_box(a) * std::hint::black_box(a) + c, 0.0);
    let probes: Vec<(Conv2dParams, [usize; 4])> = vec![
        conv1x1(1, 9, 1, 3, 53),
        dw3x3(2, 1, 1, 5, 37),
        dw3x3(2, 2, 1, 5, 37),
        (Conv2dParams::new(2, 2, [1, 1]).with_groups(2), [1, 2, 5, 37]),
    ];
    for isa in
        common::available_isas("conformance").into_iter().filter(|i| i.kind() != IsaKind::Portable)
    {
        for (p, shape) in &probes {
            // Only the centre tap is `a`; every input is `a`; the bias is `c`.
            let mut w = vec![0.0; p.weight_len().unwrap()];
            let taps = p.kernel[0] * p.kernel[1];
            for (o, chunk) in w.chunks_mut(taps * p.in_per_group()).enumerate() {
                chunk[(o % p.in_per_group()) * taps + taps / 2] = a;
            }
            let bias = vec![c; p.out_channels];
            let conv =
                Conv2d::new(*p, &w, Some(&bias), Activation::None).unwrap().with_isa(isa).unwrap();
            let x = repconv::Tensor::full(*shape, a).unwrap();
            let y = conv.forward(&x).unwrap();
            let [_, _, oh, ow] = y.shape();
            // An interior pixel of every channel (its centre tap is in bounds).
            for plane in y.as_slice().chunks(oh * ow) {
                let v = plane[(oh / 2) * ow + ow / 2];
                assert_eq!(v, fused, "{} on {isa} did not fuse", conv.kernel_name());
            }
        }
    }
}
