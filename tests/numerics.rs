//! The numerics contract: NaN and ±Inf in the input propagate as IEEE
//! arithmetic (and PyTorch) say — through every kernel family, the bias, ReLU
//! (`relu(NaN) = NaN`, `relu(-Inf) = 0`), BatchNorm and squeeze-excitation —
//! and land exactly where the f64 reference puts them, on every ISA this CPU
//! has (each ISA's kernels have their own epilogues and tails).

mod common;

use common::{available_isas, ref_conv, values};
use repconv::mobileone::{BlockConfig, MobileOneBlock, SplitMix64};
use repconv::{Activation, Conv2d, Conv2dParams, Isa, Tensor};
use repconv_kernels::reference::conv2d_nchw_ref;

/// Classifies a value as NaN, +Inf, -Inf or finite.
fn class(v: f32) -> u8 {
    if v.is_nan() {
        0
    } else if v == f32::INFINITY {
        1
    } else if v == f32::NEG_INFINITY {
        2
    } else {
        3
    }
}

fn layers() -> Vec<(&'static str, Conv2dParams, [usize; 4])> {
    let dw = |c: usize, s: usize, k: usize| {
        Conv2dParams::new(c, c, [k, k])
            .with_stride([s, s])
            .with_padding([k / 2, k / 2])
            .with_groups(c)
    };
    vec![
        ("conv1x1", Conv2dParams::new(5, 19, [1, 1]), [1, 5, 6, 21]),
        ("conv3x3 s1", Conv2dParams::new(4, 10, [3, 3]).with_padding([1, 1]), [1, 4, 9, 37]),
        (
            "conv3x3 s2",
            Conv2dParams::new(3, 9, [3, 3]).with_padding([1, 1]).with_stride([2, 2]),
            [1, 3, 11, 35],
        ),
        ("dw3x3 s1", dw(6, 1, 3), [1, 6, 12, 40]),
        ("dw3x3 s1 7x7", dw(6, 1, 3), [1, 6, 7, 7]),
        ("dw3x3 s2", dw(6, 2, 3), [1, 6, 13, 38]),
        ("dw1x1 s1", dw(6, 1, 1), [1, 6, 5, 19]),
        ("dw1x1 s2", dw(6, 2, 1), [1, 6, 5, 19]),
        (
            "general",
            Conv2dParams::new(4, 6, [2, 3]).with_dilation([2, 1]).with_padding([1, 1]),
            [1, 4, 8, 15],
        ),
    ]
}

#[test]
fn nan_and_inf_inputs_propagate_like_the_reference_in_every_kernel() {
    for isa in available_isas("numerics::nan_and_inf_inputs") {
        for (name, params, shape) in layers() {
            for act in [Activation::None, Activation::Relu] {
                check_layer(isa, name, params, shape, act);
            }
        }
    }
}

/// One layer on `isa`'s kernels: NaN, +Inf and -Inf in the input land where
/// the reference puts them.
fn check_layer(isa: Isa, name: &str, params: Conv2dParams, shape: [usize; 4], act: Activation) {
    let weights = values(3, params.weight_len().unwrap());
    let bias = values(4, params.out_channels);
    let conv = Conv2d::new_on(params, &weights, Some(&bias), act, isa).unwrap();
    assert_eq!(conv.isa(), isa);
    let len: usize = shape.iter().product();
    let mut x = values(5, len);
    // A NaN, a +Inf and a -Inf in different channels and places, one
    // on a plane border, one inside.
    x[2 * shape[3] + 2] = f32::NAN;
    x[len / 2] = f32::INFINITY;
    x[len - 1] = f32::NEG_INFINITY;
    let y = conv.forward(&Tensor::from_vec(shape, x.clone()).unwrap()).unwrap();
    let (want, mag) = conv2d_nchw_ref(&ref_conv(&params, shape, act), &x, &weights, Some(&bias));
    let got: Vec<u8> = y.as_slice().iter().map(|&v| class(v)).collect();
    let exp: Vec<u8> = want.iter().map(|&v| class(v)).collect();
    assert!(exp.contains(&0), "{name}: the reference must see a NaN");
    assert_eq!(got, exp, "{name} ({}, {act:?}): NaN/Inf pattern differs", conv.kernel_name());
    // Finite outputs within the suite's tolerance too: a kernel that
    // got the pattern right and the values wrong must not pass.
    let finite: Vec<usize> = (0..want.len()).filter(|&i| want[i].is_finite()).collect();
    assert!(!finite.is_empty(), "{name}: nothing finite to compare");
    let pick = |v: &[f32]| finite.iter().map(|&i| v[i]).collect::<Vec<_>>();
    let magnitude = pick(&mag);
    common::check_close(&pick(y.as_slice()), &pick(&want), &magnitude)
        .unwrap_or_else(|e| panic!("{name} ({}, {act:?}): {e}", conv.kernel_name()));
}

#[test]
fn nan_propagates_through_batchnorm_and_squeeze_excitation_in_both_forms() {
    for isa in available_isas("numerics::nan_through_blocks") {
        for (se, dw) in [(false, false), (false, true), (true, true)] {
            check_block(isa, se, dw);
        }
    }
}

/// One block (dense or depthwise, with or without SE) on `isa`'s kernels,
/// in both forms: a NaN in the input spreads exactly as in PyTorch.
fn check_block(isa: Isa, se: bool, dw: bool) {
    let c = 16;
    let config =
        BlockConfig::new(c, c, 3).with_groups(if dw { c } else { 1 }).with_branches(2).with_se(se);
    let block =
        MobileOneBlock::random(config, &mut SplitMix64::new(9)).unwrap().with_isa(isa).unwrap();
    let fused = block.reparameterize().unwrap();
    assert_eq!((block.isa(), fused.isa()), (isa, isa));
    let mut x = values(6, c * 8 * 8);
    x[3 * 64 + 4 * 8 + 4] = f32::NAN; // channel 3, centre
    let x = Tensor::from_vec([1, c, 8, 8], x).unwrap();
    for (form, y) in
        [("multi-branch", block.forward(&x).unwrap()), ("fused", fused.forward(&x).unwrap())]
    {
        let nan = |ch: usize, i: usize| y.as_slice()[ch * 64 + i].is_nan();
        // The NaN's own 3x3 neighbourhood is NaN in channel 3 (and in
        // every channel for a dense conv).
        assert!(nan(3, 4 * 8 + 4) && nan(3, 3 * 8 + 3), "{form} se={se} dw={dw}");
        if se {
            // SE pools every pixel of a channel: the NaN reaches the scale
            // of every channel, hence every output (as in PyTorch).
            assert!(y.as_slice().iter().all(|v| v.is_nan()), "{form}: SE must spread NaN");
        } else if dw {
            // Depthwise: other channels stay finite.
            assert!((0..64).all(|i| !nan(0, i)), "{form}: NaN leaked across channels");
            assert!(!nan(3, 0), "{form}: NaN leaked outside its receptive field");
        } else {
            assert!((0..c).all(|ch| nan(ch, 4 * 8 + 4)), "{form}: dense conv mixes channels");
            assert!(!nan(0, 0), "{form}: NaN leaked outside its receptive field");
        }
    }
}
