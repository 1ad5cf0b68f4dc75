//! The bad-input contract: every kind of caller mistake returns its typed
//! error, naming what was wrong, and none panics. Each case checks the error
//! variant and the field that names the problem (`what`, `name`, the lengths
//! or shapes), not just that some error came back.

mod common;

use repconv::{Activation, Conv2d, Conv2dParams, Error, Tensor, TensorView, TensorViewMut};

/// Asserts that `$result` is an `Err` matching `$pat`, printing the error otherwise.
macro_rules! assert_err {
    ($result:expr, $pat:pat $(if $guard:expr)?) => {
        match $result {
            Err(e) => {
                assert!(matches!(&e, $pat $(if $guard)?), "{}: got {e:?}", stringify!($result))
            }
            Ok(_) => panic!("{}: accepted", stringify!($result)),
        }
    };
}

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
        assert!(e.to_string().starts_with(&format!("invalid {param}: ")), "{label}: {e}");
    }
}

#[test]
fn overflowing_sizes_are_too_large_not_panics() {
    let huge = Conv2dParams::new(usize::MAX / 2, usize::MAX / 2, [3, 3]);
    assert_eq!(conv_err(huge, 1, None), Error::TooLarge { what: "weights" });
    let huge_kernel = Conv2dParams::new(1, 1, [usize::MAX, 2]).with_dilation([2, 1]);
    assert_eq!(conv_err(huge_kernel, 1, None), Error::TooLarge { what: "weights" });
    let huge_span = Conv2dParams::new(1, 1, [2, 1]).with_dilation([usize::MAX, 1]);
    assert_eq!(conv_err(huge_span, 2, None), Error::TooLarge { what: "kernel span" });
    let huge_pad = Conv2dParams::new(1, 1, [1, 1]).with_padding([usize::MAX, 0]);
    assert_eq!(conv_err(huge_pad, 1, None), Error::TooLarge { what: "padding" });
    // Valid layer, but an output that would be enormous (padding blows it up).
    let conv = Conv2d::new(
        Conv2dParams::new(1, 1, [1, 1]).with_padding([1 << 20, 1 << 20]),
        &[1.0],
        None,
        Activation::None,
    )
    .unwrap();
    let x = Tensor::zeros([1, 1, 1, 1]).unwrap();
    assert_err!(conv.forward(&x), Error::TooLarge { what: "output" });
    assert_err!(Tensor::zeros([usize::MAX, usize::MAX, 1, 1]), Error::TooLarge { what: "tensor" });
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
    assert_eq!(
        conv_err(dw, 8 * 9 * 8, None),
        Error::LengthMismatch { what: "weights", expected: 72, got: 576 }
    );
}

#[test]
fn wrong_input_and_output_shapes() {
    let p = Conv2dParams::new(4, 6, [3, 3]);
    let conv = Conv2d::new(p, &[0.1; 216], None, Activation::None).unwrap();
    // Input channel mismatch.
    let x = Tensor::zeros([1, 5, 8, 8]).unwrap();
    assert_eq!(
        conv.forward(&x).unwrap_err(),
        Error::ShapeMismatch {
            what: "input channels",
            expected: vec![1, 4, 8, 8],
            got: vec![1, 5, 8, 8]
        }
    );
    // Kernel larger than the (unpadded) input.
    let x = Tensor::zeros([1, 4, 2, 8]).unwrap();
    let e = conv.forward(&x).unwrap_err();
    assert!(is_invalid(&e, "kernel") && e.to_string().contains("along h"), "{e}");
    // Output view of the wrong shape.
    let x = Tensor::zeros([2, 4, 8, 8]).unwrap();
    let mut out = vec![0.0; 6 * 6 * 6 * 2];
    let view = TensorViewMut::new([2, 6, 6, 6], &mut out).unwrap();
    assert!(conv.forward_into(x.view(), view).is_ok());
    let view = TensorViewMut::new([1, 12, 6, 6], &mut out).unwrap();
    assert_eq!(
        conv.forward_into(x.view(), view).unwrap_err(),
        Error::ShapeMismatch {
            what: "output view",
            expected: vec![2, 6, 6, 6],
            got: vec![1, 12, 6, 6]
        }
    );
}

#[test]
fn tensor_constructors_reject_bad_data() {
    assert_err!(
        Tensor::from_vec([1, 2, 2, 2], vec![0.0; 7]),
        Error::LengthMismatch { what: "tensor data", expected: 8, got: 7 }
    );
    assert_err!(Tensor::zeros([1, 1, 0, 1]), Error::InvalidParam { name: "tensor", .. });
    assert_err!(
        Tensor::from_bytes([1, 1, 1, 2], &[0u8; 7]),
        Error::LengthMismatch { what: "tensor bytes", expected: 8, got: 7 }
    );
    assert_err!(
        TensorView::new([1, 1, 1, 2], &[0.0; 3]),
        Error::LengthMismatch { what: "tensor view", expected: 2, got: 3 }
    );
    assert_err!(
        TensorView::new([0, 1, 1, 2], &[]),
        Error::InvalidParam { name: "tensor view", .. }
    );
    let mut buf = [0.0; 3];
    assert_err!(
        TensorViewMut::new([1, 1, 1, 2], &mut buf),
        Error::LengthMismatch { what: "tensor view", expected: 2, got: 3 }
    );
    assert_err!(
        TensorView::new([usize::MAX, 2, 1, 1], &[]),
        Error::TooLarge { what: "tensor view" }
    );
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
        ("zero channels", BlockConfig::new(0, 8, 3), "in_channels"),
        ("kernel 2", BlockConfig::new(8, 8, 2), "kernel"),
        ("groups not dividing", BlockConfig::new(8, 8, 3).with_groups(3), "groups"),
        ("stride 0", BlockConfig::new(8, 8, 3).with_stride(0), "stride"),
        ("no conv branch", BlockConfig::new(8, 8, 3).with_branches(0), "num_conv_branches"),
    ];
    for (label, config, param) in bad_configs {
        let e = MobileOneBlock::random(config, &mut rng).err();
        assert!(
            matches!(e, Some(Error::InvalidParam { name, .. }) if name == param),
            "{label}: {e:?}"
        );
    }
    let block =
        MobileOneBlock::random(BlockConfig::new(8, 8, 3).with_branches(2), &mut rng).unwrap();
    let fused = block.reparameterize().unwrap();
    let wrong_channels = Tensor::zeros([1, 7, 5, 5]).unwrap();
    let want = Error::ShapeMismatch {
        what: "input channels",
        expected: vec![1, 8, 5, 5],
        got: vec![1, 7, 5, 5],
    };
    assert_eq!(block.forward(&wrong_channels).unwrap_err(), want);
    assert_eq!(fused.forward(&wrong_channels).unwrap_err(), want);
    let x = Tensor::zeros([1, 8, 5, 5]).unwrap();
    let mut out = vec![0.0; 8 * 4 * 4];
    let view = TensorViewMut::new([1, 8, 4, 4], &mut out).unwrap();
    assert_err!(
        block.forward_into(x.view(), view, &mut Workspace::new()),
        Error::ShapeMismatch { what: "output view", .. }
    );
}

#[test]
fn networks_reject_bad_inputs() {
    let net =
        MobileOne::random(MobileOneConfig::variant(Variant::S0).with_num_classes(5), 1).unwrap();
    assert_err!(
        net.forward(&Tensor::zeros([1, 4, 32, 32]).unwrap()),
        Error::ShapeMismatch { what: "input channels", .. }
    );
    // A 16x16 input is valid (the last stages run on 1x1 planes), but the
    // logits view must have the batch's shape.
    let x = Tensor::zeros([2, 3, 16, 16]).unwrap();
    let mut logits = vec![0.0; 5];
    let view = TensorViewMut::new([1, 5, 1, 1], &mut logits).unwrap();
    assert_err!(
        net.forward_into(x.view(), view, &mut Workspace::new()),
        Error::ShapeMismatch { what: "logits view", .. }
    );
    assert_err!(
        MobileOne::random(MobileOneConfig::variant(Variant::S1).with_num_classes(0), 1),
        Error::InvalidParam { name: "mobileone config", reason } if reason.contains("num_classes")
    );
}

#[test]
fn loaders_reject_corrupt_files_without_panicking() {
    let net =
        MobileOne::random(MobileOneConfig::variant(Variant::S0).with_num_classes(3), 2).unwrap();
    let good = to_bytes(&net).unwrap();
    assert!(load_bytes(&good, &LoadOptions::default()).is_ok());
    let header_len = 8 + u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let not_safetensors = |e: &Error| matches!(e, Error::NotSafetensors { .. });
    let truncated_in_a_tensor = |e: &Error| {
        matches!(e, Error::TruncatedFile { tensor: Some(t), got_bytes, .. }
            if !t.is_empty() && *got_bytes < good.len() as u64)
    };
    let truncated_at_header = |e: &Error| matches!(e, Error::TruncatedFile { got_bytes, .. } if *got_bytes < good.len() as u64);
    type Check<'a> = &'a dyn Fn(&Error) -> bool;
    let cases: Vec<(&str, Vec<u8>, Check)> = vec![
        ("empty", vec![], &not_safetensors),
        ("garbage", b"this is not a safetensors file at all".to_vec(), &not_safetensors),
        (
            "header length past the end",
            {
                let mut b = good.clone();
                b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
                b
            },
            &not_safetensors,
        ),
        ("truncated", good[..good.len() / 2].to_vec(), &truncated_in_a_tensor),
        ("header only", good[..header_len].to_vec(), &truncated_at_header),
    ];
    for (label, bytes, check) in cases {
        let err = load_bytes(&bytes, &LoadOptions::default()).expect_err(label);
        assert!(check(&err), "{label}: got {err:?}");
        assert!(!err.to_string().contains('\n'), "{label}: {err}");
    }
    // The wrong variant for the tensors: a shape error naming the stem.
    let err =
        load_bytes(&good, &LoadOptions { variant: Some(Variant::S2), ..LoadOptions::default() })
            .unwrap_err();
    assert!(matches!(&err, Error::TensorShape { name, .. } if name.starts_with("stem")), "{err:?}");
}

/// What is not a regular file is an I/O error naming the path, returned at
/// once: a FIFO with no writer (opening it for reading the ordinary way
/// waits for a writer forever) and a directory, through both the checkpoint
/// loader and the plain file reader.
#[cfg(unix)]
#[test]
fn special_files_are_io_errors_without_blocking() {
    use repconv::weights::{load, read_file};
    let dir = std::env::temp_dir().join(format!("repconv-bad-input-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("weights.safetensors");
    common::watchdog::mkfifo(&fifo);
    for path in [fifo, dir.clone()] {
        let p = path.clone();
        let (loaded, read) = common::watchdog::within(60, "loading a FIFO", move || {
            (load(&p, &LoadOptions::default()).map(|_| ()), read_file(&p).map(|_| ()))
        });
        for result in [loaded, read] {
            match result {
                Err(Error::Io { path: p, reason }) => {
                    assert_eq!(p, path.display().to_string());
                    assert_eq!(reason, "not a regular file");
                }
                other => panic!("{}: got {other:?}", path.display()),
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
