//! The bf16 vector abstraction: what the kernel bodies need, as associated
//! functions of a marker type, implemented by the AVX512_BF16 instructions
//! ([`super::x86`]) and by [`Emu`], a software model of the same
//! instructions on 16-lane arrays.
//!
//! Every method is `#[inline(always)]` in every implementation, so a generic
//! body inlined into the `#[target_feature]` entry point (`x86::run`)
//! compiles to that ISA's instructions. Only [`super::dispatch`] picks the
//! implementation.

use super::scalar::f32_to_bf16;

/// Sixteen f32 lanes (`F`) and sixteen dwords of bf16 pairs (`P`), and the
/// operations on them.
pub(crate) trait Simd: Copy + 'static {
    /// Sixteen f32 lanes.
    type F: Copy;
    /// Sixteen 32-bit lanes, each a pair of bf16: element `2i` in bits 0..16,
    /// element `2i + 1` in bits 16..32.
    type P: Copy;

    /// All lanes `x`.
    fn splat(x: f32) -> Self::F;
    /// All lanes zero.
    fn zero() -> Self::F {
        Self::splat(0.0)
    }
    /// Reads 16 floats from `p` (any alignment).
    ///
    /// # Safety
    /// `p .. p + 16` must be readable.
    unsafe fn load_f32(p: *const f32) -> Self::F;
    /// Writes 16 floats to `p` (any alignment).
    ///
    /// # Safety
    /// `p .. p + 16` must be writable.
    unsafe fn store_f32(v: Self::F, p: *mut f32);
    /// ReLU with PyTorch semantics: `x < 0 ? +0 : x` per lane (NaN and `-0.0`
    /// stay), as `crate::act::relu`.
    fn relu(v: Self::F) -> Self::F;
    /// Reads 16 pair words from `p` (any alignment).
    ///
    /// # Safety
    /// `p .. p + 16` must be readable.
    unsafe fn load_pairs(p: *const u32) -> Self::P;
    /// Writes 16 pair words to `p` (any alignment).
    ///
    /// # Safety
    /// `p .. p + 16` must be writable.
    unsafe fn store_pairs(v: Self::P, p: *mut u32);
    /// All lanes the pair word `x`.
    fn splat_pair(x: u32) -> Self::P;
    /// `vdpbf16ps`: per lane, `acc + a.hi*b.hi + a.lo*b.lo` (two roundings,
    /// denormals flushed, round to nearest even).
    fn dot(acc: Self::F, a: Self::P, b: Self::P) -> Self::F;
    /// Rounds two f32 vectors to bf16 and interleaves them: lane `i` of the
    /// result holds `even[i]` in its low half and `odd[i]` in its high half
    /// (`vcvtne2ps2bf16` then one word permute).
    fn pair(even: Self::F, odd: Self::F) -> Self::P;
    /// Rounds 16 floats to bf16 and writes them to `p` (`vcvtneps2bf16`).
    ///
    /// # Safety
    /// `p .. p + 16` must be writable.
    unsafe fn store_bf16(v: Self::F, p: *mut u16);

    /// Eight f32 lanes (a 256-bit register), for the GEMV column tail, which
    /// vectorises over the 8 output rows of a packed block.
    type F8: Copy;
    /// Eight pair words.
    type P8: Copy;
    /// Reads 8 floats from `p` (any alignment).
    ///
    /// # Safety
    /// `p .. p + 8` must be readable.
    unsafe fn load_f32x8(p: *const f32) -> Self::F8;
    /// All 8 lanes zero.
    fn zero8() -> Self::F8;
    /// `a + b` per lane (IEEE, MXCSR's rounding: nearest even by default).
    fn add8(a: Self::F8, b: Self::F8) -> Self::F8;
    /// The 8 lanes.
    fn to_array8(v: Self::F8) -> [f32; 8];
    /// Reads 8 pair words from `p` (any alignment).
    ///
    /// # Safety
    /// `p .. p + 8` must be readable.
    unsafe fn load_pairs8(p: *const u32) -> Self::P8;
    /// All 8 lanes the pair word `x`.
    fn splat_pair8(x: u32) -> Self::P8;
    /// [`Simd::dot`] on 8 lanes (`vdpbf16ps ymm`).
    fn dot8(acc: Self::F8, a: Self::P8, b: Self::P8) -> Self::F8;
}

/// The software model: the kernels' instruction semantics on arrays, on any
/// CPU. Conversions are [`f32_to_bf16`]; the dot product follows Intel's
/// definition of `vdpbf16ps` (the odd elements' product first, each step a
/// fused multiply-add with denormal inputs read as zero and denormal results
/// flushed to zero).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Emu;

/// `x`, or a zero of its sign if `x` is denormal (DAZ / FTZ).
#[cfg(test)]
#[inline(always)]
pub(crate) fn flush(x: f32) -> f32 {
    if x.is_subnormal() { f32::from_bits(x.to_bits() & 0x8000_0000) } else { x }
}

/// One lane of `vdpbf16ps`, as Intel defines it: the definition the fast
/// [`dot_lanes`] is tested against.
#[cfg(test)]
#[inline(always)]
pub(crate) fn dot_lane(acc: f32, a: u32, b: u32) -> f32 {
    use super::scalar::bf16_to_f32;
    let half = |x: u32, hi: bool| flush(bf16_to_f32(if hi { (x >> 16) as u16 } else { x as u16 }));
    let acc = flush(half(a, true).mul_add(half(b, true), flush(acc)));
    flush(half(a, false).mul_add(half(b, false), acc))
}

/// `dot_lane` on `N` lanes at once, bit for bit, but fast: a product of
/// two bf16 values has at most 16 significant bits, so in f32 it is exact
/// unless it overflows or underflows; when every lane's product is exact
/// (normal, or an operand is zero, infinite or NaN), `p + acc` rounds once,
/// like the fused multiply-add, and the lanes compute as plain vector
/// arithmetic; otherwise each lane takes the fused `mul_add` (a libm call in
/// a baseline build, about 20x slower).
#[inline(always)]
pub(crate) fn dot_lanes<const N: usize>(acc: [f32; N], a: [u32; N], b: [u32; N]) -> [f32; N] {
    let mut ah = [0.0f32; N];
    let mut bh = [0.0f32; N];
    let mut al = [0.0f32; N];
    let mut bl = [0.0f32; N];
    let mut c = [0.0f32; N];
    for i in 0..N {
        ah[i] = flush_bits(a[i] & 0xffff_0000);
        bh[i] = flush_bits(b[i] & 0xffff_0000);
        al[i] = flush_bits(a[i] << 16);
        bl[i] = flush_bits(b[i] << 16);
        c[i] = flush_bits(acc[i].to_bits());
    }
    let c = fma_lanes(ah, bh, c);
    fma_lanes(al, bl, c)
}

/// `flush` on bits, branch-free (so loops of it vectorise).
#[inline(always)]
fn flush_bits(x: u32) -> f32 {
    let denormal_or_zero = x & 0x7f80_0000 == 0;
    f32::from_bits(if denormal_or_zero { x & 0x8000_0000 } else { x })
}

/// `flush(fma(a, b, c))` per lane, for bf16-valued `a` and `b` (see
/// [`dot_lanes`]).
#[inline(always)]
fn fma_lanes<const N: usize>(a: [f32; N], b: [f32; N], c: [f32; N]) -> [f32; N] {
    let mut p = [0.0f32; N];
    let mut inexact = false;
    for i in 0..N {
        p[i] = a[i] * b[i];
        // Exact: a normal product, or a zero or non-finite operand (whose
        // product is exactly ±0, ±inf or NaN). Not: overflow or underflow.
        let exp = |x: f32| x.to_bits() & 0x7f80_0000;
        let normal = exp(p[i]) != 0 && exp(p[i]) != 0x7f80_0000;
        let special = exp(a[i]) == 0
            || exp(b[i]) == 0
            || exp(a[i]) == 0x7f80_0000
            || exp(b[i]) == 0x7f80_0000;
        inexact |= !(normal | special);
    }
    let mut out = [0.0f32; N];
    if !inexact {
        for i in 0..N {
            out[i] = flush_bits((p[i] + c[i]).to_bits());
        }
    } else {
        for i in 0..N {
            out[i] = flush_bits(a[i].mul_add(b[i], c[i]).to_bits());
        }
    }
    out
}

/// One lane of the pair conversion.
#[inline(always)]
pub(crate) fn pair_lane(even: f32, odd: f32) -> u32 {
    u32::from(f32_to_bf16(even)) | (u32::from(f32_to_bf16(odd)) << 16)
}

impl Simd for Emu {
    type F = [f32; 16];
    type P = [u32; 16];

    #[inline(always)]
    fn splat(x: f32) -> [f32; 16] {
        [x; 16]
    }
    #[inline(always)]
    unsafe fn load_f32(p: *const f32) -> [f32; 16] {
        // SAFETY: the caller guarantees 16 readable floats at `p`;
        // `read_unaligned` has no alignment requirement.
        unsafe { p.cast::<[f32; 16]>().read_unaligned() }
    }
    #[inline(always)]
    unsafe fn store_f32(v: [f32; 16], p: *mut f32) {
        // SAFETY: the caller guarantees 16 writable floats at `p`.
        unsafe { p.cast::<[f32; 16]>().write_unaligned(v) }
    }
    #[inline(always)]
    fn relu(v: [f32; 16]) -> [f32; 16] {
        v.map(crate::act::relu)
    }
    #[inline(always)]
    unsafe fn load_pairs(p: *const u32) -> [u32; 16] {
        // SAFETY: the caller guarantees 16 readable words at `p`.
        unsafe { p.cast::<[u32; 16]>().read_unaligned() }
    }
    #[inline(always)]
    unsafe fn store_pairs(v: [u32; 16], p: *mut u32) {
        // SAFETY: the caller guarantees 16 writable words at `p`.
        unsafe { p.cast::<[u32; 16]>().write_unaligned(v) }
    }
    #[inline(always)]
    fn splat_pair(x: u32) -> [u32; 16] {
        [x; 16]
    }
    #[inline(always)]
    fn dot(acc: [f32; 16], a: [u32; 16], b: [u32; 16]) -> [f32; 16] {
        dot_lanes(acc, a, b)
    }
    #[inline(always)]
    fn pair(even: [f32; 16], odd: [f32; 16]) -> [u32; 16] {
        core::array::from_fn(|i| pair_lane(even[i], odd[i]))
    }
    #[inline(always)]
    unsafe fn store_bf16(v: [f32; 16], p: *mut u16) {
        // SAFETY: the caller guarantees 16 writable halves at `p`.
        unsafe { p.cast::<[u16; 16]>().write_unaligned(v.map(f32_to_bf16)) }
    }

    type F8 = [f32; 8];
    type P8 = [u32; 8];

    #[inline(always)]
    unsafe fn load_f32x8(p: *const f32) -> [f32; 8] {
        // SAFETY: the caller guarantees 8 readable floats at `p`.
        unsafe { p.cast::<[f32; 8]>().read_unaligned() }
    }
    #[inline(always)]
    fn zero8() -> [f32; 8] {
        [0.0; 8]
    }
    #[inline(always)]
    fn add8(a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
        core::array::from_fn(|i| a[i] + b[i])
    }
    #[inline(always)]
    fn to_array8(v: [f32; 8]) -> [f32; 8] {
        v
    }
    #[inline(always)]
    unsafe fn load_pairs8(p: *const u32) -> [u32; 8] {
        // SAFETY: the caller guarantees 8 readable words at `p`.
        unsafe { p.cast::<[u32; 8]>().read_unaligned() }
    }
    #[inline(always)]
    fn splat_pair8(x: u32) -> [u32; 8] {
        [x; 8]
    }
    #[inline(always)]
    fn dot8(acc: [f32; 8], a: [u32; 8], b: [u32; 8]) -> [f32; 8] {
        dot_lanes(acc, a, b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_lane_takes_the_high_product_first_and_flushes() {
        let bf = |x: f32| u32::from(f32_to_bf16(x));
        // 1.0 (lo) and 2.0 (hi) times 3.0 and 5.0: 10 + 3.
        let a = bf(1.0) | bf(2.0) << 16;
        let b = bf(3.0) | bf(5.0) << 16;
        assert_eq!(dot_lane(0.5, a, b), 13.5);
        // Order: from 2^24 (float spacing 2 above, 1 below), the high product
        // +1 first ties back to 2^24 and the low -1 then gives 2^24 - 1; the
        // other order would end at 2^24.
        let big = 16_777_216.0f32;
        let a = bf(1.0) | bf(1.0) << 16;
        let b = bf(-1.0) | bf(1.0) << 16;
        assert_eq!(dot_lane(big, a, b), big - 1.0);
        // A denormal accumulator is read as zero; a denormal result is flushed.
        let tiny = f32::from_bits(1);
        assert_eq!(flush(-tiny).to_bits(), 0x8000_0000);
        assert_eq!(dot_lane(tiny, 0, 0).to_bits(), 0);
        let a = bf(1.0) << 16;
        let b = bf(-f32::MIN_POSITIVE) << 16;
        assert_eq!(dot_lane(1.5 * f32::MIN_POSITIVE, a, b).to_bits(), 0);
        assert_eq!(dot_lane(2.5 * f32::MIN_POSITIVE, a, b), 1.5 * f32::MIN_POSITIVE);
        // NaN in either operand, or Inf * 0, gives NaN.
        assert!(dot_lane(0.0, bf(f32::NAN), bf(0.0)).is_nan());
        assert!(dot_lane(0.0, bf(f32::INFINITY), bf(0.0)).is_nan());
    }

    /// The vectorisable `dot_lanes` equals the definition bit for bit,
    /// on random words (all exponents, so overflow, underflow, denormals,
    /// NaN and infinity all occur) and on products near the f32 limits, with
    /// one slow lane among fast ones.
    #[test]
    fn dot_lanes_match_the_definition() {
        let mut x = 7u64;
        let mut next = || {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (x >> 32) as u32
        };
        let bf = |x: f32| u32::from(f32_to_bf16(x));
        let edge = [
            bf(1e20) | bf(1e19) << 16,
            bf(-1e-20) | bf(3e-19) << 16,
            bf(f32::MAX) | bf(-2.0) << 16,
            bf(f32::MIN_POSITIVE) | bf(0.5) << 16,
            0,
            bf(f32::NAN) | bf(f32::INFINITY) << 16,
        ];
        for round in 0..20_000 {
            let mut a: [u32; 16] = core::array::from_fn(|_| next());
            let mut b: [u32; 16] = core::array::from_fn(|_| next());
            let acc: [f32; 16] = core::array::from_fn(|_| f32::from_bits(next()));
            if round % 2 == 0 {
                // Mostly tame values, so the fast path is taken too.
                for w in a.iter_mut().chain(b.iter_mut()) {
                    *w &= 0x3fff_3fff;
                    *w |= 0x3000_3000;
                }
                if round % 4 == 0 {
                    a[round % 16] = edge[round / 4 % edge.len()];
                    b[round % 16] = edge[(round / 4 + 1) % edge.len()];
                }
            }
            let got = dot_lanes(acc, a, b);
            for i in 0..16 {
                let want = dot_lane(acc[i], a[i], b[i]);
                assert!(
                    got[i].to_bits() == want.to_bits() || (got[i].is_nan() && want.is_nan()),
                    "{:#x} {:#x} {:e}: {:e} vs {:e}",
                    a[i],
                    b[i],
                    acc[i],
                    got[i],
                    want
                );
            }
        }
    }
}
