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
//! Stride 2 has one path, in place (module `dw3x3_s2`: two loads
//! and three lane permutes per input row and output vector, no copy).
//! Stride 1 has two, chosen per width by `uses_flat` from measurements:
//!
//! **Row bands** (stride 1, `w > LANES/2`; kernel `dw3x3_s1p1_band`):
//! vectorised along W, bands of `R` output rows per step, so each loaded input
//! row feeds every output row that uses it.
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
//! The input plane is read in place: horizontal padding is two lane masks,
//! vertical padding a compile-time choice of kernel. Planes whose vector loads
//! or spilling stores would leave the caller's slices (the first plane and the
//! last one or few) run the same kernels on a copy in the scratch buffer, and
//! only their valid outputs are copied back.
//!
//! **Flat** (stride 1 with `w <= LANES/2`; kernel `dw3x3_flat`): each plane
//! is copied below a zero row in scratch (`S1Layout`) so every tap is one
//! contiguous load at a constant offset from the flat output index
//! `q = oy*ow + ox`, then `U` vectors of consecutive flat outputs per step are
//! computed straight into the output (no padding columns, so a 7x7 plane is 4
//! vectors). The buffers are zeroed once per call; the next plane is copied
//! into a second buffer while the current one is computed. The last vector of
//! a plane spills into the next plane (written later) or, at the end of
//! `output`, goes through a stack tile.
//!
//! No path touches memory outside `input[..channels*h*w]` and
//! `output[..channels*oh*ow]`.
//!
//! NaN: a NaN input reaches exactly the outputs whose taps include it (padding
//! lanes are cleared with a bitwise AND, which clears NaN too), a non-finite
//! weight makes NaN of every output whose taps meet it in the padding (as
//! `w * 0` does in PyTorch), and ReLU keeps NaN (see [`crate::act`]).

#![allow(non_snake_case)]

mod dw3x3_flat;
mod dw3x3_pairs;
mod dw3x3_s1p1;
mod dw3x3_s2;

use dw3x3_flat::dw3x3_flat;
use dw3x3_s1p1::{Band, EDGE_LEFT, EDGE_RIGHT, dw3x3_s1p1_band};

use crate::act::{Act, Activation, with_act};
use crate::isa::{Isa, Job, MAX_LANES, Vector, dispatch};
use crate::lanes::Lanes;

/// Most output rows per stride-1 band for `V` (accumulators: that many
/// vectors, twice as many with split accumulators). 7 tiles 14, 28, 56 and
/// 112 rows exactly and leaves AVX-512 room for the split (2 * 7 + 15 of 32
/// registers). The portable `f32x8` has 8 registers' worth on SSE2, where 7
/// rows spill and 4 are faster; AVX2 is fastest with 7 (docs/experiments.md).
#[inline(always)]
fn r_max<V: Vector>() -> usize {
    s1_rows(V::REGISTERS)
}

/// Output rows per stride-1 band (see `r_max`) for an ISA with `registers`
/// vector registers: the `R` of the kernel's name `dw3x3_s1p1_<R>x<LANES>`.
pub const fn s1_rows(registers: usize) -> usize {
    if registers >= 16 { 7 } else { 4 }
}

/// Fewest rows of a stride-1 band when a plane needs more than one band
/// (`ceil(oh / ceil(oh / r_max))` for `oh > r_max`).
#[inline(always)]
fn min_multi_band<V: Vector>() -> usize {
    r_max::<V>() / 2 + 1
}

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
fn s1_in_region<V: Vector>(h: usize, w: usize) -> usize {
    1 + (h - 1) * w + w.max(V::LANES) + 1
}

/// Floats an edge plane's output needs: the plane plus the last row's spill.
#[inline]
fn out_region<V: Vector>(oh: usize, ow: usize) -> usize {
    (oh - 1) * ow + ow.max(V::LANES)
}

/// Floats of scratch one call of [`dw3x3_s1p1`] (`stride == 1`) or
/// [`dw3x3_s2p1`] (`stride == 2`) with `isa` needs for `h x w` input planes;
/// `None` if `h` or `w` is 0, `stride` is not 1 or 2, or the planes are too
/// large for the scratch's length to be computed.
pub fn scratch_len(isa: Isa, h: usize, w: usize, stride: usize) -> Option<usize> {
    struct Len(usize, usize, usize);
    impl Job for Len {
        type Out = Option<usize>;
        #[inline(always)]
        fn run<V: Vector>(self) -> Option<usize> {
            scratch_len_of::<V>(self.0, self.1, self.2)
        }
    }
    dispatch(isa, Len(h, w, stride))
}

fn scratch_len_of<V: Vector>(h: usize, w: usize, stride: usize) -> Option<usize> {
    if h == 0 || w == 0 || !(stride == 1 || stride == 2) {
        return None;
    }
    // Every length below is a few planes plus a few rows and vectors: with a
    // plane under 1/64 of the address space none of them can wrap.
    if h.checked_mul(w)? > isize::MAX as usize / 64 {
        return None;
    }
    let (oh, ow) = (out_dim(h, stride), out_dim(w, stride));
    match stride {
        1 => Some(
            (s1_in_region::<V>(h, w) + out_region::<V>(oh, ow)).max(flat_scratch_len::<V>(h, w, 1)),
        ),
        // The stride-2 kernel reads the input in place.
        _ => Some(0),
    }
}

/// Whether the flat kernel ([`dw3x3_flat`]) runs stride-1 planes of width
/// `w`: planes of at most half a vector. On wider planes the row kernel is
/// faster (docs/experiments.md): it shares each loaded input row among 3
/// output rows (3.75 loads per output vector), the flat one needs 9 + 2 mask
/// loads.
fn uses_flat<V: Vector>(w: usize) -> bool {
    w <= V::LANES / 2
}

/// Greatest common divisor.
#[inline]
fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Period, in vectors, of the lane masks of a flat plane with rows of `ow`.
#[inline]
fn mask_period<V: Vector>(ow: usize) -> usize {
    ow / gcd(ow, V::LANES)
}

/// Mask vectors in a table: one period plus `U - 1` wrapped copies, so a step
/// of `U` vectors never wraps inside the table.
#[inline]
fn mask_entries<V: Vector>(ow: usize) -> usize {
    mask_period::<V>(ow) + dw3x3_flat::U
}

/// Fills `mask_l` / `mask_r` (`mask_entries(ow) * LANES` floats each, `mask_r` may be
/// empty) with the lane masks of flat vectors `0..mask_entries(ow)`: lane `i`
/// of vector `v` sits at column `x = (v*LANES + i) % ow`; `mask_l` clears `x == 0`,
/// `mask_r` clears `x == ow - 1`.
fn fill_masks(ow: usize, mask_l: &mut [f32], mask_r: &mut [f32]) {
    let ones = f32::from_bits(u32::MAX);
    for (p, v) in mask_l.iter_mut().enumerate() {
        *v = if p % ow == 0 { 0.0 } else { ones };
    }
    for (p, v) in mask_r.iter_mut().enumerate() {
        *v = if p % ow == ow - 1 { 0.0 } else { ones };
    }
}

/// `n` rounded up to an odd multiple of 512 floats (half a 4 KiB page).
fn odd_half_pages(n: usize) -> usize {
    let halves = n.div_ceil(512);
    512 * (halves | 1)
}

/// Stride-1 prepared plane: `front` zeros (at least one row plus one), the
/// plane, then zeros for the bottom padding row and the last vector's reads.
#[derive(Clone, Copy)]
struct S1Layout {
    front: usize,
    len: usize,
}

impl S1Layout {
    fn new<V: Vector>(h: usize, w: usize) -> Self {
        let front = (w + 1).next_multiple_of(V::LANES);
        let nvec = (h * w).div_ceil(V::LANES);
        S1Layout { front, len: odd_half_pages(front + nvec * V::LANES + w + 1) }
    }
    /// Offset of tap `(ky, kx)` from the flat output position.
    fn offsets(&self, w: usize) -> [usize; 9] {
        core::array::from_fn(|t| self.front - w - 1 + (t / 3) * w + t % 3)
    }
}

/// Floats of scratch the stride-1 flat driver needs.
fn flat_scratch_len<V: Vector>(h: usize, w: usize, stride: usize) -> usize {
    debug_assert_eq!(stride, 1);
    2 * mask_entries::<V>(w) * V::LANES + 2 * S1Layout::new::<V>(h, w).len
}

/// Runs the flat kernel over one prepared plane: vectors `0..nvec` of flat
/// outputs go to `output[o0 + v*LANES ..]` while they fit in `output` (the
/// last one spills into the next plane, which is written later); a vector
/// that would pass the end of `output` goes through a stack tile.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn flat_plane<V: Vector, const MASK_R: bool, A: Act>(
    w9: &[V; 10],
    src: &[f32],
    offs: &[usize; 9],
    mask_l: &[f32],
    mask_r: &[f32],
    period: usize,
    nvec: usize,
    output: &mut [f32],
    o0: usize,
) {
    const U: usize = dw3x3_flat::U;
    let mut v = 0;
    let mut m = 0;
    // LOOP 2: steps of U vectors.
    while v + U <= nvec && o0 + (v + U) * V::LANES <= output.len() {
        let q = v * V::LANES;
        dw3x3_flat::<V, U, MASK_R, A>(w9, src, offs, q, mask_l, mask_r, m, output, o0 + q);
        v += U;
        m = (m + U) % period;
    }
    // LOOP 3: the remaining vectors, one at a time.
    while v < nvec {
        let q = v * V::LANES;
        if o0 + q + V::LANES <= output.len() {
            dw3x3_flat::<V, 1, MASK_R, A>(w9, src, offs, q, mask_l, mask_r, m, output, o0 + q);
        } else {
            let mut tile = [0.0f32; MAX_LANES];
            dw3x3_flat::<V, 1, MASK_R, A>(w9, src, offs, q, mask_l, mask_r, m, &mut tile, 0);
            let n = output.len() - (o0 + q);
            output[o0 + q..].copy_from_slice(&tile[..n]);
        }
        v += 1;
        m = (m + 1) % period;
    }
}

/// The stride-1 flat driver: each plane is copied below a zero row into one
/// of two buffers (the next plane is copied while the current one is
/// computed, so the kernel's loads never wait on the copy's stores).
#[inline(always)]
fn flat_s1<V: Vector, A: Act>(args: Dw3x3Args<'_>, scratch: &mut [f32]) {
    let Dw3x3Args { channels, h, w, packed, input, output } = args;
    let hw = h * w;
    let input = &input[..channels * hw];
    let output = &mut output[..channels * hw];
    let lay = S1Layout::new::<V>(h, w);
    let me = mask_entries::<V>(w) * V::LANES;
    let (masks, rest) = scratch.split_at_mut(2 * me);
    let (mask_l, mask_r) = masks.split_at_mut(me);
    fill_masks(w, mask_l, mask_r);
    let bufs = &mut rest[..2 * lay.len];
    bufs.fill(0.0);
    let (b0, b1) = bufs.split_at_mut(lay.len);
    let mut bufs = [b0, b1];
    let offs = lay.offsets(w);
    let nvec = hw.div_ceil(V::LANES);
    let period = mask_period::<V>(w);
    let copy = |c: usize, buf: &mut [f32]| {
        buf[lay.front..lay.front + hw].copy_from_slice(&input[c * hw..(c + 1) * hw]);
    };
    if channels > 0 {
        copy(0, &mut *bufs[0]);
    }
    // LOOP 1: channels, in order (spilling stores rely on it).
    for c in 0..channels {
        let [b0, b1] = &mut bufs;
        let (cur, next) = if c % 2 == 0 { (b0, b1) } else { (b1, b0) };
        if c + 1 < channels {
            copy(c + 1, next);
        }
        let w9 = splat_weights::<V>(&packed[c * PACKED_PER_CHANNEL..]);
        flat_plane::<V, true, A>(&w9, cur, &offs, mask_l, mask_r, period, nvec, output, c * hw);
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
fn check_args<V: Vector>(args: &Dw3x3Args<'_>, stride: usize, scratch: &[f32]) -> (usize, usize) {
    let Dw3x3Args { channels, h, w, .. } = *args;
    assert!(h >= 1 && w >= 1, "planes must be at least 1x1");
    let (oh, ow) = (out_dim(h, stride), out_dim(w, stride));
    let n_in =
        channels.checked_mul(h).and_then(|x| x.checked_mul(w)).expect("input size overflows");
    let n_out = channels * oh * ow; // <= n_in, which did not overflow
    let packed_len = channels.checked_mul(PACKED_PER_CHANNEL).expect("channels overflow");
    assert!(args.packed.len() >= packed_len, "packed weights too short");
    assert!(args.input.len() >= n_in, "input too short");
    assert!(args.output.len() >= n_out, "output too short");
    let need = scratch_len_of::<V>(h, w, stride).expect("planes too large");
    assert!(scratch.len() >= need, "scratch too short");
    (oh, ow)
}

/// Splats one channel's packed block into registers.
#[inline(always)]
fn splat_weights<V: Vector>(blk: &[f32]) -> [V; 10] {
    let mut w9 = [V::zero(); 10];
    for (v, &x) in w9.iter_mut().zip(blk[..PACKED_PER_CHANNEL].iter()) {
        *v = V::splat(x);
    }
    w9
}

/// The first output column of column vector `j` of a row of `ow` outputs.
#[inline(always)]
fn col_start<V: Vector>(j: usize, ow: usize) -> usize {
    (j * V::LANES).min(ow.saturating_sub(V::LANES))
}

/// Depthwise 3x3, stride 1, padding 1, with `isa`'s kernels
/// (`dw3x3_s1p1_7x<LANES>__<isa>`, `_4x8__portable`): computes `output[..channels*h*w]` from
/// `input[..channels*h*w]` (see the module docs for the formula).
///
/// Writes exactly `output[..channels*h*w]` and reads only
/// `input[..channels*h*w]`, `packed[..channels*PACKED_PER_CHANNEL]` and
/// `scratch[..scratch_len(isa, h, w, 1)]`. Does not allocate.
///
/// # Panics
/// If `h == 0` or `w == 0`, if `packed`, `input` or `output` is shorter than
/// the shapes imply, or if `scratch.len() < scratch_len(isa, h, w, 1)`.
pub fn dw3x3_s1p1(isa: Isa, act: Activation, args: Dw3x3Args<'_>, scratch: &mut [f32]) {
    run_dw(isa, act, 1, args, scratch)
}

/// Depthwise 3x3, stride 2, padding 1, with `isa`'s kernel
/// (`dw3x3_s2p1_1x<LANES>__<isa>`): computes `output[..channels*oh*ow]`,
/// `oh = (h+1)/2`, `ow = (w+1)/2`, from `input[..channels*h*w]` (see the
/// module docs for the formula).
///
/// Writes exactly `output[..channels*oh*ow]` and reads only
/// `input[..channels*h*w]`, `packed[..channels*PACKED_PER_CHANNEL]` and
/// `scratch[..scratch_len(isa, h, w, 2)]`. Does not allocate.
///
/// # Panics
/// If `h == 0` or `w == 0`, if `packed`, `input` or `output` is shorter than
/// the shapes imply, or if `scratch.len() < scratch_len(isa, h, w, 2)`.
pub fn dw3x3_s2p1(isa: Isa, act: Activation, args: Dw3x3Args<'_>, scratch: &mut [f32]) {
    run_dw(isa, act, 2, args, scratch)
}

fn run_dw(isa: Isa, act: Activation, stride: usize, args: Dw3x3Args<'_>, scratch: &mut [f32]) {
    // One job (so one compiled function) per stride, not a runtime branch
    // inside one: each driver inlines many kernel variants.
    struct S1<'a, 'b, A>(Dw3x3Args<'a>, &'b mut [f32], core::marker::PhantomData<A>);
    impl<A: Act> Job for S1<'_, '_, A> {
        type Out = ();
        #[inline(always)]
        fn run<V: Vector>(self) {
            s1_body::<V, A>(self.0, self.1)
        }
    }
    struct S2<'a, 'b, A>(Dw3x3Args<'a>, &'b mut [f32], core::marker::PhantomData<A>);
    impl<A: Act> Job for S2<'_, '_, A> {
        type Out = ();
        #[inline(always)]
        fn run<V: Vector>(self) {
            check_args::<V>(&self.0, 2, self.1);
            if dw3x3_pairs::chosen::<V>(self.0.w, 2) {
                return dw3x3_pairs::dw3x3_pairs::<V, A>(2, self.0);
            }
            dw3x3_s2::dw3x3_s2::<V, A>(self.0)
        }
    }
    fn go<A: Act>(isa: Isa, stride: usize, args: Dw3x3Args<'_>, scratch: &mut [f32]) {
        use core::marker::PhantomData;
        if stride == 1 {
            dispatch(isa, S1::<A>(args, scratch, PhantomData))
        } else {
            dispatch(isa, S2::<A>(args, scratch, PhantomData))
        }
    }
    let Dw3x3Args { channels, h, w, packed, input, output } = args;
    let args = Dw3x3Args { channels, h, w, packed, input, output: &mut *output };
    with_act!(act, go::<_>(isa, stride, args, scratch));
    nan_through_padding(channels, [h, w], stride, packed, output);
}

/// Sets to NaN every output whose taps include a padding zero times a
/// non-finite weight (`NaN * 0` and `inf * 0` are NaN in PyTorch, and in the
/// kernels that multiply a padded copy; the in-place kernels skip padding
/// taps instead). Free for finite weights: nine checks per channel. The
/// inputs were checked by the kernel that ran first.
fn nan_through_padding(
    channels: usize,
    [h, w]: [usize; 2],
    stride: usize,
    packed: &[f32],
    output: &mut [f32],
) {
    // One branch-free pass over the packed floats (it vectorises) decides
    // whether any channel needs a look: a per-channel early-exit check cost
    // a tenth of a small layer's time.
    const EXP: u32 = 0x7f80_0000;
    let packed = &packed[..channels * PACKED_PER_CHANNEL];
    if !packed.iter().fold(false, |any, v| any | (v.to_bits() & EXP == EXP)) {
        return;
    }
    let (oh, ow) = (out_dim(h, stride), out_dim(w, stride));
    // Padded iff the input index `o * stride + t - 1` leaves `0..n`.
    let padded = |o: usize, t: usize, n: usize| (o * stride + t).wrapping_sub(1) >= n;
    for (blk, plane) in
        packed.chunks_exact(PACKED_PER_CHANNEL).zip(output.chunks_exact_mut(oh * ow)).take(channels)
    {
        let taps = &blk[1..];
        if taps.iter().all(|v| v.is_finite()) {
            continue;
        }
        for (t, _) in taps.iter().enumerate().filter(|(_, v)| !v.is_finite()) {
            let (ky, kx) = (t / 3, t % 3);
            for (oy, row) in plane.chunks_exact_mut(ow).enumerate() {
                if padded(oy, ky, h) {
                    row.fill(f32::NAN);
                    continue;
                }
                for (ox, v) in row.iter_mut().enumerate() {
                    if padded(ox, kx, w) {
                        *v = f32::NAN;
                    }
                }
            }
        }
    }
}

#[inline(always)]
fn s1_body<V: Vector, A: Act>(args: Dw3x3Args<'_>, scratch: &mut [f32]) {
    let (oh, ow) = check_args::<V>(&args, 1, scratch);
    if dw3x3_pairs::chosen::<V>(args.w, 1) {
        return dw3x3_pairs::dw3x3_pairs::<V, A>(1, args);
    }
    if uses_flat::<V>(args.w) {
        return flat_s1::<V, A>(args, scratch);
    }
    let Dw3x3Args { channels, h, w, packed, input, output } = args;
    let hw = h * w;
    let input = &input[..channels * hw];
    let output = &mut output[..channels * hw];

    // Lane masks, made once: `ml0` clears lane 0 (the left tap of column 0),
    // `mr_last` the right tap of column w-1 in the row's last vector (lane
    // w-1 when w < LANES, lane LANES-1 when it is moved to end at w).
    let ones = f32::from_bits(u32::MAX);
    let last = w.min(V::LANES) - 1;
    let masks: [[f32; MAX_LANES]; 2] = [
        core::array::from_fn(|j| if j == 0 { 0.0 } else { ones }),
        core::array::from_fn(|j| if j == last { 0.0 } else { ones }),
    ];
    let masks = (V::load(&masks[0], 0), V::load(&masks[1], 0));
    let (s_in, s_out) = scratch.split_at_mut(s1_in_region::<V>(h, w));
    let s_out = &mut s_out[..out_region::<V>(oh, ow)];
    // LOOP 1: channels, in order (spilling stores rely on it).
    for c in 0..channels {
        let blk = &packed[c * PACKED_PER_CHANNEL..(c + 1) * PACKED_PER_CHANNEL];
        let fast = c >= 1
            && c * hw + s1_in_region::<V>(h, w) - 1 <= input.len()
            && c * hw + out_region::<V>(oh, ow) <= output.len();
        if !fast {
            // Edge plane: a copy with one zero before it and zeros after it.
            s_in[0] = 0.0;
            s_in[1..1 + hw].copy_from_slice(&input[c * hw..(c + 1) * hw]);
            s_in[1 + hw..].fill(0.0);
        }
        {
            // One call site: the band kernels' many variants are inlined.
            let (src, io, dst, oo): (&[f32], usize, &mut [f32], usize) = if fast {
                (input, c * hw, &mut *output, c * hw)
            } else {
                (&*s_in, 1, &mut *s_out, 0)
            };
            let w9 = splat_weights::<V>(blk);
            s1_plane::<V, A>(&w9, [h, w], masks, src, io, dst, oo);
        }
        if !fast {
            output[c * hw..(c + 1) * hw].copy_from_slice(&s_out[..hw]);
        }
    }
}

/// One stride-1 plane through the band kernel (a function, not a closure: a
/// closure would be compiled without the ISA's target features).
#[inline(always)]
fn s1_plane<V: Vector, A: Act>(
    w9: &[V; 10],
    [h, w]: [usize; 2],
    (ml0, mr_last): (V, V),
    src: &[f32],
    in_off: usize,
    dst: &mut [f32],
    out_off: usize,
) {
    let (oh, ow) = (h, w);
    let ncol = w.div_ceil(V::LANES);
    let (nband, rows) = bands(oh, r_max::<V>());
    // LOOP 2: bands of `rows` output rows (the last one moved up to end at oh).
    for b in 0..nband {
        let oy0 = (b * rows).min(oh - rows);
        let top = oy0 == 0;
        let bot = oy0 + rows == oh;
        // LOOP 3: column vectors (the last one moved left to end at ow).
        for j in 0..ncol {
            let ox0 = col_start::<V>(j, ow);
            let edge =
                if ox0 == 0 { EDGE_LEFT } else { 0 } | if j + 1 == ncol { EDGE_RIGHT } else { 0 };
            let io = in_off + oy0 * w + ox0;
            let oo = out_off + oy0 * ow + ox0;
            let band = Band {
                w9,
                input: src,
                in_off: io,
                w,
                mask_l: ml0,
                mask_r: mr_last,
                out_off: oo,
                ow,
            };
            s1_band::<V, A>(rows, top, bot, edge, &band, dst);
        }
    }
}

/// Runs the stride-1 band kernel instantiated for `rows` rows and the given
/// vertical padding.
#[inline(always)]
fn s1_band<V: Vector, A: Act>(
    rows: usize,
    top: bool,
    bot: bool,
    edge: u8,
    band: &Band<'_, V>,
    output: &mut [f32],
) {
    macro_rules! go {
        ($r:literal) => {
            s1_band_r::<V, $r, A>(top, bot, edge, band, output)
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
        _ => unreachable!("band of {rows} rows"),
    }
}

/// [`s1_band`] for a fixed `R`. Bands of fewer than [`min_multi_band`] rows
/// only occur as the single band of a short plane (`top && bot`), so the other
/// padding variants are not instantiated for them.
#[inline(always)]
fn s1_band_r<V: Vector, const R: usize, A: Act>(
    top: bool,
    bot: bool,
    edge: u8,
    band: &Band<'_, V>,
    output: &mut [f32],
) {
    macro_rules! go {
        ($t:literal, $b:literal) => {
            match edge {
                0 => dw3x3_s1p1_band::<V, R, $t, $b, 0, A>(band, output),
                EDGE_LEFT => dw3x3_s1p1_band::<V, R, $t, $b, EDGE_LEFT, A>(band, output),
                EDGE_RIGHT => dw3x3_s1p1_band::<V, R, $t, $b, EDGE_RIGHT, A>(band, output),
                _ => dw3x3_s1p1_band::<V, R, $t, $b, 3, A>(band, output),
            }
        };
    }
    if R < min_multi_band::<V>() {
        assert!(top && bot, "short band inside a plane");
        return go!(true, true);
    }
    match (top, bot) {
        (false, false) => go!(false, false),
        (true, false) => go!(true, false),
        (false, true) => go!(false, true),
        (true, true) => go!(true, true),
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
