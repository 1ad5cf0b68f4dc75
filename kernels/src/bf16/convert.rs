//! f32 <-> bf16 conversions: the scalar definitions, the vector slice
//! conversion, and the pair-interleaved activation panel the GEMM reads.
//!
//! The scalar rounding rules are in `scalar` (re-exported here).

pub use super::scalar::{bf16_to_f32, f32_to_bf16, round_to_bf16};
use super::simd::Simd;
use super::{Bf16Isa, Bf16Job, LANES, dispatch};

/// Rounds `src` to bf16 into `dst` with `isa`'s vector conversion
/// (`vcvtneps2bf16`), bit for bit the same as [`f32_to_bf16`] per element.
///
/// # Panics
/// If `dst.len() != src.len()`.
pub fn convert_to_bf16(isa: Bf16Isa, src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len(), "dst must be as long as src");
    struct Run<'a>(&'a [f32], &'a mut [u16]);
    impl Bf16Job for Run<'_> {
        type Out = ();
        #[inline(always)]
        fn run<S: Simd>(self) {
            let Run(src, dst) = self;
            let mut s = src.chunks_exact(LANES);
            let mut d = dst.chunks_exact_mut(LANES);
            for (s, d) in (&mut s).zip(&mut d) {
                // SAFETY: both chunks hold exactly 16 elements; `d` comes from
                // a unique borrow.
                unsafe { S::store_bf16(S::load_f32(s.as_ptr()), d.as_mut_ptr()) }
            }
            let (s, d) = (s.remainder(), d.into_remainder());
            if !s.is_empty() {
                let mut buf = [0.0f32; LANES];
                buf[..s.len()].copy_from_slice(s);
                let mut out = [0u16; LANES];
                // SAFETY: `buf` and `out` hold 16 elements each.
                unsafe { S::store_bf16(S::load_f32(buf.as_ptr()), out.as_mut_ptr()) }
                d.copy_from_slice(&out[..d.len()]);
            }
        }
    }
    dispatch(isa, Run(src, dst))
}

/// Words a pair-interleaved panel of `k` channels x `n` pixels with row
/// stride `ldp` occupies: `(ceil(k/2) - 1) * ldp + n` (0 if `k` or `n` is 0).
/// `None` on overflow.
pub fn panel_len(k: usize, n: usize, ldp: usize) -> Option<usize> {
    if k == 0 || n == 0 {
        return Some(0);
    }
    (k.div_ceil(2) - 1).checked_mul(ldp)?.checked_add(n)
}

/// Converts `k` f32 rows of `n` pixels (`b[kk * ldb + j]`, NCHW channels)
/// into the pair-interleaved bf16 panel the GEMM reads: word
/// `panel[p * ldp + j]` holds channel `2p`'s pixel `j` in bits 0..16 and
/// channel `2p + 1`'s in bits 16..32 (zero for an odd `k`'s last pair).
/// Writes exactly columns `0..n` of the `ceil(k/2)` panel rows.
///
/// This is the layout [`super::conv1x1_bf16_paired`] takes, so a layer can
/// produce it once and feed it to several GEMMs.
///
/// # Panics
/// If `ldp < n`, `b` is shorter than `(k - 1) * ldb + n`, or `panel` is
/// shorter than [`panel_len`]`(k, n, ldp)`, or the sizes overflow.
pub fn pack_panel(
    isa: Bf16Isa,
    b: &[f32],
    ldb: usize,
    k: usize,
    n: usize,
    panel: &mut [u32],
    ldp: usize,
) {
    assert!(ldp >= n, "panel row stride must cover n");
    assert!(panel_len(k, n, ldp).is_some_and(|len| panel.len() >= len), "panel too short");
    if k == 0 || n == 0 {
        return;
    }
    assert!(input_fits(b.len(), k, ldb, 0, n), "input too short");
    struct Run<'a>(PanelSrc<'a>, &'a mut [u32], usize);
    impl Bf16Job for Run<'_> {
        type Out = ();
        #[inline(always)]
        fn run<S: Simd>(self) {
            let n = self.0.cols;
            convert_rows::<S>(&self.0, self.1, self.2, n)
        }
    }
    dispatch(isa, Run(PanelSrc { b, ldb, k, col0: 0, cols: n }, panel, ldp))
}

/// Whether rows `0..k` of `b` (stride `ldb`) hold columns `col0..col0 + cols`.
pub(crate) fn input_fits(b_len: usize, k: usize, ldb: usize, col0: usize, cols: usize) -> bool {
    k == 0
        || (k - 1)
            .checked_mul(ldb)
            .and_then(|r| r.checked_add(col0))
            .and_then(|r| r.checked_add(cols))
            .is_some_and(|end| end <= b_len)
}

/// Columns `col0..col0 + cols` of `k` f32 rows `ldb` apart.
pub(crate) struct PanelSrc<'a> {
    pub b: &'a [f32],
    pub ldb: usize,
    pub k: usize,
    pub col0: usize,
    pub cols: usize,
}

/// Writes the pair panel of `src` into `panel` (row stride `ldp`), columns
/// `0..width` of each of the `ceil(k/2)` rows, where `width >= cols` and the
/// columns past `cols` become zero pairs (so a tile can read whole vectors
/// past the last pixel without garbage lanes).
///
/// # Panics
/// If `width < cols`, `ldp < width`, `panel` is shorter than
/// `(ceil(k/2) - 1) * ldp + width`, or `src` does not hold its columns.
#[inline(always)]
pub(crate) fn convert_rows<S: Simd>(
    src: &PanelSrc<'_>,
    panel: &mut [u32],
    ldp: usize,
    width: usize,
) {
    let &PanelSrc { b, ldb, k, col0, cols } = src;
    assert!(width >= cols && ldp >= width, "panel width");
    assert!(panel_len(k, width, ldp).is_some_and(|len| panel.len() >= len), "panel too short");
    assert!(input_fits(b.len(), k, ldb, col0, cols), "input too short");
    for p in 0..k.div_ceil(2) {
        let even = 2 * p * ldb + col0;
        let odd = (2 * p + 1 < k).then(|| &b[even + ldb..even + ldb + cols]);
        let dst = &mut panel[p * ldp..p * ldp + width];
        pair_run::<S>(&b[even..even + cols], odd, &mut dst[..cols]);
        dst[cols..].fill(0);
    }
}

/// Converts one run of pixels of two channels into pair words:
/// `dst[j] = bf16(even[j]) | bf16(odd[j]) << 16` (a zero high half without
/// `odd`), 16 pixels per `vcvtne2ps2bf16` + word permute, the last partial
/// vector through zero-filled buffers (no read or write past the slices).
///
/// # Panics
/// If `odd` or `dst` is not as long as `even`.
#[inline(always)]
pub(crate) fn pair_run<S: Simd>(even: &[f32], odd: Option<&[f32]>, dst: &mut [u32]) {
    let n = even.len();
    assert!(dst.len() == n && odd.is_none_or(|o| o.len() == n), "run lengths");
    let whole = n / LANES * LANES;
    let zero = S::zero();
    // LOOP: whole vectors of 16 pixels, read in place.
    for j in (0..whole).step_by(LANES) {
        // SAFETY: `j + 16 <= n` and all three slices hold `n` elements (entry
        // assert); `dst` is uniquely borrowed.
        unsafe {
            let e = S::load_f32(even.as_ptr().add(j));
            let o = match odd {
                Some(o) => S::load_f32(o.as_ptr().add(j)),
                None => zero,
            };
            S::store_pairs(S::pair(e, o), dst.as_mut_ptr().add(j));
        }
    }
    let r = n - whole;
    if r > 0 {
        let mut e = [0.0f32; LANES];
        let mut o = [0.0f32; LANES];
        e[..r].copy_from_slice(&even[whole..]);
        if let Some(odd) = odd {
            o[..r].copy_from_slice(&odd[whole..]);
        }
        let mut out = [0u32; LANES];
        // SAFETY: the three buffers hold 16 elements each.
        unsafe {
            let v = S::pair(S::load_f32(e.as_ptr()), S::load_f32(o.as_ptr()));
            S::store_pairs(v, out.as_mut_ptr());
        }
        dst[whole..].copy_from_slice(&out[..r]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nearest bf16 to a finite, normal `x` with ties to even, found by
    /// comparing distances in f64 (independent of the bit trick).
    fn nearest_even(x: f32) -> u16 {
        let t = (x.to_bits() >> 16) as u16; // truncation toward zero
        let lo = bf16_to_f32(t) as f64;
        let hi_bits = t + 1; // next bf16 away from zero (may be infinity)
        // Past the largest finite bf16 the next "value" is 2^128 with the
        // sign of x: rounding there means overflow to infinity.
        let hi = match bf16_to_f32(hi_bits) as f64 {
            h if h.is_infinite() => 2f64.powi(128).copysign(h),
            h => h,
        };
        let xd = x as f64;
        let (dl, dh) = ((xd - lo).abs(), (hi - xd).abs());
        if dl < dh || (dl == dh && t & 1 == 0) { t } else { hi_bits }
    }

    #[test]
    fn scalar_rounding_is_nearest_even_and_handles_specials() {
        let mut x = 1u32;
        for _ in 0..200_000 {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let f = f32::from_bits(x);
            if f.is_normal() {
                let want = nearest_even(f);
                assert_eq!(f32_to_bf16(f), want, "{f:e} ({x:#010x})");
            }
        }
        // Ties: 1 + 2^-8 is halfway between 1 and 1 + 2^-7 -> 1 (even);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6 -> 1 + 2^-6.
        assert_eq!(round_to_bf16(1.0 + 1.0 / 256.0), 1.0);
        assert_eq!(round_to_bf16(1.0 + 3.0 / 256.0), 1.0 + 1.0 / 64.0);
        assert_eq!(round_to_bf16(-(1.0 + 3.0 / 256.0)), -(1.0 + 1.0 / 64.0));
        // Overflow to infinity, infinities, signed zeros, denormals flushed.
        assert_eq!(round_to_bf16(f32::MAX), f32::INFINITY);
        assert_eq!(round_to_bf16(f32::NEG_INFINITY), f32::NEG_INFINITY);
        assert_eq!(f32_to_bf16(-0.0), 0x8000);
        assert_eq!(f32_to_bf16(f32::from_bits(0x007f_ffff)), 0);
        assert_eq!(f32_to_bf16(-f32::from_bits(1)), 0x8000);
        assert_eq!(f32_to_bf16(f32::MIN_POSITIVE), 0x0080);
        // NaN: quieted, sign and top payload kept (a signalling NaN whose
        // payload lies only in the low 16 bits stays NaN).
        assert_eq!(f32_to_bf16(f32::from_bits(0x7f80_0001)), 0x7fc0);
        assert_eq!(f32_to_bf16(f32::from_bits(0xffa0_0000)), 0xffe0);
        assert!(round_to_bf16(f32::NAN).is_nan());
        // bf16 -> f32 -> bf16 is the identity on every non-NaN, non-denormal.
        for h in 0..=u16::MAX {
            let f = bf16_to_f32(h);
            if !f.is_nan() && !f.is_subnormal() {
                assert_eq!(f32_to_bf16(f), h);
            }
        }
    }
}
