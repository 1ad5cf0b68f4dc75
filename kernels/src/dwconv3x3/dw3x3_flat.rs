//! `dw3x3_s{1,2}p1_<N>x<LANES>__<lanes>`: `N` vectors of `LANES` consecutive
//! outputs of one depthwise 3x3 plane, in the plane's own flat (row-major,
//! row stride `ow`) order, read from a prepared copy of the input.
//!
//! ```text
//! out[q] = A(bias + c[q] + (l[q] & mask_l[q]) + (r[q] & mask_r[q]))      q = oy*ow + ox
//!   l[q] = Σ_ky w[ky][0] · src[q + offs[3ky]]        (kx = 0 taps)
//!   c[q] = Σ_ky w[ky][1] · src[q + offs[3ky + 1]]    (kx = 1 taps)
//!   r[q] = Σ_ky w[ky][2] · src[q + offs[3ky + 2]]    (kx = 2 taps)
//! ```
//! The driver prepares `src` so that every tap is one contiguous load at a
//! constant offset `offs[t]` from `q`, with real zeros for the vertical
//! padding (and, at stride 2, for the right padding). Only the horizontal
//! padding cannot be laid out that way without wasting lanes on padding
//! columns: the `kx = 0` tap of column 0 (and at stride 1 the `kx = 2` tap of
//! column `w-1`) reads the neighbouring row. Those taps are summed in their
//! own accumulators `l` / `r` and cleared once per vector with the lane masks
//! `mask_l` / `mask_r` (all-ones or zero per lane). Because the whole per-lane
//! contribution of the column is cleared, a NaN in the neighbouring row never
//! leaks (a bitwise AND clears NaN too), and the FMA pipes see the same 9
//! multiply-adds per vector as an unmasked kernel (7 FMAs + 2 multiplies),
//! plus 2 adds and 1-2 ANDs on the other FP pipes.
//!
//! Accumulator map (`N` = 4 vectors of `LANES` flat outputs, 12 chains):
//! ```text
//!            q0        q0+L      q0+2L     q0+3L
//!   c[u]    bias+kx1  bias+kx1  bias+kx1  bias+kx1
//!   l[u]    kx0       kx0       kx0       kx0
//!   r[u]    kx2       kx2       kx2       kx2
//! ```
//! The masks repeat with period `P = w / gcd(w, LANES)` vectors, so the
//! driver passes a table of `P + N - 1` (or more) mask vectors and the index
//! `m` of the first vector's mask.
//!
//! Packed weights per channel: `[bias, w00, w01, w02, w10, .., w22]`, splatted
//! by the driver into `w9: [V; 10]`.
//!
//! Preconditions (asserted once at entry): `q0 + N*LANES + max(offs) <= src.len()`,
//! `(m + N) * LANES <= mask_l.len()` (and `mask_r.len()` when `MASK_R`),
//! `o0 + N*LANES <= out.len()`.

use crate::act::Act;
use crate::isa::Vector;
use crate::lanes::Lanes;

/// Vectors per step of the main loop: 4 keeps 12 accumulator chains in
/// flight (enough for the FMA latency) and leaves registers for the 10
/// weights (chosen by benchmark: docs/experiments.md).
pub const U: usize = 4;

/// Computes `N` vectors of flat outputs `out[o0 + u*LANES ..]` from the
/// positions `q0 + u*LANES` of the prepared source; see the module docs.
///
/// # Panics
/// If any of the preconditions in the module docs does not hold.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn dw3x3_flat<V: Vector, const N: usize, const MASK_R: bool, A: Act>(
    w9: &[V; 10],
    src: &[f32],
    offs: &[usize; 9],
    q0: usize,
    mask_l: &[f32],
    mask_r: &[f32],
    m: usize,
    out: &mut [f32],
    o0: usize,
) {
    let max_off = offs.iter().copied().fold(0, usize::max);
    assert!(q0 + N * V::LANES + max_off <= src.len(), "flat kernel reads past the source");
    assert!((m + N) * V::LANES <= mask_l.len(), "left mask table too short");
    assert!(!MASK_R || (m + N) * V::LANES <= mask_r.len(), "right mask table too short");
    assert!(o0 + N * V::LANES <= out.len(), "flat kernel writes past the output");

    let mut c = [w9[0]; N];
    let mut l = [V::zero(); N];
    let mut r = [V::zero(); N];
    // Tap-major order: the N independent chains of each accumulator kind
    // are interleaved, which hides the FMA latency.
    for ky in 0..3 {
        for u in 0..N {
            let q = q0 + u * V::LANES;
            // SAFETY: q + offs[t] + V::LANES <= q0 + N*V::LANES + max_off <= src.len()
            // by the entry assert (u < N).
            let (a, b, d) = unsafe {
                (
                    V::load_unchecked(src, q + offs[3 * ky]),
                    V::load_unchecked(src, q + offs[3 * ky + 1]),
                    V::load_unchecked(src, q + offs[3 * ky + 2]),
                )
            };
            if ky == 0 {
                l[u] = a.mul(w9[1]);
                r[u] = d.mul(w9[3]);
            } else {
                l[u] = a.mul_add(w9[1 + 3 * ky], l[u]);
                r[u] = d.mul_add(w9[3 + 3 * ky], r[u]);
            }
            c[u] = b.mul_add(w9[2 + 3 * ky], c[u]);
        }
    }
    for u in 0..N {
        // SAFETY: (m + u + 1) * V::LANES <= (m + N) * V::LANES <= mask_l.len() (and
        // mask_r.len() when MASK_R) by the entry asserts.
        let (vl, vr) = unsafe {
            (
                V::load_unchecked(mask_l, (m + u) * V::LANES),
                if MASK_R { V::load_unchecked(mask_r, (m + u) * V::LANES) } else { V::zero() },
            )
        };
        let rr = if MASK_R { r[u].and(vr) } else { r[u] };
        let v = A::apply(c[u].add(l[u].and(vl)).add(rr));
        // SAFETY: o0 + u*V::LANES + V::LANES <= o0 + N*V::LANES <= out.len() by the
        // entry assert.
        unsafe { v.store_unchecked(out, o0 + u * V::LANES) };
    }
}
