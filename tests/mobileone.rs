//! MobileOne: the reparameterized (fused) form against the multi-branch form,
//! block by block on random geometry and BN statistics, and whole networks;
//! BN folding against hand computations; the multi-branch form against the
//! f64 reference convolution; errors instead of panics; no allocation in the
//! steady state.
//!
//! Tolerance (fused vs multi-branch, and multi-branch vs the f64 oracle), per
//! element: `|fused[i] - multi[i]| <= 1e-5 * mag[i] + 1e-6`, where `mag[i]` is
//! the magnitude of the terms that make output `i`, propagated through the
//! block in f64 by the oracle: for each conv + BN branch
//! `|s| * Σ|w·x| + |s * mean| + |beta|` (`s = gamma / sqrt(var + eps)`), for
//! the skip branch `|s * x| + |s * mean| + |beta|`, summed over branches; with
//! squeeze-excitation, times the gate `g`, plus `|pre| * g * (1 - g) * Z`,
//! where `Z` is the same magnitude of the gate's logit (how far rounding in
//! the pre-activations moves the gate). ReLU only shrinks differences. So an
//! output that ReLU clips, or a small output next to large ones, is held to
//! the rounding its own terms allow, not to the largest output's. For a
//! network, each logit to 1e-5 of the magnitude of its head terms and the
//! final features to 1e-4 of their largest value (44 blocks of accumulated
//! f32 rounding; see `check_network`). Both forms round differently (f32 sums
//! of k + 2 branches vs one f32 sum of f64-folded weights), so exact equality
//! is never expected. Differences are NaN-aware (`common::max_abs_diff`).

mod common;

use common::{abs_diff, max_abs, max_abs_diff, values};
use proptest::prelude::*;
use repconv::mobileone::{
    BatchNorm2d, Block, BlockConfig, ConvBn, MobileOne, MobileOneBlock, MobileOneConfig,
    SplitMix64, SqueezeExcite, Variant, Workspace, fold_conv_bn, identity_kernel, se_channels,
};
use repconv::{Error, Tensor, TensorView, TensorViewMut};
use repconv_kernels::reference::{RefConv, conv2d_nchw_ref};

// ---------------------------------------------------------------------------
// Helpers.

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold(0, |best, (i, x)| if *x > v[best] { i } else { best })
}

/// Independent random BN statistics: variance log-uniform in [0.01, 10),
/// mean in [-1, 1), gamma in [-2, 2), beta in [-1, 1).
fn random_bn(channels: usize, eps: f32, rng: &mut SplitMix64) -> BatchNorm2d {
    let var = (0..channels).map(|_| rng.log_uniform(0.01, 10.0) as f32).collect();
    BatchNorm2d::new(
        rng.uniform_vec(channels, -2.0, 2.0),
        rng.uniform_vec(channels, -1.0, 1.0),
        rng.uniform_vec(channels, -1.0, 1.0),
        var,
        eps,
    )
    .unwrap()
}

fn random_convbn(params: repconv::Conv2dParams, eps: f32, rng: &mut SplitMix64) -> ConvBn {
    let w = rng.uniform_vec(params.weight_len().unwrap(), -1.0, 1.0);
    ConvBn::new(params, &w, random_bn(params.out_channels, eps, rng)).unwrap()
}

/// A block with independent BN statistics on every branch (not the
/// correlated ones of `MobileOneBlock::random`).
fn block_with_random_stats(config: BlockConfig, eps: f32, seed: u64) -> MobileOneBlock {
    let mut rng = SplitMix64::new(seed);
    let kxk = (0..config.num_conv_branches)
        .map(|_| random_convbn(config.conv_params(), eps, &mut rng))
        .collect();
    let scale = config.has_scale().then(|| random_convbn(config.scale_params(), eps, &mut rng));
    let identity = config.has_identity().then(|| random_bn(config.out_channels, eps, &mut rng));
    let se = config.use_se.then(|| SqueezeExcite::random(config.out_channels, &mut rng).unwrap());
    MobileOneBlock::from_parts(config, kxk, scale, identity, se).unwrap()
}

/// The multi-branch block computed independently in f64 with the reference
/// convolution: `(output, magnitude)`, the magnitude per element as in the
/// module docs.
fn block_oracle(block: &MobileOneBlock, x: &Tensor) -> (Vec<f64>, Vec<f64>) {
    let c = *block.config();
    let [n, cin, h, w] = x.shape();
    let [_, cout, oh, ow] = block.output_shape(x.shape()).unwrap();
    let hw = oh * ow;
    let mut sum = vec![0f64; n * cout * hw];
    let mut mag = vec![0f64; n * cout * hw];
    // BN as `(v - mean) * s + beta`: its per-channel s, |s * mean| + |beta|.
    let bn_terms = |bn: &BatchNorm2d, ch: usize| {
        let s = f64::from(bn.gamma()[ch])
            / (f64::from(bn.running_var()[ch]) + f64::from(bn.eps())).sqrt();
        let mean = f64::from(bn.running_mean()[ch]);
        (s, mean, f64::from(bn.beta()[ch]))
    };
    let mut add = |p: repconv::Conv2dParams, br: &ConvBn| {
        let rc = RefConv {
            n,
            cin,
            h,
            w,
            cout,
            kernel: p.kernel,
            stride: p.stride,
            padding: p.padding,
            dilation: [1, 1],
            groups: p.groups,
            relu: false,
        };
        let (y, conv_mag) = conv2d_nchw_ref(&rc, x.as_slice(), br.conv().weights(), None);
        for (i, ((s_i, m_i), (v, cm))) in
            sum.iter_mut().zip(mag.iter_mut()).zip(y.into_iter().zip(conv_mag)).enumerate()
        {
            let (sc, mean, beta) = bn_terms(br.bn(), (i / hw) % cout);
            *s_i += (f64::from(v) - mean) * sc + beta;
            *m_i += sc.abs() * f64::from(cm) + (sc * mean).abs() + beta.abs();
        }
    };
    for br in block.conv_kxk() {
        add(c.conv_params(), br);
    }
    if let Some(br) = block.conv_scale() {
        add(c.scale_params(), br);
    }
    if let Some(bn) = block.identity() {
        for (i, ((s_i, m_i), v)) in sum.iter_mut().zip(mag.iter_mut()).zip(x.as_slice()).enumerate()
        {
            let (sc, mean, beta) = bn_terms(bn, (i / hw) % cout);
            *s_i += (f64::from(*v) - mean) * sc + beta;
            *m_i += (sc * f64::from(*v)).abs() + (sc * mean).abs() + beta.abs();
        }
    }
    let mut out = sum.clone();
    if let Some(se) = block.attn() {
        let rd = se.rd_channels();
        for ((img, img_mag), img_pre) in out
            .chunks_exact_mut(cout * hw)
            .zip(mag.chunks_exact_mut(cout * hw))
            .zip(sum.chunks_exact(cout * hw))
        {
            let mean: Vec<f64> =
                img.chunks_exact(hw).map(|p| p.iter().sum::<f64>() / hw as f64).collect();
            let mean_mag: Vec<f64> =
                img_mag.chunks_exact(hw).map(|p| p.iter().sum::<f64>() / hw as f64).collect();
            // Each fc layer: value, and magnitude `|b| + Σ |w| * input magnitude`.
            let (hidden, hidden_mag): (Vec<f64>, Vec<f64>) = (0..rd)
                .map(|r| {
                    let row = &se.fc1_weight()[r * cout..(r + 1) * cout];
                    let b = f64::from(se.fc1_bias()[r]);
                    let z = b + row.iter().zip(&mean).map(|(&w, m)| f64::from(w) * m).sum::<f64>();
                    let zm = b.abs()
                        + row
                            .iter()
                            .zip(&mean_mag)
                            .map(|(&w, m)| f64::from(w).abs() * m)
                            .sum::<f64>();
                    (z.max(0.0), zm)
                })
                .unzip();
            for (ch, ((plane, plane_mag), pre)) in img
                .chunks_exact_mut(hw)
                .zip(img_mag.chunks_exact_mut(hw))
                .zip(img_pre.chunks_exact(hw))
                .enumerate()
            {
                let row = &se.fc2_weight()[ch * rd..(ch + 1) * rd];
                let b = f64::from(se.fc2_bias()[ch]);
                let z = b + row.iter().zip(&hidden).map(|(&w, h)| f64::from(w) * h).sum::<f64>();
                let zm = b.abs()
                    + row
                        .iter()
                        .zip(&hidden_mag)
                        .map(|(&w, h)| f64::from(w).abs() * h)
                        .sum::<f64>();
                let g = 1.0 / (1.0 + (-z).exp());
                plane.iter_mut().for_each(|v| *v *= g);
                for (m, p) in plane_mag.iter_mut().zip(pre) {
                    *m = *m * g + p.abs() * g * (1.0 - g) * zm;
                }
            }
        }
    }
    out.iter_mut().for_each(|v| *v = v.max(0.0));
    (out, mag)
}

/// Per element `|got - want| <= 1e-5 * mag + 1e-6` (NaN-aware); the worst
/// excess as a message on failure.
fn within_magnitude(got: &[f32], want: &[f32], mag: &[f64]) -> Result<(), String> {
    if got.len() != want.len() || got.len() != mag.len() {
        return Err(format!("lengths {} / {} / {}", got.len(), want.len(), mag.len()));
    }
    let mut worst: Option<(usize, f64)> = None;
    for (i, ((&a, &b), &m)) in got.iter().zip(want).zip(mag).enumerate() {
        let (d, tol) = (abs_diff(a, b), 1e-5 * m + 1e-6);
        // A NaN tolerance (a NaN magnitude) fails too.
        let fails = d > tol || tol.is_nan();
        if fails && worst.is_none_or(|(_, r)| d / tol > r) {
            worst = Some((i, d / tol));
        }
    }
    match worst {
        None => Ok(()),
        Some((i, r)) => Err(format!(
            "[{i}] {} vs {}: |diff| {:e} is {r:.1}x the tolerance 1e-5 * {:e} + 1e-6",
            got[i],
            want[i],
            abs_diff(got[i], want[i]),
            mag[i]
        )),
    }
}

#[test]
fn max_abs_diff_sees_nan_where_a_max_fold_does_not() {
    // An output that is NaN but for one matching lane: a fold with f32::max
    // would call it equal (max drops NaN); this helper must not.
    let nan_out = [f32::NAN, 1.0, f32::NAN];
    let good = [0.5, 1.0, 2.0];
    assert_eq!(max_abs_diff(&nan_out, &good), f64::INFINITY);
    assert_eq!(max_abs_diff(&good, &nan_out), f64::INFINITY);
    // NaN on both sides at the same index is agreement; elsewhere it is not.
    assert_eq!(max_abs_diff(&[f32::NAN, 1.0], &[f32::NAN, 1.25]), 0.25);
    assert_eq!(max_abs_diff(&[f32::NAN, 1.0], &[1.0, f32::NAN]), f64::INFINITY);
    // Infinities: equal ones agree, different ones (or one vs finite) do not.
    assert_eq!(max_abs_diff(&[f32::INFINITY], &[f32::INFINITY]), 0.0);
    assert_eq!(max_abs_diff(&[f32::INFINITY], &[f32::NEG_INFINITY]), f64::INFINITY);
    assert_eq!(max_abs_diff(&[f32::MAX], &[f32::INFINITY]), f64::INFINITY);
    // Different lengths never agree (a zip would compare the common prefix).
    assert_eq!(max_abs_diff(&[1.0], &[1.0, 5.0]), f64::INFINITY);
    // Plain values, in f64 (no f32 rounding of the difference).
    assert_eq!(max_abs_diff(&[1.0, -2.0], &[1.5, -2.0]), 0.5);
    assert!(max_abs(&[1.0, f32::NAN]).is_nan() && max_abs(&[-3.0, 2.0]) == 3.0);
}

// ---------------------------------------------------------------------------
// Block level: fused == multi-branch (and multi-branch == f64 oracle).

#[derive(Debug, Clone)]
struct BlockCase {
    k: usize,
    kernel: usize,
    stride: usize,
    depthwise: bool,
    cin: usize,
    cout: usize,
    batch: usize,
    hw: [usize; 2],
    eps: f32,
    se: bool,
    seed: u64,
}

fn block_case() -> impl Strategy<Value = BlockCase> {
    (
        (1usize..=6, prop_oneof![Just(1usize), Just(3)], 1usize..=2, any::<bool>()),
        (1usize..=12, 1usize..=12, any::<bool>(), 1usize..=2),
        (
            [1usize..=9, 1usize..=9],
            prop_oneof![Just(1e-5f32), Just(1e-3)],
            any::<bool>(),
            any::<u64>(),
        ),
    )
        .prop_map(
            |((k, kernel, stride, depthwise), (cin, cout, same, batch), (hw, eps, se, seed))| {
                BlockCase {
                    k,
                    kernel,
                    stride,
                    depthwise,
                    cin,
                    // Equal channel counts half the time, so the skip branch is common.
                    cout: if depthwise || same { cin } else { cout },
                    batch,
                    hw,
                    eps,
                    se,
                    seed,
                }
            },
        )
}

fn check_block(case: &BlockCase) -> Result<(), TestCaseError> {
    let config = BlockConfig::new(case.cin, case.cout, case.kernel)
        .with_stride(case.stride)
        .with_groups(if case.depthwise { case.cin } else { 1 })
        .with_branches(case.k)
        .with_se(case.se);
    let block = block_with_random_stats(config, case.eps, case.seed);
    let fused = block.reparameterize().unwrap();
    let [h, w] = case.hw;
    let shape = [case.batch, case.cin, h, w];
    let x = Tensor::from_vec(shape, values(case.seed ^ 0xABCD, shape.iter().product())).unwrap();

    let multi = block.forward(&x).unwrap();
    let one = fused.forward(&x).unwrap();
    prop_assert_eq!(multi.shape(), one.shape());

    // Per element, at the magnitude of its own terms (see the module docs).
    let (oracle, mag) = block_oracle(&block, &x);
    if let Err(e) = within_magnitude(multi.as_slice(), one.as_slice(), &mag) {
        return Err(TestCaseError::fail(format!("fused vs multi: {e} for {case:?}")));
    }
    let oracle: Vec<f32> = oracle.iter().map(|&v| v as f32).collect();
    if let Err(e) = within_magnitude(multi.as_slice(), &oracle, &mag) {
        return Err(TestCaseError::fail(format!("multi vs f64 oracle: {e} for {case:?}")));
    }

    // Structure carried over exactly.
    let p = fused.reparam_conv().params();
    prop_assert_eq!(*p, config.conv_params());
    prop_assert_eq!(p.padding, [case.kernel / 2; 2]);
    Ok(())
}

#[test]
fn per_element_tolerance_catches_what_a_global_scale_hides() {
    // A 1% error on an output of 0.01 next to an output of 1000.
    let (want, got, mag) = ([1000.0, 0.01], [1000.0, 0.0101], [1000.0, 0.01]);
    // The old rule: 1e-5 of the largest output for every element.
    let global_tol = 1e-5 * max_abs(&want) + 1e-6;
    assert!(max_abs_diff(&got, &want) <= global_tol, "the old rule passes it");
    assert!(within_magnitude(&got, &want, &mag).is_err(), "the per-element rule must not");
    assert!(within_magnitude(&want, &want, &mag).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn fused_block_matches_multi_branch(case in block_case()) {
        check_block(&case)?;
    }
}

#[test]
fn fused_block_matches_on_real_shapes() {
    // The benchmarked MobileOne shapes at k = 4 (S0), with and without SE.
    for (i, &(cin, cout, kernel, stride, dw, hw)) in [
        (3, 48, 3, 2, false, 33),
        (48, 48, 3, 1, true, 28),
        (128, 128, 3, 2, true, 14),
        (128, 128, 1, 1, false, 14),
        (64, 256, 1, 1, false, 7),
    ]
    .iter()
    .enumerate()
    {
        for se in [false, true] {
            let case = BlockCase {
                k: 4,
                kernel,
                stride,
                depthwise: dw,
                cin,
                cout,
                batch: 1,
                hw: [hw, hw],
                eps: 1e-5,
                se,
                seed: i as u64,
            };
            check_block(&case).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------
// Network level.

fn check_network(variant: Variant, size: usize, batch: usize, seed: u64) {
    let config = MobileOneConfig::variant(variant);
    let multi = MobileOne::random(config, seed).unwrap();
    let fused = multi.reparameterize().unwrap();
    assert!(fused.is_reparameterized() && !multi.is_reparameterized());
    let shape = [batch, 3, size, size];
    let x = Tensor::from_vec(shape, values(seed + 99, shape.iter().product())).unwrap();
    let a = multi.forward(&x).unwrap();
    let b = fused.forward(&x).unwrap();
    assert_eq!(a.shape(), [batch, 1000, 1, 1]);
    // Features (after the last of 44 blocks): 1e-4 of their largest value,
    // + 1e-6. Each block alone agrees to ~1e-7..1e-6 of its output (see the
    // block tests, held to 1e-5); through 44 blocks these independent
    // roundings accumulate to ~1e-5 of the features (measured: up to 2e-5
    // for S4 at 64x64), so the per-block 1e-5 cannot hold end to end in f32.
    let fa = multi.forward_features(&x).unwrap();
    let fb = fused.forward_features(&x).unwrap();
    let d = max_abs_diff(fa.as_slice(), fb.as_slice());
    let tol = 1e-4 * max_abs(fa.as_slice()) + 1e-6;
    assert!(d <= tol, "{variant} {size}x{size} batch {batch}: features max diff {d} > {tol}");
    // Logits: each within 1e-5 of the magnitude of its terms
    // (|bias| + sum |w * pooled feature|, as `common::check_close` does for
    // convolutions) + 1e-6: the head is a 1000 x C dot product, so its
    // rounding scales with its terms, not with the (cancelled) sum.
    let [_, c, h, w] = fa.shape();
    let head = multi.head_fc();
    let mut worst = 0f64;
    for (img, (la, lb)) in a.as_slice().chunks(1000).zip(b.as_slice().chunks(1000)).enumerate() {
        let pooled: Vec<f32> = fa.as_slice()[img * c * h * w..(img + 1) * c * h * w]
            .chunks(h * w)
            .map(|p| p.iter().sum::<f32>() / (h * w) as f32)
            .collect();
        for o in 0..1000 {
            let terms = head.bias()[o].abs()
                + head.weight()[o * c..(o + 1) * c]
                    .iter()
                    .zip(&pooled)
                    .map(|(w, f)| (w * f).abs())
                    .sum::<f32>();
            let d = abs_diff(la[o], lb[o]);
            let terms = f64::from(terms);
            assert!(
                d <= 1e-5 * terms + 1e-6,
                "{variant} logit {o}: diff {d} > 1e-5 * {terms} + 1e-6"
            );
            worst = worst.max(d);
        }
    }
    eprintln!(
        "{variant} {size}x{size} batch {batch}: features max |diff| {d:e} (of {}), logits max |diff| {worst:e} (of {})",
        max_abs(fa.as_slice()),
        max_abs(a.as_slice())
    );
    assert!(max_abs(a.as_slice()) > 1e-2, "logits should not vanish");
    if batch == 2 {
        // The network must actually depend on its input.
        let (l0, l1) = a.as_slice().split_at(1000);
        let spread = max_abs_diff(l0, l1) / max_abs(a.as_slice());
        eprintln!("  image 0 vs 1: relative logit difference {spread:e}");
        assert!(spread > 1e-3, "logits barely depend on the input: {spread:e}");
    }
    for (la, lb) in a.as_slice().chunks(1000).zip(b.as_slice().chunks(1000)) {
        assert_eq!(argmax(la), argmax(lb));
    }
}

#[test]
fn s0_fused_matches_multi_branch() {
    for (size, batch) in [(32, 1), (32, 2), (64, 1), (64, 2)] {
        check_network(Variant::S0, size, batch, 7);
    }
}

#[test]
fn s4_fused_matches_multi_branch() {
    for (size, batch) in [(32, 1), (32, 2), (64, 1), (64, 2)] {
        check_network(Variant::S4, size, batch, 11);
    }
}

#[test]
fn network_configs_match_timm() {
    // Channel plans of timm's mobileone_s0..s4 (stem, stage outputs).
    let expect = [
        (Variant::S0, 48, [48, 128, 256, 1024], 4),
        (Variant::S1, 64, [96, 192, 512, 1280], 1),
        (Variant::S2, 64, [96, 256, 640, 2048], 1),
        (Variant::S3, 64, [128, 320, 768, 2048], 1),
        (Variant::S4, 64, [192, 448, 896, 2048], 1),
    ];
    for (v, stem, stages, k) in expect {
        let c = MobileOneConfig::variant(v);
        assert_eq!(c.stem_channels(), stem, "{v}");
        assert_eq!(c.stage_channels(), stages, "{v}");
        let (stem_cfg, cfgs) = c.block_configs().unwrap();
        assert_eq!(stem_cfg.num_conv_branches, 1, "timm's stem has one conv branch");
        assert_eq!(cfgs.iter().map(Vec::len).collect::<Vec<_>>(), [4, 16, 20, 2]);
        for (s, blocks) in cfgs.iter().enumerate() {
            for (i, b) in blocks.iter().enumerate() {
                assert_eq!(b.num_conv_branches, k);
                assert_eq!(b.kernel, if i % 2 == 0 { 3 } else { 1 });
                assert_eq!(b.stride, if i == 0 { 2 } else { 1 });
                let se = v == Variant::S4 && (s == 3 || (s == 2 && i >= 10));
                assert_eq!(b.use_se, se, "{v} stages.{s}.{i}");
            }
        }
    }
    // S0 fused FLOPs: 548.2 MFLOP of convolutions (the sum of the S0 rows of
    // `repconv::shapes`) plus the head.
    let s0 =
        MobileOne::random(MobileOneConfig::variant(Variant::S0).with_num_classes(10), 1).unwrap();
    let fused = s0.reparameterize().unwrap();
    let conv = fused.flops([1, 3, 224, 224]).unwrap() - 2 * 1024 * 10;
    assert_eq!(conv, 2 * 274_086_400, "S0 fused MACs at 224 (274.1 MMAC)");
    let names: Vec<String> = fused.blocks().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names[0], "stem");
    assert_eq!(names[1], "stages.0.0");
    assert_eq!(names.last().unwrap(), "stages.3.1");
    assert_eq!(se_channels(896), 56);
    assert_eq!(se_channels(2048), 128);
}

#[test]
fn seeded_networks_are_deterministic() {
    let c = MobileOneConfig::variant(Variant::S1).with_num_classes(7);
    let x = Tensor::from_vec([1, 3, 16, 16], values(3, 3 * 256)).unwrap();
    let a = MobileOne::random(c.clone(), 5).unwrap().forward(&x).unwrap();
    let b = MobileOne::random(c.clone(), 5).unwrap().forward(&x).unwrap();
    let other = MobileOne::random(c, 6).unwrap().forward(&x).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, other);
}

// ---------------------------------------------------------------------------
// BN folding by hand.

#[test]
fn bn_fold_matches_hand_computation() {
    // eps = 0.25: channel 0 has std sqrt(3.75 + 0.25) = 2, so scale = 2 / 2 = 1,
    // shift = 0.5 - 1 * 1 = -0.5; channel 1 has std sqrt(0 + 0.25) = 0.5, so
    // scale = 3 / 0.5 = 6, shift = -1 - 2 * 6 = -13.
    let bn =
        BatchNorm2d::new(vec![2.0, 3.0], vec![0.5, -1.0], vec![1.0, 2.0], vec![3.75, 0.0], 0.25)
            .unwrap();
    assert_eq!(bn.scale(), [1.0, 6.0]);
    assert_eq!(bn.shift(), [-0.5, -13.0]);
    // A 2 -> 2 channel 1x1 conv: rows [0.5, 1] and [-2, 0.25].
    let (w, b) = fold_conv_bn(&[0.5, 1.0, -2.0, 0.25], &bn).unwrap();
    assert_eq!(w, [0.5, 1.0, -12.0, 1.5]);
    assert_eq!(b, [-0.5, -13.0]);

    // BN as its own pass.
    let mut t = Tensor::from_vec([1, 2, 1, 2], vec![1.0, 3.0, 2.0, 0.0]).unwrap();
    bn.forward_inplace(t.view_mut()).unwrap();
    assert_eq!(t.as_slice(), [0.5, 2.5, -1.0, -13.0]);
}

#[test]
fn reparameterized_kernel_matches_hand_computation() {
    // One channel, 3x3, stride 1: one conv branch, the scale branch and the skip.
    let config = BlockConfig::new(1, 1, 3);
    let w3: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    // kxk BN: scale 2 / sqrt(3 + 1) = 1, shift 1 - 0.5 * 1 = 0.5.
    let bn_k = BatchNorm2d::new(vec![2.0], vec![1.0], vec![0.5], vec![3.0], 1.0).unwrap();
    // scale BN: scale 3 / sqrt(8 + 1) = 1, shift 0 - 2 * 1 = -2; weight 4.
    let bn_s = BatchNorm2d::new(vec![3.0], vec![0.0], vec![2.0], vec![8.0], 1.0).unwrap();
    // skip BN: scale 1 / sqrt(0.25 + 0) = 2, shift 0.25 - 1 * 2 = -1.75.
    let bn_i = BatchNorm2d::new(vec![1.0], vec![0.25], vec![1.0], vec![0.25], 0.0).unwrap();
    let block = MobileOneBlock::from_parts(
        config,
        vec![ConvBn::new(config.conv_params(), &w3, bn_k).unwrap()],
        Some(ConvBn::new(config.scale_params(), &[4.0], bn_s).unwrap()),
        Some(bn_i),
        None,
    )
    .unwrap();
    let fused = block.reparameterize().unwrap();
    // Centre: 5 * 1 + 4 * 1 + 1 * 2 = 11; bias 0.5 - 2 - 1.75 = -3.25.
    assert_eq!(fused.reparam_conv().weights(), [1.0, 2.0, 3.0, 4.0, 11.0, 6.0, 7.0, 8.0, 9.0]);
    assert_eq!(fused.reparam_conv().bias().unwrap(), [-3.25]);
    assert_eq!(fused.reparam_conv().activation(), repconv::Activation::Relu);

    // Direct computation on a 3x3 input of ones (padding 1): the centre
    // output sees all nine taps: (45 + 0.5) + (4 - 2) + (2 - 1.75) = 47.75.
    let x = Tensor::full([1, 1, 3, 3], 1.0).unwrap();
    let multi = block.forward(&x).unwrap();
    let one = fused.forward(&x).unwrap();
    assert!((multi.as_slice()[4] - 47.75).abs() < 1e-5);
    assert!((one.as_slice()[4] - 47.75).abs() < 1e-5);
    // Corner (top-left) sees taps 5, 6, 8, 9: 28 + 0.5 + 2 + 0.25 = 30.75.
    assert!((multi.as_slice()[0] - 30.75).abs() < 1e-5);
    assert!((one.as_slice()[0] - 30.75).abs() < 1e-5);
}

#[test]
fn identity_kernel_layout() {
    // 4 channels in 2 groups: 2 inputs per group; 1 at the centre of [o, o % 2].
    let k = identity_kernel(4, 2, [3, 3]).unwrap();
    assert_eq!(k.len(), 4 * 2 * 9);
    let ones: Vec<usize> =
        k.iter().enumerate().filter(|(_, v)| **v == 1.0).map(|(i, _)| i).collect();
    assert_eq!(ones, [4, 18 + 9 + 4, 2 * 18 + 4, 3 * 18 + 9 + 4]);
    // Depthwise: [c, 1, 3, 3], centre of every filter.
    let dw = identity_kernel(3, 3, [3, 3]).unwrap();
    assert_eq!(dw.iter().filter(|v| **v == 1.0).count(), 3);
    assert!((0..3).all(|o| dw[o * 9 + 4] == 1.0));
    assert!(identity_kernel(4, 3, [3, 3]).is_err());
    assert!(identity_kernel(4, 1, [2, 2]).is_err());
}

// ---------------------------------------------------------------------------
// Errors, not panics.

#[test]
fn bad_input_is_an_error() {
    let mut rng = SplitMix64::new(1);
    // Configuration.
    assert!(MobileOneBlock::random(BlockConfig::new(4, 4, 3).with_branches(0), &mut rng).is_err());
    assert!(MobileOneBlock::random(BlockConfig::new(4, 4, 2), &mut rng).is_err());
    assert!(MobileOneBlock::random(BlockConfig::new(0, 4, 3), &mut rng).is_err());
    assert!(MobileOneBlock::random(BlockConfig::new(4, 6, 3).with_groups(4), &mut rng).is_err());
    assert!(MobileOneBlock::random(BlockConfig::new(4, 4, 3).with_stride(0), &mut rng).is_err());
    // Parameter lengths.
    assert!(matches!(
        BatchNorm2d::new(vec![1.0; 3], vec![0.0; 2], vec![0.0; 3], vec![1.0; 3], 1e-5),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(BatchNorm2d::new(vec![1.0], vec![0.0], vec![0.0], vec![-1.0], 1e-5).is_err());
    assert!(BatchNorm2d::new(vec![1.0], vec![0.0], vec![0.0], vec![1.0], f32::NAN).is_err());
    assert!(BatchNorm2d::new(vec![], vec![], vec![], vec![], 1e-5).is_err());
    let cfg = BlockConfig::new(2, 2, 3);
    assert!(ConvBn::new(cfg.conv_params(), &[0.0; 5], BatchNorm2d::identity(2).unwrap()).is_err());
    assert!(ConvBn::new(cfg.conv_params(), &[0.0; 36], BatchNorm2d::identity(3).unwrap()).is_err());
    assert!(fold_conv_bn(&[1.0; 5], &BatchNorm2d::identity(2).unwrap()).is_err());
    assert!(SqueezeExcite::new(4, vec![0.0; 7], vec![0.0; 2], vec![0.0; 8], vec![0.0; 4]).is_err());
    // Parts that do not match the configuration.
    let good =
        || ConvBn::new(cfg.conv_params(), &[0.0; 36], BatchNorm2d::identity(2).unwrap()).unwrap();
    assert!(MobileOneBlock::from_parts(cfg, vec![good()], None, None, None).is_err()); // no scale, no skip
    assert!(
        MobileOneBlock::from_parts(cfg.with_branches(2), vec![good()], None, None, None).is_err()
    );
    // Shapes at run time.
    let block =
        MobileOneBlock::random(BlockConfig::new(4, 4, 3).with_branches(2), &mut rng).unwrap();
    let fused = block.reparameterize().unwrap();
    let wrong = Tensor::zeros([1, 3, 5, 5]).unwrap();
    assert!(matches!(block.forward(&wrong), Err(Error::ShapeMismatch { .. })));
    assert!(matches!(fused.forward(&wrong), Err(Error::ShapeMismatch { .. })));
    let x = Tensor::zeros([1, 4, 5, 5]).unwrap();
    let mut out = vec![0.0; 4 * 16];
    let mut ws = Workspace::new();
    let bad_out = TensorViewMut::new([1, 4, 4, 4], &mut out).unwrap();
    assert!(block.forward_into(x.view(), bad_out, &mut ws).is_err());
    assert!(TensorView::new([1, 4, 5, 5], &[0.0; 3]).is_err());
    // Networks.
    let net =
        MobileOne::random(MobileOneConfig::variant(Variant::S0).with_num_classes(5), 1).unwrap();
    assert!(net.forward(&Tensor::zeros([1, 1, 8, 8]).unwrap()).is_err());
    let mut logits = Tensor::zeros([1, 6, 1, 1]).unwrap();
    assert!(
        net.forward_into(Tensor::zeros([1, 3, 8, 8]).unwrap().view(), logits.view_mut(), &mut ws)
            .is_err()
    );
    assert!(
        MobileOne::random(MobileOneConfig::variant(Variant::S0).with_num_classes(0), 1).is_err()
    );
    assert!(MobileOne::random(MobileOneConfig::variant(Variant::S0).with_branches(0), 1).is_err());
    let mut c = MobileOneConfig::variant(Variant::S1);
    c.width_multipliers[2] = f64::NAN;
    assert!(MobileOne::random(c, 1).is_err());
    assert!("s5".parse::<Variant>().is_err());
    assert_eq!("S3".parse::<Variant>().unwrap(), Variant::S3);
    // Mixing forms is fine; wrong geometry is not.
    let stem = net.stem().clone();
    let stages = net.stages().to_vec();
    let other =
        MobileOne::random(MobileOneConfig::variant(Variant::S1).with_num_classes(5), 1).unwrap();
    assert!(
        MobileOne::from_parts(
            net.config().clone(),
            other.stem().clone(),
            stages.clone(),
            net.head_fc().clone()
        )
        .is_err()
    );
    assert!(
        MobileOne::from_parts(
            net.config().clone(),
            stem.reparameterize().unwrap(),
            stages,
            net.head_fc().clone()
        )
        .is_ok()
    );
    assert!(matches!(Block::MultiBranch(block).forward(&wrong), Err(Error::ShapeMismatch { .. })));
}
