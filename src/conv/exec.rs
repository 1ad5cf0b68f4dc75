//! Execution: packs a plan's weights once, and sends each call to its
//! family's runner. Runners ([`pointwise`](super::pointwise),
//! [`general`](super::general), [`direct3x3`](super::direct3x3),
//! [`depthwise`](super::depthwise)) sit on the frame ([`super::frame`]) and,
//! for the GEMM families, on [`super::gemm`]; none of them imports this file.

use repconv_kernels::{Precision, bf16, dwconv1x1, dwconv3x3};

use super::frame::{Call, forks, kernel_act};
use super::params::Conv2dParams;
use super::plan::{Family, Plan};
use super::{Conv2d, depthwise, direct3x3, gemm, general, pointwise};
use crate::error::{Error, Result};
use crate::tensor::{TensorView, TensorViewMut};

/// A plan's packed weights: f32 for the f32 kernels, `u32` words (bf16
/// pairs and f32 bias bits) for a bf16 kernel; the other one is empty.
pub(super) struct Packed {
    pub(super) f32: Vec<f32>,
    pub(super) bf16: Vec<u32>,
}

/// Packs OIHW weights and the bias for the plan's kernel.
pub(super) fn pack(
    p: &Conv2dParams,
    plan: &Plan,
    weights: &[f32],
    bias: Option<&[f32]>,
) -> Result<Packed> {
    let f32 = |f32| Ok(Packed { f32, bf16: Vec::new() });
    match plan.family() {
        // The 1x1 and direct 3x3 bf16 kernels (groups 1) share the GEMM's
        // packing, with the reduction in OIHW order.
        Family::Conv1x1 | Family::Conv3x3 if plan.precision() == Precision::Bf16 => {
            let (m, k) = (p.out_channels, general::gemm_k(p));
            let len = bf16::packed_len(m, k)
                .filter(|&n| n <= crate::MAX_ELEMENTS)
                .ok_or(Error::TooLarge { what: "packed weights" })?;
            let mut packed = vec![0u32; len];
            bf16::pack_weights(weights, bias, m, k, &mut packed);
            Ok(Packed { f32: Vec::new(), bf16: packed })
        }
        Family::Dw1x1 => {
            let mut packed = vec![0.0; p.out_channels * dwconv1x1::PACKED_PER_CHANNEL];
            dwconv1x1::pack_weights(weights, bias, p.out_channels, &mut packed);
            f32(packed)
        }
        Family::Dw3x3 => {
            let mut packed = vec![0.0; p.out_channels * dwconv3x3::PACKED_PER_CHANNEL];
            dwconv3x3::pack_weights(weights, bias, p.out_channels, &mut packed);
            f32(packed)
        }
        // Too long a reduction for the GEMM's panels: the general path runs
        // the direct tap loop on the OIHW weights instead, so nothing to pack.
        Family::Conv1x1 | Family::General if general::beyond_gemm(p) => f32(Vec::new()),
        Family::Conv1x1 | Family::General | Family::Conv3x3 => {
            let shape = [p.groups, p.out_per_group(), general::gemm_k(p)];
            f32(gemm::pack(plan.isa(), shape, weights, bias)?)
        }
    }
}

/// Runs a validated convolution (shapes already checked by the caller).
pub(super) fn run(conv: &Conv2d, input: TensorView<'_>, output: TensorViewMut<'_>) {
    let act = kernel_act(conv.activation);
    let flops = conv.params.flops(input.shape()).unwrap_or(u64::MAX);
    let call = Call { conv, act, input, output, parallel: forks(conv, flops) };
    match conv.plan.family() {
        Family::Conv1x1 if conv.plan.precision() == Precision::Bf16 => pointwise::run_bf16(call),
        Family::Conv1x1 if !general::uses_taps(conv) => pointwise::run(call),
        Family::Conv1x1 | Family::General => general::run(call),
        Family::Conv3x3 if conv.plan.precision() == Precision::Bf16 => direct3x3::run_bf16(call),
        Family::Conv3x3 => direct3x3::run(call),
        Family::Dw3x3 => depthwise::run_3x3(call),
        Family::Dw1x1 => depthwise::run_1x1(call),
    }
}
