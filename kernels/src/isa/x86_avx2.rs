//! The AVX2+FMA instantiation: [`V256`], one `__m256` (8 lanes), and the
//! `#[target_feature]` entry point that compiles a [`Job`] for it.
//!
//! Every intrinsic call below sits in an `unsafe` block whose justification
//! is the same: a `V256` only exists inside [`run`] (or the AVX-512 entry,
//! whose features include AVX2 and FMA), which is only called after the CPU
//! was checked for those features (module docs of [`super`]).

use core::arch::x86_64::*;

use super::{Job, Tile, Vector};
/// Runs `job` compiled for AVX2 + FMA.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn run<J: Job>(job: J) -> J::Out {
    job.run::<V256>()
}

/// Eight f32 lanes in one ymm register.
#[derive(Clone, Copy, Debug)]
#[repr(transparent)]
pub(super) struct V256(__m256);

/// Lane indices for [`Vector::pick2`]: the in-source index (`vpermps` uses
/// its low 3 bits) and the lanes that take the second source.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Idx256 {
    perm: __m256i,
    second: __m256,
}

impl Vector for V256 {
    const LANES: usize = 8;
    // 6 x 2 accumulators = 12 ymm, + 2 loads of B + 1 broadcast: of 16.
    type Gemm = Tile<6, 2>;
    // 16 chains + 2 operands would spill out of the 16 ymm registers.
    const PEAK_CHAINS: usize = 12;
    const ONE_INSTRUCTION_PICK2: bool = false;
    const REGISTERS: usize = 16;
    type V8 = V256;
    type Index = Idx256;

    #[inline(always)]
    fn zero() -> Self {
        // SAFETY: AVX2 is present (module docs).
        V256(unsafe { _mm256_setzero_ps() })
    }
    #[inline(always)]
    fn splat(x: f32) -> Self {
        // SAFETY: AVX2 is present (module docs).
        V256(unsafe { _mm256_set1_ps(x) })
    }
    #[inline(always)]
    unsafe fn load_ptr(p: *const f32) -> Self {
        // SAFETY: the caller guarantees 8 readable floats at `p`; loadu has no
        // alignment requirement; AVX is present (module docs).
        V256(unsafe { _mm256_loadu_ps(p) })
    }
    #[inline(always)]
    unsafe fn store_ptr(self, p: *mut f32) {
        // SAFETY: the caller guarantees 8 writable floats at `p`; storeu has
        // no alignment requirement; AVX is present (module docs).
        unsafe { _mm256_storeu_ps(p, self.0) }
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        // SAFETY: FMA is present (module docs).
        V256(unsafe { _mm256_fmadd_ps(self.0, b.0, c.0) })
    }
    #[inline(always)]
    fn mul(self, b: Self) -> Self {
        // SAFETY: AVX is present (module docs).
        V256(unsafe { _mm256_mul_ps(self.0, b.0) })
    }
    #[inline(always)]
    fn add(self, b: Self) -> Self {
        // SAFETY: AVX is present (module docs).
        V256(unsafe { _mm256_add_ps(self.0, b.0) })
    }
    #[inline(always)]
    fn and(self, b: Self) -> Self {
        // SAFETY: AVX is present (module docs).
        V256(unsafe { _mm256_and_ps(self.0, b.0) })
    }
    #[inline(always)]
    fn relu(self) -> Self {
        // maxps(a, b) = a > b ? a : b: with a = 0, NaN and -0.0 in b give b.
        // SAFETY: AVX is present (module docs).
        V256(unsafe { _mm256_max_ps(_mm256_setzero_ps(), self.0) })
    }
    #[inline(always)]
    fn reduce_add(self) -> f32 {
        // SAFETY: AVX is present (module docs).
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(self.0), _mm256_extractf128_ps(self.0, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
            _mm_cvtss_f32(s)
        }
    }
    #[inline(always)]
    fn index(f: impl Fn(usize) -> u32) -> Idx256 {
        let a: [u32; 8] = core::array::from_fn(|j| f(j) % 16);
        let sel: [u32; 8] = core::array::from_fn(|j| if a[j] >= 8 { u32::MAX } else { 0 });
        // SAFETY: both arrays are 32 readable bytes; loadu has no alignment
        // requirement; AVX is present (module docs).
        unsafe {
            Idx256 {
                perm: _mm256_loadu_si256(a.as_ptr().cast()),
                second: _mm256_castsi256_ps(_mm256_loadu_si256(sel.as_ptr().cast())),
            }
        }
    }
    #[inline(always)]
    fn pick2(a: Self, b: Self, idx: Idx256) -> Self {
        // Two `vpermps` and a blend: AVX2 has no two-source lane permute.
        // SAFETY: AVX2 is present (module docs).
        V256(unsafe {
            _mm256_blendv_ps(
                _mm256_permutevar8x32_ps(a.0, idx.perm),
                _mm256_permutevar8x32_ps(b.0, idx.perm),
                idx.second,
            )
        })
    }
    #[inline(always)]
    fn mul_add_scalar(a: f32, b: f32, c: f32) -> f32 {
        // Compiled with FMA enabled, this is one `vfmadd`, not a libm call.
        a.mul_add(b, c)
    }
}
