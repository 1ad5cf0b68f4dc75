//! Execution: packs a plan's weights once, and sends each call to its
//! family's runner. Runners ([`pointwise`](super::pointwise),
//! [`general`](super::general), [`direct3x3`](super::direct3x3),
//! [`depthwise`](super::depthwise)) sit on the frame ([`super::frame`]) and,
//! for the GEMM families, on [`super::gemm`]; none of them imports this file.

use repconv_kernels::{Precision, bf16, dwconv1x1, dwconv3x3};

use super::frame::{forks, kernel_act};
use super::params::Conv2dParams;
use super::plan::{Family, Plan};
use super::{Conv2d, depthwise, direct3x3, gemm, general, pointwise};
use crate::error::{Error, Result};
use crate::tensor::{TensorView, TensorViewMut};

/// Packs OIHW weights and the bias for the plan's kernel family.
pub(super) fn pack(
    p: &Conv2dParams,
    plan: &Plan,
    weights: &[f32],
    bias: Option<&[f32]>,
) -> Result<Vec<f32>> {
    match plan.family() {
        Family::Dw1x1 => {
            let mut packed = vec![0.0; p.out_channels * dwconv1x1::PACKED_PER_CHANNEL];
            dwconv1x1::pack_weights(weights, bias, p.out_channels, &mut packed);
            Ok(packed)
        }
        Family::Dw3x3 => {
            let mut packed = vec![0.0; p.out_channels * dwconv3x3::PACKED_PER_CHANNEL];
            dwconv3x3::pack_weights(weights, bias, p.out_channels, &mut packed);
            Ok(packed)
        }
        // Too long a reduction for the GEMM's panels: the general path runs
        // the direct tap loop on the OIHW weights instead, so nothing to pack.
        Family::Conv1x1 | Family::General if general::beyond_gemm(p) => Ok(Vec::new()),
        Family::Conv1x1 | Family::General | Family::Conv3x3 => {
            let shape = [p.groups, p.out_per_group(), general::gemm_k(p)];
            gemm::pack(plan.isa(), shape, weights, bias)
        }
    }
}

/// Packs OIHW weights and the bias for the plan's bf16 kernel (empty when
/// the plan's kernel is an f32 one).
pub(super) fn pack_bf16(
    p: &Conv2dParams,
    plan: &Plan,
    weights: &[f32],
    bias: Option<&[f32]>,
) -> Result<Vec<u32>> {
    if plan.precision() != Precision::Bf16 {
        return Ok(Vec::new());
    }
    // Only the 1x1 GEMM has a bf16 kernel (groups 1).
    let (m, k) = (p.out_channels, p.in_channels);
    let len = bf16::packed_len(m, k)
        .filter(|&n| n <= crate::MAX_ELEMENTS)
        .ok_or(Error::TooLarge { what: "packed weights" })?;
    let mut packed = vec![0u32; len];
    bf16::pack_weights(weights, bias, m, k, &mut packed);
    Ok(packed)
}

/// Runs a validated convolution (shapes already checked by the caller).
pub(super) fn run(conv: &Conv2d, input: TensorView<'_>, output: TensorViewMut<'_>) {
    let act = kernel_act(conv.activation);
    let flops = conv.params.flops(input.shape()).unwrap_or(u64::MAX);
    let parallel = forks(conv, flops);
    match conv.plan.family() {
        Family::Conv1x1 if conv.plan.precision() == Precision::Bf16 => {
            pointwise::run_bf16(conv, act, input, output, parallel)
        }
        Family::Conv1x1 if !general::uses_taps(conv) => {
            pointwise::run(conv, act, input, output, parallel)
        }
        Family::Conv1x1 | Family::General => general::run(conv, act, input, output, parallel),
        Family::Conv3x3 => direct3x3::run(conv, act, input, output, parallel),
        Family::Dw3x3 => depthwise::run_3x3(conv, act, input, output, parallel),
        Family::Dw1x1 => depthwise::run_1x1(conv, act, input, output, parallel),
    }
}
