//! bf16 dense 3x3 convolution, padding 1, stride 1 or 2, groups 1
//! (`conv3x3_bf16_s<stride>_8x48__<isa>`):
//! `out[oc][oy][ox] = A(bias[oc] + Σ_{ci,ky,kx} bf16(W[oc][ci][ky][kx]) ·
//! bf16(in[ci][s·oy+ky-1][s·ox+kx-1]))` (zero outside the input), products
//! exact, sums in f32, f32 output; rounding and NaN rules as in [`super`].
//!
//! # How
//! An implicit GEMM with reduction `k = cin * 9` (tap `t = ci*9 + ky*3 + kx`,
//! the OIHW order, so the weights are packed by [`super::pack_weights`] with
//! `m = cout`, `k = cin * 9`):
//! 1. the input is copied once into `prepared` with a zero border of 1 and,
//!    for stride 2, split into the 4 phases of (row, column) parity, so that
//!    tap `t` of output pixel `(oy, ox)` is `Q[off(t) + oy * wq + ox]` with
//!    `off(ci, ky, kx) = phase(ky % s, kx % s) + ci*hq*wq + (ky/s)*wq + kx/s`
//!    (`hq x wq` phase planes, `hq = ceil((h+2)/s)`, `wq = ceil((w+2)/s)`):
//!    every tap row of an output row is a contiguous run of `ow` floats;
//! 2. for a band of output rows, the runs of taps `2p` and `2p + 1` are
//!    rounded and interleaved into row `p` of the pair panel
//!    (`[ceil(k/2)][rows * ow]`, an odd `k` padded with zero), the same layout
//!    the 1x1 GEMM reads; the band is at most [`super::conv1x1::BAND_WORDS`]
//!    words, so it stays in L2 while every output channel block reads it;
//! 3. the 1x1 GEMM driver ([`super::conv1x1`]) computes the band's
//!    `cout x (rows * ow)` outputs straight into the NCHW output (row stride
//!    `oh * ow`): no wasted columns and no copy-out.
//!
//! The stem of MobileOne (3 -> 48, stride 2, 224x224) has `k = 27`, 14 pairs.
//!
//! The zero border takes part in the products like any input, so a weight
//! that is NaN or infinite makes every output it meets NaN, borders included
//! (`Inf * 0`), as in PyTorch and the reference convolution.

use super::conv1x1::{BAND_WORDS, Gemm, Panel, drive, packed_len};
use super::convert::pair_run;
use super::simd::Simd;
use super::{Bf16Isa, Bf16Job, Bf16Kind, LANES, dispatch};
use crate::act::Activation;

/// One bf16 3x3 convolution (padding 1, stride 1 or 2) on one NCHW image.
#[derive(Debug)]
pub struct Conv3x3Bf16Args<'a> {
    /// Input channels.
    pub cin: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels; `packed` holds `ceil(cout / 8)` blocks.
    pub cout: usize,
    /// Stride, 1 or 2.
    pub stride: usize,
    /// Packed weights: [`super::pack_weights`] of the OIHW weights as a
    /// `cout x (cin * 9)` matrix, with the bias.
    pub packed: &'a [u32],
    /// Input, `cin * h * w` floats (NCHW, one image).
    pub input: &'a [f32],
    /// Output, `cout * oh * ow` floats (see [`conv3x3_output_hw`]).
    pub output: &'a mut [f32],
}

/// Output height and width of a 3x3 convolution with padding 1:
/// `((h - 1) / stride + 1, (w - 1) / stride + 1)`.
pub fn conv3x3_output_hw(h: usize, w: usize, stride: usize) -> (usize, usize) {
    ((h.max(1) - 1) / stride.max(1) + 1, (w.max(1) - 1) / stride.max(1) + 1)
}

/// The name of the kernel `isa` runs for `stride`:
/// `conv3x3_bf16_s<stride>_8x48__<isa>`.
pub fn conv3x3_kernel_name(isa: Bf16Isa, stride: usize) -> &'static str {
    match (isa.kind(), stride) {
        (Bf16Kind::Avx512Bf16, 1) => "conv3x3_bf16_s1_8x48__avx512bf16",
        (Bf16Kind::Avx512Bf16, _) => "conv3x3_bf16_s2_8x48__avx512bf16",
        (Bf16Kind::Emulated, 1) => "conv3x3_bf16_s1_8x48__emulated",
        (Bf16Kind::Emulated, _) => "conv3x3_bf16_s2_8x48__emulated",
    }
}

/// Phase-plane geometry `(hq, wq)`.
fn phase_hw(h: usize, w: usize, stride: usize) -> (usize, usize) {
    ((h + 2).div_ceil(stride), (w + 2).div_ceil(stride))
}

/// Output rows per band: as many as keep the band's panel within
/// [`BAND_WORDS`], at least one.
fn band_rows(cin: usize, ow: usize) -> usize {
    let kp = (cin * 9).div_ceil(2);
    (BAND_WORDS / (kp * ow).max(1)).max(1)
}

/// Lengths of the two scratch buffers [`conv3x3_bf16`] needs:
/// `(prepared, panel)`: `stride² * cin * hq * wq` floats for the padded,
/// phase-split input and `ceil(9 cin / 2) * round_up(band_rows * ow, 16)`
/// words for one band's pair panel. `None` on overflow or a stride other
/// than 1 or 2.
pub fn conv3x3_scratch_len(
    cin: usize,
    h: usize,
    w: usize,
    stride: usize,
) -> Option<(usize, usize)> {
    if !(1..=2).contains(&stride) {
        return None;
    }
    let (hq, wq) = (h.checked_add(2)?.div_ceil(stride), w.checked_add(2)?.div_ceil(stride));
    let prepared = (stride * stride).checked_mul(cin)?.checked_mul(hq)?.checked_mul(wq)?;
    let (oh, ow) = conv3x3_output_hw(h, w, stride);
    let kp = cin.checked_mul(9)?.div_ceil(2);
    let rows = oh.min(BAND_WORDS / kp.checked_mul(ow)?.max(1)).max(1);
    let panel = kp.checked_mul(rows.checked_mul(ow)?.checked_next_multiple_of(LANES)?)?;
    Some((prepared, panel))
}

/// Computes the bf16 3x3 convolution of `args` with `isa`'s kernel
/// ([`conv3x3_kernel_name`]). `prepared` and `panel` are scratch
/// ([`conv3x3_scratch_len`]); their contents on entry do not matter.
///
/// Writes exactly `output[..cout * oh * ow]`; reads nothing outside the
/// slices. Does not allocate.
///
/// # Panics
/// If `stride` is not 1 or 2, a dimension is 0, `input` is shorter than
/// `cin * h * w`, `output` than `cout * oh * ow`, `packed` than
/// [`super::packed_len`]`(cout, 9 * cin)`, a scratch buffer than
/// [`conv3x3_scratch_len`], or the sizes overflow.
pub fn conv3x3_bf16(
    isa: Bf16Isa,
    act: Activation,
    args: Conv3x3Bf16Args<'_>,
    prepared: &mut [f32],
    panel: &mut [u32],
) {
    let Conv3x3Bf16Args { cin, h, w, cout, stride, packed, input, output } = args;
    assert!(stride == 1 || stride == 2, "stride must be 1 or 2");
    assert!(cin > 0 && h > 0 && w > 0 && cout > 0, "dimensions must be positive");
    let (pl, pnl) = conv3x3_scratch_len(cin, h, w, stride).expect("sizes overflow");
    assert!(prepared.len() >= pl, "prepared scratch too short");
    assert!(panel.len() >= pnl, "panel scratch too short");
    let k = cin.checked_mul(9).expect("sizes overflow");
    assert!(packed_len(cout, k).is_some_and(|len| packed.len() >= len), "packed weights too short");
    assert!(
        cin.checked_mul(h).and_then(|x| x.checked_mul(w)).is_some_and(|n| input.len() >= n),
        "input too short"
    );
    let (oh, ow) = conv3x3_output_hw(h, w, stride);
    let plane = oh * ow;
    assert!(cout.checked_mul(plane).is_some_and(|n| output.len() >= n), "output too short");

    prepare(cin, h, w, stride, input, &mut prepared[..pl]);
    let job = Job { cin, h, w, stride, cout, packed, prepared: &prepared[..pl], panel, output };
    match act {
        Activation::Identity => dispatch(isa, Run::<false>(job)),
        Activation::Relu => dispatch(isa, Run::<true>(job)),
    }
}

/// The zero-bordered, phase-split copy of the input (module docs, step 1).
fn prepare(cin: usize, h: usize, w: usize, s: usize, input: &[f32], q: &mut [f32]) {
    let (hq, wq) = phase_hw(h, w, s);
    let plane = hq * wq;
    let phase = cin * plane;
    q.fill(0.0);
    for ci in 0..cin {
        for y in 0..h {
            let src = &input[(ci * h + y) * w..(ci * h + y + 1) * w];
            let (py, i) = ((y + 1) % s, (y + 1) / s);
            if s == 1 {
                let at = ci * plane + i * wq + 1;
                q[at..at + w].copy_from_slice(src);
            } else {
                // Padded column x + 1 goes to phase (x + 1) % 2, column (x + 1) / 2
                // (= ceil(x / 2)).
                let row = py * 2 * phase + ci * plane + i * wq;
                for (x, &v) in src.iter().enumerate() {
                    q[row + ((x + 1) % 2) * phase + x.div_ceil(2)] = v;
                }
            }
        }
    }
}

/// Everything one call computes with, handed to [`dispatch`].
struct Job<'a> {
    cin: usize,
    h: usize,
    w: usize,
    stride: usize,
    cout: usize,
    packed: &'a [u32],
    prepared: &'a [f32],
    panel: &'a mut [u32],
    output: &'a mut [f32],
}

struct Run<'a, const RELU: bool>(Job<'a>);

impl<const RELU: bool> Bf16Job for Run<'_, RELU> {
    type Out = ();
    #[inline(always)]
    fn run<S: Simd>(self) {
        let Job { cin, h, w, stride: s, cout, packed, prepared, panel, output } = self.0;
        let (hq, wq) = phase_hw(h, w, s);
        let (oh, ow) = conv3x3_output_hw(h, w, s);
        let k = cin * 9;
        let kp = k.div_ceil(2);
        let plane = hq * wq;
        let off = |t: usize| {
            let (ci, ky, kx) = (t / 9, t / 3 % 3, t % 3);
            ((ky % s) * s + kx % s) * cin * plane + ci * plane + (ky / s) * wq + kx / s
        };
        let rows_per_band = band_rows(cin, ow).min(oh);
        // LOOP 0: bands of output rows; each band's pair panel is built once
        // and read by every output channel block.
        for oy0 in (0..oh).step_by(rows_per_band) {
            let rows = rows_per_band.min(oh - oy0);
            let n = rows * ow;
            let width = n.next_multiple_of(LANES);
            for p in 0..kp {
                let (e0, o0) = (off(2 * p), (2 * p + 1 < k).then(|| off(2 * p + 1)));
                let dst = &mut panel[p * width..(p + 1) * width];
                for r in 0..rows {
                    let at = (oy0 + r) * wq;
                    let even = &prepared[e0 + at..e0 + at + ow];
                    let odd = o0.map(|o| &prepared[o + at..o + at + ow]);
                    pair_run::<S>(even, odd, &mut dst[r * ow..(r + 1) * ow]);
                }
                dst[n..].fill(0);
            }
            let g = Gemm { m: cout, k, n, packed, c: &mut output[oy0 * ow..], ldc: oh * ow };
            let x = Panel { words: &panel[..kp * width], ldp: width, padded: true };
            drive::<S, RELU>(g, x, &mut []);
        }
    }
}
