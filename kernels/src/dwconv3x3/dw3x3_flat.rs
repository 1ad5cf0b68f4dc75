//! `dw3x3_s{1,2}p1_flat<U*LANES>__<lanes>`: depthwise 3x3 over one padded,
//! phase-split plane in flat layout (for stride 2, and for stride-1 planes
//! too narrow to fill the lanes row by row).
//!
//! ```text
//! out[oy][ox] = A(bias + Σ_{ky,kx} w[ky][kx] · Q[phase(ky%s, kx%s)][q + (ky/s)*wq + kx/s])
//!               with q = oy*wq + ox, Q the zero-padded input split into s*s phases
//! ```
//! The plane is first laid out exactly as [`crate::conv3x3::prepare_input`]
//! does for one channel: the padding is real zeros, so the loop has no edge
//! cases and stride 2 needs no gathers (each tap is a contiguous load from one
//! phase). Output positions are the flat `oh x wq` grid: `U` vectors of `LANES`
//! consecutive positions per step, 9 loads and 9 FMAs each, the `U`
//! accumulators independent (they hide the FMA latency). The `wq - ow`
//! columns past each row are computed and dropped when the flat result is
//! copied to the output rows.
//!
//! Packed weights: `[bias, w00 .. w22]` per channel (see the module docs).
//!
//! Preconditions (asserted at entry): `prep` holds the prepared plane plus
//! `U * LANES` zeros of slack; `flat` holds `n` rounded up to `U * LANES`.

use crate::act::Act;
use crate::lanes::{LANES, V, load, store};

/// Vectors per step.
pub const U: usize = 4;

/// Computes the flat result of one prepared plane into `flat[..n]`.
///
/// # Panics
/// If `prep` or `flat` are shorter than the preconditions in the module docs.
#[inline(always)]
pub fn dw3x3_flat_plane<A: Act>(
    k: &[V; 10],
    prep: &[f32],
    offsets: &[usize; 9],
    n: usize,
    flat: &mut [f32],
) {
    let steps = n.div_ceil(U * LANES);
    let max_off = offsets.iter().copied().max().unwrap_or(0);
    assert!(steps * U * LANES + max_off <= prep.len(), "prepared plane too short");
    assert!(steps * U * LANES <= flat.len(), "flat output too short");
    for step in 0..steps {
        let q0 = step * U * LANES;
        let mut acc = [k[0]; U];
        for (t, &off) in offsets.iter().enumerate() {
            for (u, a) in acc.iter_mut().enumerate() {
                *a = k[1 + t].mul_add(load(prep, q0 + u * LANES + off), *a);
            }
        }
        for (u, a) in acc.iter().enumerate() {
            store(flat, q0 + u * LANES, A::apply(*a));
        }
    }
}

/// Copies rows `[oy*wq, oy*wq + ow)` of the flat result to `out[oy*ow..]`.
/// Short rows are stored as whole vectors that spill into the following rows
/// (which are written afterwards) while there is room in `out`.
#[inline(always)]
pub fn copy_flat_rows(flat: &[f32], wq: usize, oh: usize, ow: usize, out: &mut [f32]) {
    for oy in 0..oh {
        let (src, dst) = (oy * wq, oy * ow);
        if ow >= LANES {
            let mut i = 0;
            while i + LANES <= ow {
                store(out, dst + i, load(flat, src + i));
                i += LANES;
            }
            if i < ow {
                store(out, dst + ow - LANES, load(flat, src + ow - LANES));
            }
        } else if dst + LANES <= out.len() && src + LANES <= flat.len() {
            store(out, dst, load(flat, src));
        } else {
            out[dst..dst + ow].copy_from_slice(&flat[src..src + ow]);
        }
    }
}
