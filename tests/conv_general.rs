//! The general convolution path against the reference, on random geometry:
//! as planned, forced to the general path, and forced to work in narrow bands
//! or through the direct tap loop by a small scratch limit.

mod common;

use common::{check_close, ref_conv, values};
use proptest::prelude::*;
use repconv::conv::KernelChoice;
use repconv::{Activation, Conv2d, Conv2dParams, Tensor};
use repconv_kernels::reference::conv2d_nchw_ref;

#[derive(Debug, Clone)]
struct Case {
    batch: usize,
    groups: usize,
    cin_g: usize,
    cout_g: usize,
    hw: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    bias: bool,
    relu: bool,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (1usize..=3, 1usize..=3, 1usize..=20, 1usize..=20),
        ([1usize..=20, 1usize..=20], [1usize..=5, 1usize..=5], [1usize..=3, 1usize..=3]),
        ([0usize..=2, 0usize..=2], [1usize..=2, 1usize..=2]),
        (any::<bool>(), any::<bool>(), any::<u64>()),
    )
        .prop_map(
            |(
                (batch, groups, cin_g, cout_g),
                (hw, kernel, stride),
                (padding, dilation),
                (bias, relu, seed),
            )| Case {
                batch,
                groups,
                cin_g,
                cout_g,
                hw,
                kernel,
                stride,
                padding,
                dilation,
                bias,
                relu,
                seed,
            },
        )
}

fn run_case(c: &Case, choice: KernelChoice) -> Result<(), TestCaseError> {
    run_case_limited(c, choice, None)
}

fn run_case_limited(
    c: &Case,
    choice: KernelChoice,
    limit: Option<usize>,
) -> Result<(), TestCaseError> {
    let params = Conv2dParams::new(c.groups * c.cin_g, c.groups * c.cout_g, c.kernel)
        .with_stride(c.stride)
        .with_padding(c.padding)
        .with_dilation(c.dilation)
        .with_groups(c.groups);
    let shape = [c.batch, params.in_channels, c.hw[0], c.hw[1]];
    let act = if c.relu { Activation::Relu } else { Activation::None };
    let weights = values(c.seed, params.weight_len().unwrap());
    let bias = values(c.seed ^ 1, params.out_channels);
    let bias = c.bias.then_some(&bias[..]);
    let conv = match Conv2d::with_choice(params, &weights, bias, act, choice) {
        Ok(conv) => conv,
        Err(e) => return Err(TestCaseError::fail(format!("valid params rejected: {e}"))),
    };
    let conv = match limit {
        Some(bytes) => conv.with_scratch_limit(bytes),
        None => conv,
    };
    let rp = ref_conv(&params, shape, act);
    let input = Tensor::from_vec(shape, values(c.seed ^ 2, shape.iter().product())).unwrap();
    match rp.output_hw() {
        None => {
            // Kernel larger than the padded input: must be a clean error.
            prop_assert!(conv.forward(&input).is_err());
        }
        Some(_) => {
            let out = conv.forward(&input).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let (want, mag) = conv2d_nchw_ref(&rp, input.as_slice(), &weights, bias);
            check_close(out.as_slice(), &want, &mag).map_err(TestCaseError::fail)?;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn general_path_matches_reference(c in case()) {
        run_case(&c, KernelChoice::General)?;
    }

    #[test]
    fn planned_path_matches_reference(c in case()) {
        run_case(&c, KernelChoice::Auto)?;
    }

    /// Limits from 4 bytes (one float: every reduction is longer, so the
    /// direct tap loop runs) to 4 KiB: bands of one position to whole rows,
    /// starting and ending mid-row.
    #[test]
    fn banded_and_tap_paths_match_reference(c in case(), limit in 4usize..4096) {
        run_case_limited(&c, KernelChoice::General, Some(limit))?;
    }
}
