//! The bad-input contract: every kind of caller mistake returns its typed
//! error, and none panics.

use repconv::{Activation, Conv2d, Conv2dParams, Error, Tensor, TensorView, TensorViewMut};

fn conv_err(params: Conv2dParams, weights: usize, bias: Option<usize>) -> Error {
    let w = vec![0.5; weights];
    let b = bias.map(|n| vec![0.0; n]);
    Conv2d::new(params, &w, b.as_deref(), Activation::Relu).expect_err("must be rejected")
}

fn is_invalid(e: &Error, param: &str) -> bool {
    matches!(e, Error::InvalidParam { name, .. } if *name == param)
}

#[test]
fn invalid_params_are_rejected_with_the_parameter_named() {
    let ok = Conv2dParams::new(4, 6, [3, 3]).with_padding([1, 1]);
    let cases: Vec<(&str, Conv2dParams, &str)> = vec![
        ("zero in channels", Conv2dParams { in_channels: 0, ..ok }, "in_channels"),
        ("zero out channels", Conv2dParams { out_channels: 0, ..ok }, "out_channels"),
        ("zero kernel h", Conv2dParams { kernel: [0, 3], ..ok }, "kernel"),
        ("zero kernel w", Conv2dParams { kernel: [3, 0], ..ok }, "kernel"),
        ("stride 0", ok.with_stride([0, 1]), "stride"),
        ("dilation 0", ok.with_dilation([1, 0]), "dilation"),
        ("groups 0", ok.with_groups(0), "groups"),
        ("groups not dividing in", ok.with_groups(3), "groups"),
        (
            "groups not dividing out",
            Conv2dParams { out_channels: 6, in_channels: 8, ..ok }.with_groups(4),
            "groups",
        ),
    ];
    for (label, params, param) in cases {
        let e = conv_err(params, 216, None);
        assert!(is_invalid(&e, param), "{label}: got {e:?}");
        assert!(!e.to_string().is_empty());
    }
}

#[test]
fn overflowing_sizes_are_too_large_not_panics() {
    let huge = Conv2dParams::new(usize::MAX / 2, usize::MAX / 2, [3, 3]);
    assert!(matches!(conv_err(huge, 1, None), Error::TooLarge { .. }));
    let huge_kernel = Conv2dParams::new(1, 1, [usize::MAX, 2]).with_dilation([2, 1]);
    assert!(matches!(conv_err(huge_kernel, 1, None), Error::TooLarge { .. }));
    let huge_pad = Conv2dParams::new(1, 1, [1, 1]).with_padding([usize::MAX, 0]);
    assert!(matches!(conv_err(huge_pad, 1, None), Error::TooLarge { .. }));
    // Valid layer, but an output that would be enormous (padding blows it up).
    let conv = Conv2d::new(
        Conv2dParams::new(1, 1, [1, 1]).with_padding([1 << 20, 1 << 20]),
        &[1.0],
        None,
        Activation::None,
    )
    .unwrap();
    let x = Tensor::zeros([1, 1, 1, 1]).unwrap();
    assert!(matches!(conv.forward(&x), Err(Error::TooLarge { .. })));
    assert!(matches!(Tensor::zeros([usize::MAX, usize::MAX, 1, 1]), Err(Error::TooLarge { .. })));
}

#[test]
fn wrong_weight_and_bias_lengths() {
    let p = Conv2dParams::new(4, 6, [3, 3]);
    assert!(matches!(
        conv_err(p, 215, None),
        Error::LengthMismatch { what: "weights", expected: 216, got: 215 }
    ));
    assert!(matches!(conv_err(p, 217, None), Error::LengthMismatch { what: "weights", .. }));
    assert!(matches!(
        conv_err(p, 216, Some(5)),
        Error::LengthMismatch { what: "bias", expected: 6, got: 5 }
    ));
    let dw = Conv2dParams::new(8, 8, [3, 3]).with_groups(8);
    assert!(matches!(conv_err(dw, 8 * 9 * 8, None), Error::LengthMismatch { expected: 72, .. }));
}

#[test]
fn wrong_input_and_output_shapes() {
    let p = Conv2dParams::new(4, 6, [3, 3]);
    let conv = Conv2d::new(p, &[0.1; 216], None, Activation::None).unwrap();
    // Input channel mismatch.
    let x = Tensor::zeros([1, 5, 8, 8]).unwrap();
    assert!(matches!(conv.forward(&x), Err(Error::ShapeMismatch { what: "input channels", .. })));
    // Kernel larger than the (unpadded) input.
    let x = Tensor::zeros([1, 4, 2, 8]).unwrap();
    assert!(is_invalid(&conv.forward(&x).unwrap_err(), "kernel"));
    // Output view of the wrong shape.
    let x = Tensor::zeros([2, 4, 8, 8]).unwrap();
    let mut out = vec![0.0; 6 * 6 * 6 * 2];
    let view = TensorViewMut::new([2, 6, 6, 6], &mut out).unwrap();
    assert!(conv.forward_into(x.view(), view).is_ok());
    let view = TensorViewMut::new([1, 12, 6, 6], &mut out).unwrap();
    assert!(matches!(
        conv.forward_into(x.view(), view),
        Err(Error::ShapeMismatch { what: "output view", .. })
    ));
}

#[test]
fn tensor_constructors_reject_bad_data() {
    assert!(matches!(
        Tensor::from_vec([1, 2, 2, 2], vec![0.0; 7]),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(Tensor::zeros([1, 1, 0, 1]), Err(Error::InvalidParam { .. })));
    assert!(matches!(
        Tensor::from_bytes([1, 1, 1, 2], &[0u8; 7]),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(TensorView::new([1, 1, 1, 2], &[0.0; 3]), Err(Error::LengthMismatch { .. })));
    assert!(matches!(TensorView::new([0, 1, 1, 2], &[]), Err(Error::InvalidParam { .. })));
    let mut buf = [0.0; 3];
    assert!(matches!(
        TensorViewMut::new([1, 1, 1, 2], &mut buf),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(TensorView::new([usize::MAX, 2, 1, 1], &[]), Err(Error::TooLarge { .. })));
}

// ---------------------------------------------------------------------------
// Blocks, networks, loaders and the CLI.

use repconv::mobileone::{
    BlockConfig, MobileOne, MobileOneBlock, MobileOneConfig, SplitMix64, Variant, Workspace,
};
use repconv::weights::{LoadOptions, load_bytes, to_bytes};

#[test]
fn blocks_reject_bad_configs_and_inputs() {
    let mut rng = SplitMix64::new(1);
    let bad_configs = [
        ("zero channels", BlockConfig::new(0, 8, 3)),
        ("kernel 2", BlockConfig::new(8, 8, 2)),
        ("groups not dividing", BlockConfig::new(8, 8, 3).with_groups(3)),
        ("stride 0", BlockConfig::new(8, 8, 3).with_stride(0)),
    ];
    for (label, config) in bad_configs {
        assert!(MobileOneBlock::random(config, &mut rng).is_err(), "{label}");
    }
    let block =
        MobileOneBlock::random(BlockConfig::new(8, 8, 3).with_branches(2), &mut rng).unwrap();
    let fused = block.reparameterize().unwrap();
    let wrong_channels = Tensor::zeros([1, 7, 5, 5]).unwrap();
    assert!(matches!(block.forward(&wrong_channels), Err(Error::ShapeMismatch { .. })));
    assert!(matches!(fused.forward(&wrong_channels), Err(Error::ShapeMismatch { .. })));
    let x = Tensor::zeros([1, 8, 5, 5]).unwrap();
    let mut out = vec![0.0; 8 * 4 * 4];
    let view = TensorViewMut::new([1, 8, 4, 4], &mut out).unwrap();
    assert!(block.forward_into(x.view(), view, &mut Workspace::new()).is_err());
}

#[test]
fn networks_reject_bad_inputs() {
    let net =
        MobileOne::random(MobileOneConfig::variant(Variant::S0).with_num_classes(5), 1).unwrap();
    assert!(matches!(
        net.forward(&Tensor::zeros([1, 4, 32, 32]).unwrap()),
        Err(Error::ShapeMismatch { .. })
    ));
    // A 16x16 input is valid (the last stages run on 1x1 planes), but the
    // logits view must have the batch's shape.
    let x = Tensor::zeros([2, 3, 16, 16]).unwrap();
    let mut logits = vec![0.0; 5];
    let view = TensorViewMut::new([1, 5, 1, 1], &mut logits).unwrap();
    assert!(matches!(
        net.forward_into(x.view(), view, &mut Workspace::new()),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(
        MobileOne::random(MobileOneConfig::variant(Variant::S1).with_num_classes(0), 1).is_err()
    );
}

#[test]
fn loaders_reject_corrupt_files_without_panicking() {
    let net =
        MobileOne::random(MobileOneConfig::variant(Variant::S0).with_num_classes(3), 2).unwrap();
    let good = to_bytes(&net).unwrap();
    assert!(load_bytes(&good, &LoadOptions::default()).is_ok());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("garbage", b"this is not a safetensors file at all".to_vec()),
        ("header length past the end", {
            let mut b = good.clone();
            b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
            b
        }),
        ("truncated", good[..good.len() / 2].to_vec()),
        (
            "header only",
            good[..8 + u64::from_le_bytes(good[..8].try_into().unwrap()) as usize].to_vec(),
        ),
    ];
    for (label, bytes) in cases {
        let err = load_bytes(&bytes, &LoadOptions::default()).expect_err(label);
        assert!(!err.to_string().is_empty() && !err.to_string().contains('\n'), "{label}: {err}");
    }
    // The wrong variant for the tensors: a typed error naming a tensor.
    let err =
        load_bytes(&good, &LoadOptions { variant: Some(Variant::S2), ..LoadOptions::default() })
            .unwrap_err();
    assert!(err.to_string().contains("stem") || err.to_string().contains("stages"), "{err}");
}
