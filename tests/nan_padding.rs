//! A non-finite weight that meets only zero padding: PyTorch computes
//! `w * 0 = NaN` there, so the output is NaN exactly where a padding tap of
//! that weight lands, and finite elsewhere. One semantics for every kernel
//! family and ISA (the depthwise stride-1 kernels and the general path's
//! direct tap loop skip padding taps, and once gave finite values there).

mod common;

use common::{check_close, ref_conv, values};
use repconv::conv::KernelChoice;
use repconv::{Activation, Conv2d, Conv2dParams, Tensor};
use repconv_kernels::reference::conv2d_nchw_ref;

/// One geometry of one family.
struct Case {
    name: &'static str,
    params: Conv2dParams,
    shape: [usize; 4],
    choice: KernelChoice,
    /// A scratch limit in bytes (a small one forces the direct tap loop).
    limit: Option<usize>,
}

fn case(
    name: &'static str,
    params: Conv2dParams,
    shape: [usize; 4],
    choice: KernelChoice,
    limit: Option<usize>,
) -> Case {
    Case { name, params, shape, choice, limit }
}

/// One geometry per family, on planes wide enough for every kernel's
/// in-place path (>= 9 wide), with stride 1 and 2 where the family has both.
fn cases() -> Vec<Case> {
    let dense = |s| Conv2dParams::new(3, 5, [3, 3]).with_padding([1, 1]).with_stride([s, s]);
    let dw =
        |s| Conv2dParams::new(6, 6, [3, 3]).with_padding([1, 1]).with_stride([s, s]).with_groups(6);
    let odd = Conv2dParams::new(4, 3, [3, 5]).with_padding([2, 1]).with_dilation([2, 1]);
    vec![
        case("conv3x3 s1", dense(1), [1, 3, 11, 19], KernelChoice::Auto, None),
        case("conv3x3 s2", dense(2), [1, 3, 13, 19], KernelChoice::Auto, None),
        case("dw3x3 s1", dw(1), [2, 6, 10, 21], KernelChoice::Auto, None),
        case("dw3x3 s1 narrow", dw(1), [1, 6, 9, 3], KernelChoice::Auto, None),
        case("dw3x3 s2", dw(2), [1, 6, 13, 19], KernelChoice::Auto, None),
        case("general im2col", odd, [1, 4, 9, 13], KernelChoice::Auto, None),
        case("general taps", odd, [1, 4, 9, 13], KernelChoice::Auto, Some(16)),
        case("dense 3x3 via general", dense(1), [1, 3, 10, 17], KernelChoice::General, None),
    ]
}

#[test]
fn non_finite_weights_in_the_padding_give_nan_like_pytorch() {
    for isa in common::available_isas("nan_padding") {
        for Case { name, params, shape, choice, limit } in cases() {
            let wlen = params.weight_len().unwrap();
            let [kh, kw] = params.kernel;
            for (bad_tap, bad) in
                [(0, f32::NAN), (kh * kw - 1, f32::INFINITY), (kw - 1, f32::NEG_INFINITY)]
            {
                // Output channel 1's weight at one corner tap is non-finite.
                let mut w = values(7, wlen);
                w[params.in_per_group() * kh * kw + bad_tap] = bad;
                let bias = values(8, params.out_channels);
                let x = values(9, shape.iter().product());
                for act in [Activation::None, Activation::Relu] {
                    let mut conv =
                        Conv2d::with_choice(params, &w, Some(&bias), act, choice).unwrap();
                    conv = conv.with_isa(isa).unwrap();
                    if let Some(bytes) = limit {
                        conv = conv.with_scratch_limit(bytes);
                    }
                    let input = Tensor::from_vec(shape, x.clone()).unwrap();
                    let got = conv.forward(&input).unwrap();
                    let (want, mag) =
                        conv2d_nchw_ref(&ref_conv(&params, shape, act), &x, &w, Some(&bias));
                    let nans = want.iter().filter(|v| v.is_nan()).count();
                    assert!(
                        nans > 0 && nans < want.len(),
                        "{name}: the case must put NaN somewhere"
                    );
                    let what = format!(
                        "{name} ({}) on {isa}, tap {bad_tap} = {bad}, {act:?}",
                        conv.kernel_name()
                    );
                    // Infinite outputs (finite inputs times an infinite
                    // weight) must match exactly; the rest as usual.
                    let finite: Vec<usize> =
                        (0..want.len()).filter(|&i| want[i].is_finite()).collect();
                    for (i, (g, r)) in got.as_slice().iter().zip(&want).enumerate() {
                        assert_eq!(
                            g.is_nan(),
                            r.is_nan(),
                            "{what}: NaN at [{i}]: got {g}, want {r}"
                        );
                        if r.is_infinite() {
                            assert_eq!(g, r, "{what}: at [{i}]");
                        }
                    }
                    let pick = |v: &[f32]| finite.iter().map(|&i| v[i]).collect::<Vec<f32>>();
                    check_close(&pick(got.as_slice()), &pick(&want), &pick(&mag))
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                }
            }
        }
    }
}
