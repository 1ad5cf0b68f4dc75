//! Depthwise 1x1 convolution (groups = channels = out channels), no padding,
//! stride 1 or 2: a per-channel scale and shift,
//! `out[c][oy][ox] = A(bias[c] + w[c] · in[c][oy*s][ox*s])`.
//!
//! It is the 1x1 "scale" branch of MobileOne's depthwise blocks in their
//! train-time form; without it that branch would run on the general im2col
//! path, one 1-row GEMM per channel.
//!
//! Packed weights: `[bias[c], w[c]]` per channel ([`PACKED_PER_CHANNEL`] = 2).
//! Stride 1 is vectorised over the whole contiguous plane; stride 2 is a
//! strided scalar loop (a quarter of the plane is read), compiled per ISA
//! like every kernel so its multiply-add is fused the same way.

use crate::act::{Act, Activation, with_act};
use crate::isa::{Isa, Job, Vector, dispatch};
use crate::lanes::Lanes;

/// Floats of packed weights per channel: `[bias, w]`.
pub const PACKED_PER_CHANNEL: usize = 2;

/// Packs `weights[c]` and an optional `bias[c]` as `[bias, w]` per channel.
///
/// # Panics
/// If the lengths do not match `channels`.
pub fn pack_weights(weights: &[f32], bias: Option<&[f32]>, channels: usize, dst: &mut [f32]) {
    assert_eq!(weights.len(), channels, "one weight per channel");
    assert_eq!(Some(dst.len()), channels.checked_mul(PACKED_PER_CHANNEL), "dst length");
    if let Some(b) = bias {
        assert_eq!(b.len(), channels, "bias length");
    }
    for (c, d) in dst.chunks_exact_mut(PACKED_PER_CHANNEL).enumerate() {
        d[0] = bias.map_or(0.0, |b| b[c]);
        d[1] = weights[c];
    }
}

/// One depthwise 1x1 problem on slices: `channels` consecutive planes.
#[derive(Debug)]
pub struct Dw1x1Args<'a> {
    /// Number of planes (channels).
    pub channels: usize,
    /// Input plane height.
    pub h: usize,
    /// Input plane width.
    pub w: usize,
    /// Stride, 1 or 2.
    pub stride: usize,
    /// Packed weights, `channels * PACKED_PER_CHANNEL` floats.
    pub packed: &'a [f32],
    /// Input, `channels * h * w` floats.
    pub input: &'a [f32],
    /// Output, `channels * oh * ow` floats, `oh = (h-1)/stride + 1`.
    pub output: &'a mut [f32],
}

/// Computes `channels` planes of `h x w` input into `oh x ow` output planes
/// with `isa`'s kernel (`dw1x1_s<stride>_1x<lanes>__<isa>`).
///
/// # Panics
/// If a slice is shorter than the shapes imply, a size overflows, `h` or `w`
/// is 0, or `stride` is not 1 or 2.
pub fn dw1x1(isa: Isa, act: Activation, args: Dw1x1Args<'_>) {
    struct Run<'a, A>(Dw1x1Args<'a>, core::marker::PhantomData<A>);
    impl<A: Act> Job for Run<'_, A> {
        type Out = ();
        #[inline(always)]
        fn run<V: Vector>(self) {
            dw1x1_body::<V, A>(self.0)
        }
    }
    fn go<A: Act>(isa: Isa, args: Dw1x1Args<'_>) {
        dispatch(isa, Run::<A>(args, core::marker::PhantomData))
    }
    with_act!(act, go::<_>(isa, args))
}

#[inline(always)]
fn dw1x1_body<V: Vector, A: Act>(args: Dw1x1Args<'_>) {
    let Dw1x1Args { channels, h, w, stride, packed, input, output } = args;
    assert!(stride == 1 || stride == 2, "stride must be 1 or 2");
    assert!(h >= 1 && w >= 1, "planes must be at least 1x1");
    let (oh, ow) = ((h - 1) / stride + 1, (w - 1) / stride + 1);
    let n_in = channels.checked_mul(h).and_then(|x| x.checked_mul(w)).expect("size overflows");
    assert!(packed.len() / PACKED_PER_CHANNEL >= channels, "packed too short");
    assert!(input.len() >= n_in, "input too short");
    assert!(output.len() >= channels * oh * ow, "output too short");
    for c in 0..channels {
        let (b, k) = (packed[2 * c], packed[2 * c + 1]);
        let x = &input[c * h * w..(c + 1) * h * w];
        let y = &mut output[c * oh * ow..(c + 1) * oh * ow];
        if stride == 1 {
            let (bv, kv) = (V::splat(b), V::splat(k));
            let full = x.len() / V::LANES * V::LANES;
            for i in (0..full).step_by(V::LANES) {
                A::apply(kv.mul_add(V::load(x, i), bv)).store(y, i);
            }
            for i in full..x.len() {
                y[i] = A::apply_scalar(V::mul_add_scalar(k, x[i], b));
            }
        } else {
            for oy in 0..oh {
                for ox in 0..ow {
                    let v = x[oy * 2 * w + ox * 2];
                    y[oy * ow + ox] = A::apply_scalar(V::mul_add_scalar(k, v, b));
                }
            }
        }
    }
}
