//! The depthwise runners (3x3 and 1x1): images x channel chunks, each chunk
//! through the kernel with its own scratch. A chunk never straddles images.

use repconv_kernels::dwconv1x1::{self, Dw1x1Args};
use repconv_kernels::dwconv3x3::{self, Dw3x3Args};

use super::frame::{Call, Split, for_each_chunk, largest_divisor_at_most};
use crate::scratch::with_panel;

/// Channels per task of a depthwise 3x3 layer: one chunk per thread (more
/// make a fork-join's overhead weigh on short layers), of at least ~64 KiB of
/// output, and a divisor of `c` so chunks tile each image.
fn dw3x3_chunk(n: usize, c: usize, plane_out: usize, parallel: bool) -> usize {
    if !parallel {
        return c;
    }
    let by_threads = (n * c).div_ceil(rayon::current_num_threads());
    let by_size = (16 * 1024usize).div_ceil(plane_out);
    largest_divisor_at_most(c, by_threads.max(by_size).min(c))
}

/// Runs a depthwise 3x3 convolution, stride 1 or 2, padding 1 (shapes checked).
pub(super) fn run_3x3(call: Call<'_>) {
    let Call { conv, act, input, output, parallel } = call;
    let [n, c, h, w] = input.shape();
    let [_, _, oh, ow] = output.shape();
    let stride = conv.params.stride[0];
    let (plane_in, plane_out) = (h * w, oh * ow);
    let per_task = dw3x3_chunk(n, c, plane_out, parallel);
    let x = input.as_slice();
    let isa = conv.plan.isa();
    // Validated geometry: planes at least 1x1, stride 1 or 2, and a plane of
    // a tensor (at most MAX_ELEMENTS floats) is far below the 1/64 of the
    // address space where scratch_len gives up: never None here.
    let scratch = dwconv3x3::scratch_len(isa, h, w, stride).expect("checked by the planner");
    let chunks_per_image = c / per_task;
    let task = |t: usize, yc: &mut [f32]| {
        // Task t covers channels [c0, c0 + len) of image b.
        let (b, c0) = (t / chunks_per_image, t % chunks_per_image * per_task);
        let len = yc.len() / plane_out;
        let xs = &x[(b * c + c0) * plane_in..(b * c + c0 + len) * plane_in];
        let per = dwconv3x3::PACKED_PER_CHANNEL;
        let packed = &conv.packed[c0 * per..(c0 + len) * per];
        let args = Dw3x3Args { channels: len, h, w, packed, input: xs, output: yc };
        with_panel(scratch, |s| {
            if stride == 1 {
                dwconv3x3::dw3x3_s1p1(isa, act, args, s)
            } else {
                dwconv3x3::dw3x3_s2p1(isa, act, args, s)
            }
        });
    };
    let y = output.into_slice();
    for_each_chunk(y, per_task * plane_out, Split::from(parallel), task);
}

/// Runs a depthwise 1x1 convolution, stride 1 or 2 (MobileOne's scale
/// branch): batch and channels are one axis here, every plane has its own
/// weight.
pub(super) fn run_1x1(call: Call<'_>) {
    let Call { conv, act, input, output, parallel } = call;
    let [_, c, h, w] = input.shape();
    let [_, _, oh, ow] = output.shape();
    let stride = conv.params.stride[0];
    let x = input.as_slice();
    let y = output.into_slice();
    let target = if parallel { c.div_ceil(2 * rayon::current_num_threads()) } else { c };
    let per_task = largest_divisor_at_most(c, target);
    let task = |t: usize, yc: &mut [f32]| {
        let first = t * per_task; // plane index over batch x channels
        let c0 = first % c;
        let xs = &x[first * h * w..(first + per_task) * h * w];
        let packed = &conv.packed[c0 * dwconv1x1::PACKED_PER_CHANNEL..];
        let args = Dw1x1Args { channels: per_task, h, w, stride, packed, input: xs, output: yc };
        dwconv1x1::dw1x1(conv.plan.isa(), act, args);
    };
    for_each_chunk(y, per_task * oh * ow, Split::from(parallel), task);
}
