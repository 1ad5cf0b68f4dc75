//! Every specialised kernel, through `Conv2d`, against the reference:
//! random shapes that straddle register-tile borders, the canonical edge
//! cases, NaN canaries around the output view, NaN guard bands around the
//! input (an out-of-bounds read would poison a result), odd slice offsets,
//! and bitwise-identical results for serial and 1/2/3-thread runs.

mod common;

use common::{check_close, ref_conv, values};
use proptest::prelude::*;
use repconv::conv::{Family, KernelChoice};
use repconv::{Activation, Conv2d, Conv2dParams, Parallelism, TensorView, TensorViewMut};
use repconv_kernels::conv1x1::{MR, NR};
use repconv_kernels::lanes::LANES;
use repconv_kernels::reference::conv2d_nchw_ref;

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

    fn build(&self, choice: KernelChoice) -> Conv2d {
        let p = &self.params;
        let weights = values(self.seed, p.weight_len().unwrap());
        let bias: Vec<f32> =
            values(self.seed ^ 7, p.out_channels).iter().map(|b| b + self.bias_shift).collect();
        Conv2d::with_choice(*p, &weights, Some(&bias), self.act(), choice).unwrap()
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

    fn check(&self, family: Family) -> Result<(), String> {
        let conv = self.build(KernelChoice::Auto);
        if conv.plan().family() != family {
            return Err(format!(
                "planned {:?} ({}), expected {family:?}",
                conv.plan().family(),
                conv.kernel_name()
            ));
        }
        let got = self.run(&conv)?;
        let rp = ref_conv(&self.params, self.shape, self.act());
        let x = values(self.seed ^ 3, self.shape.iter().product());
        let (want, mag) = conv2d_nchw_ref(&rp, &x, conv.weights(), conv.bias());
        check_close(&got, &want, &mag).map_err(|e| format!("{} {e}", conv.kernel_name()))?;
        // Any split of the work gives the same bits.
        let serial = self.run(&conv.clone().with_parallelism(Parallelism::Serial))?;
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let par = pool.install(|| self.run(&conv.clone().with_parallel_threshold(0)))?;
            if par.iter().map(|v| v.to_bits()).ne(serial.iter().map(|v| v.to_bits())) {
                return Err(format!("{threads}-thread result differs from serial"));
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
    #![proptest_config(ProptestConfig::with_cases(256))]

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
    let widths = [1, LANES - 1, LANES, LANES + 1, NR - 1, NR, NR + 1, 2 * NR, 2 * NR + 1, 31, 37];
    let mut seed = 1;
    for &w in &widths {
        for &(cin, cout, h) in
            &[(1, 1, 1), (1, MR, 3), (3, MR + 1, 2), (5, 2 * MR, 5), (LANES + 1, 3 * MR - 1, 4)]
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
    use repconv_kernels::{conv1x1 as k1, conv3x3 as k3, dwconv3x3 as kd};
    let cases: Vec<(Conv2dParams, &str)> = vec![
        (Conv2dParams::new(128, 128, [1, 1]), k1::NAME),
        (Conv2dParams::new(3, 48, [3, 3]).with_stride([2, 2]).with_padding([1, 1]), k3::NAME_S2),
        (Conv2dParams::new(64, 64, [3, 3]).with_padding([1, 1]), k3::NAME_S1),
        (Conv2dParams::new(48, 48, [3, 3]).with_padding([1, 1]).with_groups(48), kd::NAME_S1),
        (
            Conv2dParams::new(256, 256, [3, 3])
                .with_stride([2, 2])
                .with_padding([1, 1])
                .with_groups(256),
            kd::NAME_S2,
        ),
        (Conv2dParams::new(1, 1, [3, 3]).with_padding([1, 1]), k3::NAME_S1),
        (Conv2dParams::new(48, 48, [1, 1]).with_groups(48), repconv_kernels::dwconv1x1::NAME_S1),
        (
            Conv2dParams::new(48, 48, [1, 1]).with_stride([2, 2]).with_groups(48),
            repconv_kernels::dwconv1x1::NAME_S2,
        ),
        // Near misses fall back to the general path.
        (Conv2dParams::new(48, 96, [3, 3]).with_padding([1, 1]).with_groups(48), "general"),
        (Conv2dParams::new(48, 48, [3, 3]).with_groups(48), "general"),
        (Conv2dParams::new(64, 64, [1, 1]).with_stride([2, 2]), "general"),
        (Conv2dParams::new(64, 64, [1, 1]).with_padding([1, 1]), "general"),
        (Conv2dParams::new(64, 64, [3, 3]), "general"),
        (Conv2dParams::new(64, 64, [3, 3]).with_padding([1, 1]).with_dilation([2, 2]), "general"),
        (Conv2dParams::new(64, 64, [3, 3]).with_padding([1, 1]).with_stride([1, 2]), "general"),
        (Conv2dParams::new(64, 64, [3, 3]).with_padding([1, 1]).with_groups(2), "general"),
        (Conv2dParams::new(64, 64, [5, 5]).with_padding([2, 2]), "general"),
    ];
    for (p, want) in cases {
        let conv =
            Conv2d::new(p, &vec![0.0; p.weight_len().unwrap()], None, Activation::None).unwrap();
        assert!(conv.kernel_name().starts_with(want), "{p:?}: {} != {want}", conv.kernel_name());
    }
}
