//! The AVX512_BF16 implementation of [`Simd`] and the `#[target_feature]`
//! entry point that compiles a [`Bf16Job`] for it.
//!
//! Every intrinsic call below sits in an `unsafe` block whose justification
//! is the same: an [`Avx512Bf16`] method only runs inside [`run`], which is
//! only called after the CPU was checked for AVX512_BF16, AVX-512F/BW/VL,
//! AVX2 and FMA (`Bf16Kind::check`).

use core::arch::x86_64::*;
use core::mem::transmute;

use super::Bf16Job;
use super::simd::Simd;

/// Runs `job` compiled for AVX512_BF16 (+AVX-512F/BW/VL, AVX2, FMA).
///
/// # Safety
/// The CPU must support AVX512_BF16, AVX-512F, AVX-512BW, AVX-512VL, AVX2 and
/// FMA.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma")]
pub(super) unsafe fn run<J: Bf16Job>(job: J) -> J::Out {
    job.run::<Avx512Bf16>()
}

/// The marker type of the hardware implementation: `F` is one zmm of f32,
/// `P` one zmm of bf16 pairs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512Bf16;

/// Word permute that interleaves the two halves of a `vcvtne2ps2bf16` result:
/// destination word `2i` takes source word `i` (the even channel), word
/// `2i + 1` takes source word `16 + i` (the odd channel).
const INTERLEAVE: [u16; 32] = {
    let mut idx = [0u16; 32];
    let mut i = 0;
    while i < 16 {
        idx[2 * i] = i as u16;
        idx[2 * i + 1] = 16 + i as u16;
        i += 1;
    }
    idx
};

impl Simd for Avx512Bf16 {
    type F = __m512;
    type P = __m512i;

    #[inline(always)]
    fn splat(x: f32) -> __m512 {
        // SAFETY: AVX-512F is present (module docs).
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    fn zero() -> __m512 {
        // SAFETY: AVX-512F is present (module docs).
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn load_f32(p: *const f32) -> __m512 {
        // SAFETY: the caller guarantees 16 readable floats at `p`; loadu has
        // no alignment requirement; AVX-512F is present (module docs).
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store_f32(v: __m512, p: *mut f32) {
        // SAFETY: the caller guarantees 16 writable floats at `p`; storeu has
        // no alignment requirement; AVX-512F is present (module docs).
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    fn relu(v: __m512) -> __m512 {
        // maxps(a, b) = a > b ? a : b: with a = 0, NaN and -0.0 in b give b.
        // SAFETY: AVX-512F is present (module docs).
        unsafe { _mm512_max_ps(_mm512_setzero_ps(), v) }
    }
    #[inline(always)]
    unsafe fn load_pairs(p: *const u32) -> __m512i {
        // SAFETY: the caller guarantees 64 readable bytes at `p`; loadu has no
        // alignment requirement; AVX-512F is present (module docs).
        unsafe { _mm512_loadu_si512(p.cast()) }
    }
    #[inline(always)]
    unsafe fn store_pairs(v: __m512i, p: *mut u32) {
        // SAFETY: the caller guarantees 64 writable bytes at `p`; storeu has
        // no alignment requirement; AVX-512F is present (module docs).
        unsafe { _mm512_storeu_si512(p.cast(), v) }
    }
    #[inline(always)]
    fn splat_pair(x: u32) -> __m512i {
        // LLVM folds this broadcast of a loaded word into the `{1to16}`
        // memory operand of the `vdpbf16ps` that uses it.
        // SAFETY: AVX-512F is present (module docs).
        unsafe { _mm512_set1_epi32(x as i32) }
    }
    #[inline(always)]
    fn dot(acc: __m512, a: __m512i, b: __m512i) -> __m512 {
        // SAFETY: `__m512i` and `__m512bh` are both 64 bytes of plain data, so
        // the transmutes are bit copies; AVX512_BF16 is present (module docs).
        unsafe {
            _mm512_dpbf16_ps(
                acc,
                transmute::<__m512i, __m512bh>(a),
                transmute::<__m512i, __m512bh>(b),
            )
        }
    }
    #[inline(always)]
    fn pair(even: __m512, odd: __m512) -> __m512i {
        // SAFETY: `vcvtne2ps2bf16(a, b)` puts b's 16 words first and a's
        // after them; the permute index is 64 readable bytes (a const array);
        // the transmute is a bit copy between 64-byte vectors; AVX512_BF16
        // and AVX-512BW (`vpermw`) are present (module docs).
        unsafe {
            let halves = transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(odd, even));
            let idx = _mm512_loadu_si512(INTERLEAVE.as_ptr().cast());
            _mm512_permutexvar_epi16(idx, halves)
        }
    }
    #[inline(always)]
    unsafe fn store_bf16(v: __m512, p: *mut u16) {
        // SAFETY: the caller guarantees 32 writable bytes at `p`; storeu has
        // no alignment requirement; the transmute is a bit copy between
        // 32-byte vectors; AVX512_BF16 is present (module docs).
        unsafe {
            let h = transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(v));
            _mm256_storeu_si256(p.cast(), h)
        }
    }

    type F8 = __m256;
    type P8 = __m256i;

    #[inline(always)]
    unsafe fn load_f32x8(p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees 8 readable floats at `p`; loadu has
        // no alignment requirement; AVX is present (module docs).
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    fn zero8() -> __m256 {
        // SAFETY: AVX is present (module docs).
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    fn add8(a: __m256, b: __m256) -> __m256 {
        // SAFETY: AVX is present (module docs).
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    fn to_array8(v: __m256) -> [f32; 8] {
        let mut out = [0.0f32; 8];
        // SAFETY: `out` is 32 writable bytes; storeu has no alignment
        // requirement; AVX is present (module docs).
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
        out
    }
    #[inline(always)]
    unsafe fn load_pairs8(p: *const u32) -> __m256i {
        // SAFETY: the caller guarantees 32 readable bytes at `p`; loadu has
        // no alignment requirement; AVX is present (module docs).
        unsafe { _mm256_loadu_si256(p.cast()) }
    }
    #[inline(always)]
    fn splat_pair8(x: u32) -> __m256i {
        // SAFETY: AVX is present (module docs).
        unsafe { _mm256_set1_epi32(x as i32) }
    }
    #[inline(always)]
    fn dot8(acc: __m256, a: __m256i, b: __m256i) -> __m256 {
        // SAFETY: `__m256i` and `__m256bh` are both 32 bytes of plain data, so
        // the transmutes are bit copies; AVX512_BF16 and AVX-512VL (the
        // 256-bit form) are present (module docs).
        unsafe {
            _mm256_dpbf16_ps(
                acc,
                transmute::<__m256i, __m256bh>(a),
                transmute::<__m256i, __m256bh>(b),
            )
        }
    }
}
