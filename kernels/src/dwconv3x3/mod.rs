//! Depthwise 3x3 convolution, padding 1, stride 1 and 2 (PyTorch semantics,
//! `groups = channels = out channels`):
//! `out[c][oy][ox] = A(bias[c] + Σ_{ky,kx<3} w[c][ky][kx] · in[c][oy*s+ky-1][ox*s+kx-1])`,
//! taps outside the input are zero; `oh = (h - 1) / s + 1`, `ow = (w - 1) / s + 1`.
//!
//! # Packed weight layout (bias-first, one block per channel)
//! ```text
//! channel c: [ bias[c] | w[c][0][0] w[c][0][1] w[c][0][2] w[c][1][0] .. w[c][2][2] ]
//!              1 float    9 floats, row-major (ky, kx)
//! ```
//! [`PACKED_PER_CHANNEL`] = 10 floats; the driver splats them into registers
//! once per channel.
//!
//! # Drivers
//! Both drivers vectorise along W and compute bands of `R` output rows per
//! step, so each loaded input row feeds every output row that uses it.
//! - LOOP 1 walks the channels (planes), in order.
//! - LOOP 2 walks bands of `R` output rows. The last band is moved up to end at
//!   `oh` (it recomputes a few rows, bit-identically) instead of running a
//!   narrower kernel; planes with `oh < R` use one narrower band.
//! - LOOP 3 walks vectors of `LANES` output columns. When `ow >= LANES` the
//!   last vector is moved left to end at `ow` (overlap, no tail); when
//!   `ow < LANES` one vector covers the row and its extra lanes spill into the
//!   next row(s), which are stored later and overwrite them. Stores therefore
//!   go in increasing address order within a channel and across channels.
//!
//! Stride 1 reads the input plane in place: horizontal padding is two lane
//! masks (see [`dw3x3_s1p1_band`]), vertical padding a compile-time choice of
//! kernel. Stride 2 first de-interleaves each input row into even / odd column
//! rows of a zero-padded scratch plane, so every tap is a contiguous load.
//!
//! Planes whose vector loads or spilling stores would leave the caller's slices
//! (the first plane and the last one or few) run the same kernels on a copy in
//! the scratch buffer, and only their valid outputs are copied back: the
//! drivers never touch memory outside `input[..channels*h*w]` and
//! `output[..channels*oh*ow]`.
//!
//! NaN: a NaN input reaches exactly the outputs whose taps include it (padding
//! lanes are cleared with a bitwise AND, which clears NaN too), and ReLU keeps
//! NaN (see [`crate::act`]).

#![allow(non_snake_case)]

mod dw3x3_flat;
mod dw3x3_s1p1;
mod dw3x3_s2p1;

pub use dw3x3_flat::{copy_flat_rows, dw3x3_flat_plane};
pub use dw3x3_s1p1::dw3x3_s1p1_band;
pub use dw3x3_s2p1::dw3x3_s2p1_band;

use crate::act::Act;
use crate::lanes::{LANES, V, load, store};

/// Most output rows per stride-1 band (accumulators: `R_MAX` vectors).
pub const R_MAX: usize = 8;
/// Fewest rows of a stride-1 band when a plane needs more than one band
/// (`ceil(oh / ceil(oh / R_MAX))` for `oh > R_MAX`).
const MIN_MULTI_BAND: usize = R_MAX / 2 + 1;
/// Most output rows per stride-2 band. A stride-2 band reads `2R+1` rows, and
/// 4 keeps the fully unrolled kernel small enough for LLVM to unroll it.
pub const R_MAX_S2: usize = 4;

/// The stride-1 kernel's name, `dw3x3_s1p1_<R_MAX>x<LANES>__<lanes>`.
#[cfg(target_feature = "avx512f")]
pub const NAME_S1: &str = "dw3x3_s1p1_8x16__x16";
/// The stride-1 kernel's name, `dw3x3_s1p1_<R_MAX>x<LANES>__<lanes>`.
#[cfg(not(target_feature = "avx512f"))]
pub const NAME_S1: &str = "dw3x3_s1p1_8x8__x8";
/// The stride-2 kernel's name, `dw3x3_s2p1_<R_MAX_S2>x<LANES>__<lanes>`.
#[cfg(target_feature = "avx512f")]
pub const NAME_S2: &str = "dw3x3_s2p1_4x16__x16";
/// The stride-2 kernel's name, `dw3x3_s2p1_<R_MAX_S2>x<LANES>__<lanes>`.
#[cfg(not(target_feature = "avx512f"))]
pub const NAME_S2: &str = "dw3x3_s2p1_4x8__x8";

/// Floats of packed weights per channel: `[bias, w0..w8]`.
pub const PACKED_PER_CHANNEL: usize = 10;

/// Output height (or width) of a 3x3, padding-1 convolution with `stride`.
#[inline]
fn out_dim(d: usize, stride: usize) -> usize {
    (d - 1) / stride + 1
}

/// Floats the stride-1 driver copies an edge plane into: one leading pad
/// float, the plane, and the vector overhang of the last row plus one.
#[inline]
fn s1_in_region(h: usize, w: usize) -> usize {
    1 + (h - 1) * w + w.max(LANES) + 1
}

/// Floats an edge plane's output needs: the plane plus the last row's spill.
#[inline]
fn out_region(oh: usize, ow: usize) -> usize {
    (oh - 1) * ow + ow.max(LANES)
}

/// Row stride of the stride-2 de-interleaved scratch planes: whole vectors
/// (the de-interleave stores whole vectors) plus one for the `o` shift.
#[inline]
fn s2_row_stride(ow: usize) -> usize {
    ow.div_ceil(LANES) * LANES + 1
}

/// Floats of scratch one call of [`dw3x3_s1p1`] (`stride == 1`) or
/// [`dw3x3_s2p1`] (`stride == 2`) needs for `h x w` input planes.
///
/// # Panics
/// If `h == 0`, `w == 0` or `stride` is not 1 or 2.
pub fn scratch_len(h: usize, w: usize, stride: usize) -> usize {
    assert!(h >= 1 && w >= 1, "planes must be at least 1x1");
    let (oh, ow) = (out_dim(h, stride), out_dim(w, stride));
    let rows = match stride {
        1 => s1_in_region(h, w) + out_region(oh, ow),
        2 => 4 * (h + 2) * s2_row_stride(ow) + out_region(oh, ow),
        _ => panic!("stride must be 1 or 2"),
    };
    rows.max(flat_scratch_len(h, w, stride))
}

/// Whether the flat kernel ([`dw3x3_flat_plane`]) runs a plane of width `w`:
/// always at stride 2, and at stride 1 for planes narrower than two vectors.
pub fn uses_flat(w: usize, stride: usize) -> bool {
    stride == 2 || w < FLAT_S1_MAX_W
}

/// Stride-1 planes narrower than this run the flat kernel.
const FLAT_S1_MAX_W: usize = 2 * LANES - 1;

fn flat_geometry(h: usize, w: usize, stride: usize) -> crate::conv3x3::Geometry {
    crate::conv3x3::Geometry { cin: 1, h, w, stride }
}

/// Scratch of the flat path: the prepared plane plus slack, and the flat output.
fn flat_scratch_len(h: usize, w: usize, stride: usize) -> usize {
    let g = flat_geometry(h, w, stride);
    let step = dw3x3_flat::U * LANES;
    g.prepared_len() + step + g.flat_len().div_ceil(step) * step
}

/// The flat driver: every plane is prepared (zero-padded, phase-split), run
/// through [`dw3x3_flat_plane`], and its rows copied out.
fn flat_driver<A: Act>(args: Dw3x3Args<'_>, stride: usize, scratch: &mut [f32]) {
    let Dw3x3Args { channels, h, w, packed, input, output } = args;
    let g = flat_geometry(h, w, stride);
    let (oh, ow) = g.output_hw();
    let (_, wq) = g.phase_hw();
    let (hw, ohw, n) = (h * w, oh * ow, g.flat_len());
    let step = dw3x3_flat::U * LANES;
    let (prep, flat) = scratch.split_at_mut(g.prepared_len() + step);
    let flat = &mut flat[..n.div_ceil(step) * step];
    prep[g.prepared_len()..].fill(0.0);
    let mut offsets = [0usize; 9];
    crate::conv3x3::tap_offsets(&g, &mut offsets);
    let output = &mut output[..channels * ohw];
    // LOOP 1: channels, in order (short rows spill into later ones).
    for c in 0..channels {
        let k = splat_weights(&packed[c * PACKED_PER_CHANNEL..]);
        crate::conv3x3::prepare_input(
            &g,
            &input[c * hw..(c + 1) * hw],
            &mut prep[..g.prepared_len()],
        );
        dw3x3_flat_plane::<A>(&k, prep, &offsets, n, flat);
        copy_flat_rows(flat, wq, oh, ow, &mut output[c * ohw..]);
    }
}

/// Packs OIHW depthwise `weights[c][0][3][3]` and an optional `bias[c]` into
/// `dst` in the layout documented at the top of this module (a missing bias
/// packs as zero).
///
/// # Panics
/// If `weights.len() != 9 * channels`, `bias` is not `channels` long, or
/// `dst.len() != channels * PACKED_PER_CHANNEL`.
pub fn pack_weights(weights: &[f32], bias: Option<&[f32]>, channels: usize, dst: &mut [f32]) {
    assert_eq!(weights.len(), 9 * channels, "weights must be channels * 9");
    if let Some(b) = bias {
        assert_eq!(b.len(), channels, "bias must be channels long");
    }
    assert_eq!(
        dst.len(),
        channels * PACKED_PER_CHANNEL,
        "dst must be channels * PACKED_PER_CHANNEL"
    );
    for (c, (blk, w9)) in
        dst.chunks_exact_mut(PACKED_PER_CHANNEL).zip(weights.chunks_exact(9)).enumerate()
    {
        blk[0] = bias.map_or(0.0, |b| b[c]);
        blk[1..].copy_from_slice(w9);
    }
}

/// One depthwise 3x3 problem on slices: `channels` consecutive planes.
#[derive(Debug)]
pub struct Dw3x3Args<'a> {
    /// Number of planes (channels) to compute.
    pub channels: usize,
    /// Input plane height.
    pub h: usize,
    /// Input plane width.
    pub w: usize,
    /// Packed weights, `channels * PACKED_PER_CHANNEL` floats (see [`pack_weights`]).
    pub packed: &'a [f32],
    /// Input, `channels * h * w` floats: contiguous row-major planes.
    pub input: &'a [f32],
    /// Output, `channels * oh * ow` floats: contiguous row-major planes.
    pub output: &'a mut [f32],
}

/// Checks the common preconditions and returns `(oh, ow)`.
fn check_args(args: &Dw3x3Args<'_>, stride: usize, scratch: &[f32]) -> (usize, usize) {
    let Dw3x3Args { channels, h, w, .. } = *args;
    assert!(h >= 1 && w >= 1, "planes must be at least 1x1");
    let (oh, ow) = (out_dim(h, stride), out_dim(w, stride));
    let n_in =
        channels.checked_mul(h).and_then(|x| x.checked_mul(w)).expect("input size overflows");
    let n_out = channels * oh * ow;
    assert!(args.packed.len() >= channels * PACKED_PER_CHANNEL, "packed weights too short");
    assert!(args.input.len() >= n_in, "input too short");
    assert!(args.output.len() >= n_out, "output too short");
    assert!(scratch.len() >= scratch_len(h, w, stride), "scratch too short");
    (oh, ow)
}

/// Splats one channel's packed block into registers.
#[inline(always)]
fn splat_weights(blk: &[f32]) -> [V; 10] {
    let mut k = [V::ZERO; 10];
    for (v, &x) in k.iter_mut().zip(blk[..PACKED_PER_CHANNEL].iter()) {
        *v = V::splat(x);
    }
    k
}

/// The first output column of column vector `j` of a row of `ow` outputs.
#[inline(always)]
fn col_start(j: usize, ow: usize) -> usize {
    (j * LANES).min(ow.saturating_sub(LANES))
}

/// Depthwise 3x3, stride 1, padding 1: computes `output[..channels*h*w]`
/// from `input[..channels*h*w]` (see the module docs for the formula).
///
/// Writes exactly `output[..channels*h*w]` and reads only
/// `input[..channels*h*w]`, `packed[..channels*PACKED_PER_CHANNEL]` and
/// `scratch[..scratch_len(h, w, 1)]`. Does not allocate.
///
/// # Panics
/// If `h == 0` or `w == 0`, if `packed`, `input` or `output` is shorter than
/// the shapes imply, or if `scratch.len() < scratch_len(h, w, 1)`.
pub fn dw3x3_s1p1<A: Act>(args: Dw3x3Args<'_>, scratch: &mut [f32]) {
    let (oh, ow) = check_args(&args, 1, scratch);
    if uses_flat(args.w, 1) {
        return flat_driver::<A>(args, 1, scratch);
    }
    let Dw3x3Args { channels, h, w, packed, input, output } = args;
    let hw = h * w;
    let input = &input[..channels * hw];
    let output = &mut output[..channels * hw];

    // Lane masks: `all` keeps every lane, `ml0` clears lane 0 (the left tap of
    // column 0), `mr_last` clears the right tap of column w-1 in the row's last
    // vector (lane w-1 when w < LANES, lane LANES-1 when it is moved to end at w).
    let ones = f32::from_bits(u32::MAX);
    let all = V::splat(ones);
    let mut m = [ones; LANES];
    m[0] = 0.0;
    let ml0 = V::new(m);
    let mut m = [ones; LANES];
    m[w.min(LANES) - 1] = 0.0;
    let mr_last = V::new(m);
    let ncol = w.div_ceil(LANES);
    let (nband, rows) = bands(oh, R_MAX);

    let plane = |k: &[V; 10], src: &[f32], in_off: usize, dst: &mut [f32], out_off: usize| {
        // LOOP 2: bands of `rows` output rows (the last one moved up to end at oh).
        for b in 0..nband {
            let oy0 = (b * rows).min(oh - rows);
            let top = oy0 == 0;
            let bot = oy0 + rows == oh;
            // LOOP 3: column vectors (the last one moved left to end at ow).
            for j in 0..ncol {
                let ox0 = col_start(j, ow);
                let ml = if ox0 == 0 { ml0 } else { all };
                let mr = if j + 1 == ncol { mr_last } else { all };
                let io = in_off + oy0 * w + ox0;
                let oo = out_off + oy0 * ow + ox0;
                s1_band::<A>(rows, top, bot, k, src, io, w, ml, mr, dst, oo, ow);
            }
        }
    };

    let (s_in, s_out) = scratch.split_at_mut(s1_in_region(h, w));
    let s_out = &mut s_out[..out_region(oh, ow)];
    // LOOP 1: channels, in order (spilling stores rely on it).
    for c in 0..channels {
        let k = splat_weights(&packed[c * PACKED_PER_CHANNEL..]);
        let fast = c >= 1
            && c * hw + s1_in_region(h, w) - 1 <= input.len()
            && c * hw + out_region(oh, ow) <= output.len();
        if fast {
            plane(&k, input, c * hw, output, c * hw);
        } else {
            // Edge plane: a copy with one zero before it and zeros after it.
            s_in[0] = 0.0;
            s_in[1..1 + hw].copy_from_slice(&input[c * hw..(c + 1) * hw]);
            s_in[1 + hw..].fill(0.0);
            plane(&k, s_in, 1, s_out, 0);
            output[c * hw..(c + 1) * hw].copy_from_slice(&s_out[..hw]);
        }
    }
}

/// Runs the stride-1 band kernel instantiated for `rows` rows and the given
/// vertical padding.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn s1_band<A: Act>(
    rows: usize,
    top: bool,
    bot: bool,
    k: &[V; 10],
    input: &[f32],
    io: usize,
    w: usize,
    ml: V,
    mr: V,
    output: &mut [f32],
    oo: usize,
    ow: usize,
) {
    macro_rules! go {
        ($r:literal) => {
            s1_band_r::<$r, A>(top, bot, k, input, io, w, ml, mr, output, oo, ow)
        };
    }
    match rows {
        1 => go!(1),
        2 => go!(2),
        3 => go!(3),
        4 => go!(4),
        5 => go!(5),
        6 => go!(6),
        7 => go!(7),
        8 => go!(8),
        _ => unreachable!("band of {rows} rows"),
    }
}

/// [`s1_band`] for a fixed `R`. Bands of fewer than [`MIN_MULTI_BAND`] rows
/// only occur as the single band of a short plane (`top && bot`), so the other
/// padding variants are not instantiated for them.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn s1_band_r<const R: usize, A: Act>(
    top: bool,
    bot: bool,
    k: &[V; 10],
    input: &[f32],
    io: usize,
    w: usize,
    ml: V,
    mr: V,
    output: &mut [f32],
    oo: usize,
    ow: usize,
) {
    if R < MIN_MULTI_BAND {
        assert!(top && bot, "short band inside a plane");
        return dw3x3_s1p1_band::<R, true, true, A>(k, input, io, w, ml, mr, output, oo, ow);
    }
    match (top, bot) {
        (false, false) => {
            dw3x3_s1p1_band::<R, false, false, A>(k, input, io, w, ml, mr, output, oo, ow)
        }
        (true, false) => {
            dw3x3_s1p1_band::<R, true, false, A>(k, input, io, w, ml, mr, output, oo, ow)
        }
        (false, true) => {
            dw3x3_s1p1_band::<R, false, true, A>(k, input, io, w, ml, mr, output, oo, ow)
        }
        (true, true) => {
            dw3x3_s1p1_band::<R, true, true, A>(k, input, io, w, ml, mr, output, oo, ow)
        }
    }
}

/// Splits `oh` output rows into `nb` bands of `r` rows, `r <= r_max`, as
/// even as possible: `nb = ceil(oh / r_max)`, `r = ceil(oh / nb)`; the last
/// band starts at `oh - r` (it may overlap the one before it).
/// With `oh > r_max`, `r > r_max / 2`.
#[inline]
fn bands(oh: usize, r_max: usize) -> (usize, usize) {
    let nb = oh.div_ceil(r_max);
    (nb, oh.div_ceil(nb))
}

/// Depthwise 3x3, stride 2, padding 1: computes `output[..channels*oh*ow]`,
/// `oh = (h+1)/2`, `ow = (w+1)/2`, from `input[..channels*h*w]` (see the
/// module docs for the formula).
///
/// Writes exactly `output[..channels*oh*ow]` and reads only
/// `input[..channels*h*w]`, `packed[..channels*PACKED_PER_CHANNEL]` and
/// `scratch[..scratch_len(h, w, 2)]`. Does not allocate.
///
/// # Panics
/// If `h == 0` or `w == 0`, if `packed`, `input` or `output` is shorter than
/// the shapes imply, or if `scratch.len() < scratch_len(h, w, 2)`.
pub fn dw3x3_s2p1<A: Act>(args: Dw3x3Args<'_>, scratch: &mut [f32]) {
    let (oh, ow) = check_args(&args, 2, scratch);
    if uses_flat(args.w, 2) {
        return flat_driver::<A>(args, 2, scratch);
    }
    let Dw3x3Args { channels, h, w, packed, input, output } = args;
    let (hw, ohw) = (h * w, oh * ow);
    let input = &input[..channels * hw];
    let output = &mut output[..channels * ohw];

    let ws = s2_row_stride(ow);
    let plane_len = (h + 2) * ws;
    // Two de-interleave buffers `[e | o]`: channel c+1 is de-interleaved into
    // one while channel c is computed from the other, so the kernel's loads do
    // not hit the de-interleave's still-pending (partially overlapping) stores,
    // which would defeat store-to-load forwarding and stall.
    let (bufs, rest) = scratch.split_at_mut(4 * plane_len);
    let s_out = &mut rest[..out_region(oh, ow)];
    // Zero the planes once: rows 0 and h+1 (vertical padding), `o[r][0]` and
    // every column past a row's data stay zero, because the de-interleave only
    // ever writes data (or zeros) to the same columns of rows 1..=h.
    bufs.fill(0.0);
    let (buf0, buf1) = bufs.split_at_mut(2 * plane_len);
    let mut bufs = [buf0, buf1];
    // Lane masks for the last, partial 2*LANES chunk of an input row.
    let rem = w % (2 * LANES);
    let ones = f32::from_bits(u32::MAX);
    let tail_masks: [V; 2] = core::array::from_fn(|h| {
        V::new(core::array::from_fn(|i| if h * LANES + i < rem { ones } else { 0.0 }))
    });
    let ncol = ow.div_ceil(LANES);
    let (nband, rows) = bands(oh, R_MAX_S2);

    // De-interleaves plane c: input row iy goes to scratch row iy+1.
    let deint_plane = |c: usize, buf: &mut [f32]| {
        let (e, o) = buf.split_at_mut(plane_len);
        for iy in 0..h {
            let r = (iy + 1) * ws;
            deinterleave_row(
                input,
                c * hw + iy * w,
                w,
                &tail_masks,
                &mut e[r..r + ws],
                &mut o[r..r + ws],
            );
        }
    };
    if channels > 0 {
        deint_plane(0, &mut *bufs[0]);
    }

    // LOOP 1: channels, in order (spilling stores rely on it).
    for c in 0..channels {
        let k = splat_weights(&packed[c * PACKED_PER_CHANNEL..]);
        let [cur, next] = &mut bufs;
        let (cur, next) = if c % 2 == 0 { (cur, next) } else { (next, cur) };
        if c + 1 < channels {
            deint_plane(c + 1, next);
        }
        let (e, o) = cur.split_at(plane_len);
        let fast = c * ohw + out_region(oh, ow) <= output.len();
        let (dst, out_off) = if fast { (&mut *output, c * ohw) } else { (&mut *s_out, 0) };
        // LOOP 2: bands of `rows` output rows (the last one moved up to end at oh).
        for b in 0..nband {
            let oy0 = (b * rows).min(oh - rows);
            // LOOP 3: column vectors (the last one moved left to end at ow).
            for j in 0..ncol {
                let ox0 = col_start(j, ow);
                let eo = 2 * oy0 * ws + ox0;
                let oo = out_off + oy0 * ow + ox0;
                macro_rules! go {
                    ($r:literal) => {
                        dw3x3_s2p1_band::<$r, A>(&k, e, o, eo, ws, dst, oo, ow)
                    };
                }
                match rows {
                    1 => go!(1),
                    2 => go!(2),
                    3 => go!(3),
                    4 => go!(4),
                    _ => unreachable!("band of {rows} rows"),
                }
            }
        }
        if !fast {
            output[c * ohw..(c + 1) * ohw].copy_from_slice(&s_out[..ohw]);
        }
    }
}

/// Splits input row `input[start..start + w]` into even columns
/// `e[j] = row[2j]` and shifted odd columns `o[j+1] = row[2j+1]`, one
/// `2*LANES` chunk at a time. The last, partial chunk is loaded whole when it
/// lies inside `input` and its lanes past the row are cleared with
/// `tail_masks`; otherwise it is copied into a zeroed buffer. Either way the
/// columns past the row receive zeros, so the scratch tails stay zero.
#[inline(always)]
fn deinterleave_row(
    input: &[f32],
    start: usize,
    w: usize,
    tail_masks: &[V; 2],
    e: &mut [f32],
    o: &mut [f32],
) {
    let full = w / (2 * LANES);
    for ch in 0..full {
        let i = start + ch * 2 * LANES;
        let (ev, ov) = deinterleave(load(input, i), load(input, i + LANES));
        store(e, ch * LANES, ev);
        store(o, ch * LANES + 1, ov);
    }
    let rem = w - full * 2 * LANES;
    if rem > 0 {
        let i = start + full * 2 * LANES;
        let (lo, hi) = if i + 2 * LANES <= input.len() {
            (load(input, i) & tail_masks[0], load(input, i + LANES) & tail_masks[1])
        } else {
            let mut buf = [0.0f32; 2 * LANES];
            buf[..rem].copy_from_slice(&input[i..i + rem]);
            (load(&buf, 0), load(&buf, LANES))
        };
        let (ev, ov) = deinterleave(lo, hi);
        store(e, full * LANES, ev);
        store(o, full * LANES + 1, ov);
    }
}

/// De-interleaves 2*LANES consecutive floats `[lo | hi]` into (even, odd) lanes.
#[inline(always)]
fn deinterleave(lo: V, hi: V) -> (V, V) {
    let (a, b) = (lo.to_array(), hi.to_array());
    let at = |i: usize| if i < LANES { a[i] } else { b[i - LANES] };
    (V::new(core::array::from_fn(|i| at(2 * i))), V::new(core::array::from_fn(|i| at(2 * i + 1))))
}
