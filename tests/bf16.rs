//! The opt-in bf16 precision through the public API: `Conv2d` and `MobileOne`
//! with `Precision::Bf16` against references computed from the same
//! bf16-rounded operands, bitwise determinism over thread counts, typed errors
//! where bf16 cannot run, and the network's fidelity against the simulation
//! of rounding every convolution's weights and inputs to bf16.
//!
//! The kernel itself is tested on every machine through its software model
//! (`kernels/tests/bf16.rs`); here the hardware path runs only on a CPU with
//! AVX512_BF16. Elsewhere each test prints that it checked the typed error
//! instead, and `REPCONV_REQUIRE_BF16=1` (set by `.ci/run` when the CPU has
//! it) turns that into a failure, so CI cannot skip it silently.

mod common;

use common::{check_close, values};
use repconv::mobileone::{Block, MobileOne, MobileOneConfig, Variant};
use repconv::{Activation, Conv2d, Conv2dParams, Isa, IsaKind, Precision, Tensor};
use repconv_kernels::bf16::{Bf16Isa, round_to_bf16};
use repconv_kernels::reference::{RefConv, conv2d_nchw_ref};
use repconv_kernels::{Op, kernels};

/// The ISA to run bf16 with: the avx512 kernels on a CPU with AVX512_BF16;
/// elsewhere the bf16 kernels' software model (`REPCONV_BF16=emulated`, set
/// here before anything reads it; every test of this file sets the same
/// value), so the integration is tested on every machine.
/// `REPCONV_REQUIRE_BF16=1` (set by `.ci/run` when the CPU has AVX512_BF16)
/// makes the model a failure.
fn bf16_isa(test: &str) -> Isa {
    // SAFETY: every test of this binary writes the same value, before the
    // variable is read (once per process).
    unsafe { std::env::set_var(repconv::BF16_ENV, "emulated") };
    let avx512 = Isa::new(IsaKind::Avx512).ok();
    if let (Some(isa), Ok(_)) = (avx512, Bf16Isa::native()) {
        println!("{test}: AVX512_BF16 hardware");
        return isa;
    }
    assert!(
        std::env::var("REPCONV_REQUIRE_BF16").is_err(),
        "{test}: REPCONV_REQUIRE_BF16 is set but this CPU cannot run bf16"
    );
    println!("{test}: no AVX512_BF16 here; the software model runs");
    Isa::best()
}

/// The kernel name the plan reports for bf16 1x1 layers on `isa`.
fn bf16_name(isa: Isa) -> &'static str {
    if isa.kind() == IsaKind::Avx512 && Bf16Isa::native().is_ok() {
        "conv1x1_bf16_8x48__avx512bf16"
    } else {
        "conv1x1_bf16_8x48__emulated"
    }
}

fn rounded(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| round_to_bf16(x)).collect()
}

fn reference(p: &Conv2dParams, shape: [usize; 4], relu: bool) -> RefConv {
    RefConv {
        n: shape[0],
        cin: shape[1],
        h: shape[2],
        w: shape[3],
        cout: p.out_channels,
        kernel: p.kernel,
        stride: p.stride,
        padding: p.padding,
        dilation: p.dilation,
        groups: p.groups,
        relu,
    }
}

/// 1x1 layers over tile borders (8-row blocks, 48-pixel tiles, odd
/// reductions): bf16 output = the f64 reference on bf16-rounded inputs and
/// weights, to the f32-summation tolerance; identical for 1, 2 and 3 threads.
#[test]
fn conv2d_bf16_matches_the_reference_on_rounded_operands_for_any_thread_count() {
    let isa = bf16_isa("conv2d_bf16");
    let shapes = [(1, 1, 1, 1), (3, 7, 5, 9), (16, 17, 7, 7), (33, 8, 14, 14), (48, 128, 3, 17)];
    for (i, &(cin, cout, h, w)) in shapes.iter().enumerate() {
        let p = Conv2dParams::new(cin, cout, [1, 1]);
        let shape = [2, cin, h, w];
        let wts = values(11 + i as u64, cout * cin);
        let bias = values(12 + i as u64, cout);
        let x = values(13 + i as u64, shape.iter().product());
        for act in [Activation::None, Activation::Relu] {
            let conv = Conv2d::new(p, &wts, Some(&bias), act)
                .unwrap()
                .with_isa(isa)
                .unwrap()
                .with_parallel_threshold(0)
                .with_precision(Precision::Bf16)
                .unwrap();
            assert_eq!(conv.kernel_name(), bf16_name(isa));
            assert_eq!(conv.precision(), Precision::Bf16);
            let input = Tensor::from_vec(shape, x.clone()).unwrap();
            let r = reference(&p, shape, act == Activation::Relu);
            let (want, mag) = conv2d_nchw_ref(&r, &rounded(&x), &rounded(&wts), Some(&bias));
            let mut outs = Vec::new();
            for threads in [1, 2, 3] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let y = pool.install(|| conv.forward(&input)).unwrap();
                check_close(y.as_slice(), &want, &mag)
                    .unwrap_or_else(|e| panic!("{cin}->{cout} {h}x{w} {act:?}: {e}"));
                outs.push(y.as_slice().iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            }
            assert!(outs.windows(2).all(|w| w[0] == w[1]), "thread counts differ");
        }
    }
}

/// Every bf16 entry of the registry, run through `Conv2d` on a geometry it
/// accepts (straddling its tiles), against the reference on rounded
/// operands, bitwise the same on 1, 2 and 3 threads; the dense 3x3 at both
/// strides, with the zero padding taking part in the products.
#[test]
fn every_bf16_registry_entry_runs_and_matches() {
    let isa = bf16_isa("bf16_registry");
    let native = isa.kind() == IsaKind::Avx512 && Bf16Isa::native().is_ok();
    let entries: Vec<_> = kernels().iter().filter(|k| k.precision == Precision::Bf16).collect();
    assert!(entries.len() >= 3, "1x1 and both 3x3 strides");
    for (i, k) in entries.iter().enumerate() {
        let (p, shape) = match k.op {
            Op::Conv1x1 => (Conv2dParams::new(19, 17, [1, 1]), [2, 19, 7, 9]),
            Op::Conv3x3S1 => {
                (Conv2dParams::new(17, 10, [3, 3]).with_padding([1, 1]), [1, 17, 9, 13])
            }
            Op::Conv3x3S2 => (
                Conv2dParams::new(16, 9, [3, 3]).with_padding([1, 1]).with_stride([2, 2]),
                [2, 16, 15, 22],
            ),
            op => panic!("{}: no bf16 case for {op:?}", k.name),
        };
        let wts = values(31 + i as u64, p.weight_len().unwrap());
        let bias = values(32 + i as u64, p.out_channels);
        let x = values(33 + i as u64, shape.iter().product());
        let conv = Conv2d::new(p, &wts, Some(&bias), Activation::Relu)
            .unwrap()
            .with_isa(isa)
            .unwrap()
            .with_parallel_threshold(0)
            .with_precision(Precision::Bf16)
            .unwrap();
        if native {
            assert_eq!(conv.kernel_name(), k.name);
        } else {
            assert!(conv.kernel_name().ends_with("__emulated"), "{}", conv.kernel_name());
            assert_eq!(conv.kernel_name().split("__").next(), k.name.split("__").next());
        }
        let input = Tensor::from_vec(shape, x.clone()).unwrap();
        let (want, mag) =
            conv2d_nchw_ref(&reference(&p, shape, true), &rounded(&x), &rounded(&wts), Some(&bias));
        let mut outs = Vec::new();
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let y = pool.install(|| conv.forward(&input)).unwrap();
            check_close(y.as_slice(), &want, &mag).unwrap_or_else(|e| panic!("{}: {e}", k.name));
            outs.push(y.as_slice().iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        }
        assert!(outs.windows(2).all(|w| w[0] == w[1]), "{}: thread counts differ", k.name);
    }
}

/// NaN and infinities propagate as in the f32 kernels; geometries without a
/// bf16 kernel keep their f32 kernel.
#[test]
fn bf16_canaries_fallbacks_and_errors() {
    let isa = bf16_isa("bf16_canaries");
    let p = Conv2dParams::new(5, 9, [1, 1]);
    let mut wts = values(21, 45);
    wts[9] = f32::NAN; // output channel 1, input channel 4
    let mut x = values(22, 5 * 6 * 11);
    x[2 * 66 + 7] = f32::INFINITY; // input channel 2, pixel 7
    let conv = Conv2d::new(p, &wts, None, Activation::Relu)
        .unwrap()
        .with_isa(isa)
        .unwrap()
        .with_precision(Precision::Bf16)
        .unwrap();
    let y = conv.forward(&Tensor::from_vec([1, 5, 6, 11], x.clone()).unwrap()).unwrap();
    let (want, _) =
        conv2d_nchw_ref(&reference(&p, [1, 5, 6, 11], true), &rounded(&x), &rounded(&wts), None);
    for (i, (g, r)) in y.as_slice().iter().zip(&want).enumerate() {
        assert_eq!(g.is_nan(), r.is_nan(), "NaN at {i}: {g} vs {r}");
        if r.is_infinite() {
            assert_eq!(g, r, "at {i}");
        }
    }
    assert!(y.as_slice()[66..132].iter().all(|v| v.is_nan()), "channel 1 is all NaN");

    let dw = Conv2dParams::new(8, 8, [3, 3]).with_padding([1, 1]).with_groups(8);
    let conv = Conv2d::new(dw, &values(23, 72), None, Activation::Relu).unwrap().with_isa(isa);
    let conv = conv.unwrap().with_precision(Precision::Bf16).unwrap();
    assert!(conv.kernel_name().starts_with("dw3x3_s1p1"), "{}", conv.kernel_name());
}

/// The largest |a - b| over the largest |b| (NaN-aware: infinite if a NaN is
/// on one side only).
fn relative_error(a: &[f32], b: &[f32]) -> f64 {
    common::max_abs_diff(a, b) / common::max_abs(b)
}

/// The fused network with every convolution's weights and inputs rounded
/// to bf16 and computed in f32: what "simply rounding to bf16" costs.
fn simulate_rounding(net: &MobileOne, x: &Tensor) -> Vec<f32> {
    let mut act = x.clone();
    for (name, block) in net.blocks() {
        let Block::Reparam(b) = block else { panic!("{name}: fused network expected") };
        let conv = b.reparam_conv();
        let rounded_conv =
            Conv2d::new(*conv.params(), &rounded(conv.weights()), conv.bias(), conv.activation())
                .unwrap()
                .with_isa(conv.isa())
                .unwrap();
        let input = Tensor::from_vec(act.shape(), rounded(act.as_slice())).unwrap();
        act = rounded_conv.forward(&input).unwrap();
    }
    let [n, c, h, w] = act.shape();
    let head = net.head_fc();
    let mut logits = vec![0.0; n * head.weight().len() / c];
    let classes = logits.len() / n;
    for (img, out) in act.as_slice().chunks_exact(c * h * w).zip(logits.chunks_exact_mut(classes)) {
        let pooled: Vec<f32> =
            img.chunks_exact(h * w).map(|p| p.iter().sum::<f32>() / (h * w) as f32).collect();
        head.forward(&pooled, out).unwrap();
    }
    logits
}

/// S0 and S1 in bf16 against the multi-branch f32 network (the reference):
/// no worse than the simulation of rounding every convolution to bf16, and
/// the fused f32 form within its usual tolerance.
#[test]
fn network_fidelity_is_no_worse_than_rounding_every_convolution() {
    let isa = bf16_isa("network_fidelity");
    for (variant, seed) in [(Variant::S0, 3), (Variant::S1, 4)] {
        let config = MobileOneConfig::variant(variant).with_num_classes(100);
        let multi = MobileOne::random(config, seed).unwrap().with_isa(isa).unwrap();
        let fused = multi.reparameterize().unwrap();
        let bf16 = fused.clone().with_precision(Precision::Bf16).unwrap();
        assert_eq!(bf16.precision(), Precision::Bf16);
        // Carried through reparameterize.
        let via_multi =
            multi.clone().with_precision(Precision::Bf16).unwrap().reparameterize().unwrap();
        assert_eq!(via_multi.precision(), Precision::Bf16);
        let x = Tensor::from_vec([2, 3, 96, 96], values(seed, 2 * 3 * 96 * 96)).unwrap();
        let reference = multi.forward(&x).unwrap();
        let f32_err = relative_error(fused.forward(&x).unwrap().as_slice(), reference.as_slice());
        let got = bf16.forward(&x).unwrap();
        assert_eq!(
            got.as_slice().iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            via_multi
                .forward(&x)
                .unwrap()
                .as_slice()
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>(),
            "bf16 via either path"
        );
        let bf16_err = relative_error(got.as_slice(), reference.as_slice());
        let sim_err = relative_error(&simulate_rounding(&fused, &x), reference.as_slice());
        println!(
            "{variant:?}: max |diff| / max |logit| vs multi-branch f32: fused f32 {f32_err:.2e}, \
             bf16 {bf16_err:.2e}, all-conv bf16 rounding {sim_err:.2e}"
        );
        assert!(f32_err <= 1e-4, "fused f32 {f32_err}");
        assert!(bf16_err.is_finite() && bf16_err > f32_err, "bf16 must differ, finitely");
        assert!(bf16_err <= sim_err, "bf16 {bf16_err} worse than rounding every conv {sim_err}");
    }
}
