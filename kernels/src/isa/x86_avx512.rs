//! The AVX-512F instantiation: [`V512`], one `__m512` (16 lanes), and the
//! `#[target_feature]` entry point that compiles a [`Job`] for it.
//!
//! Every intrinsic call below sits in an `unsafe` block whose justification
//! is the same: a `V512` only exists inside [`run`], which is only called
//! after the CPU was checked for AVX-512F/VL/DQ, AVX2 and FMA (module docs of
//! [`super`]).
//!
//! VL matters beyond its instructions: it lets 256-bit code (the GEMV tail
//! of the 1x1 kernel, which vectorises over 8 output channels) use all 32
//! vector registers instead of 16; without it that tail spills (numbers in
//! docs/experiments.md).

use core::arch::x86_64::*;

use super::x86_avx2::V256;
use super::{Job, Tile, Vector};
/// Runs `job` compiled for AVX-512F/VL/DQ (+AVX2, FMA).
///
/// # Safety
/// The CPU must support AVX-512F, AVX-512VL, AVX-512DQ, AVX2 and FMA.
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
pub(super) unsafe fn run<J: Job>(job: J) -> J::Out {
    job.run::<V512>()
}

/// Sixteen f32 lanes in one zmm register.
#[derive(Clone, Copy, Debug)]
#[repr(transparent)]
pub(super) struct V512(__m512);

/// Lane indices for `vpermt2ps`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Idx512(__m512i);

impl Vector for V512 {
    const LANES: usize = 16;
    // 8 x 3 accumulators = 24 zmm, + 3 loads of B + 1 broadcast: of 32.
    type Gemm = Tile<8, 3>;
    const PEAK_CHAINS: usize = 16;
    const ONE_INSTRUCTION_PICK2: bool = true;
    const REGISTERS: usize = 32;
    type V8 = V256;
    type Index = Idx512;

    #[inline(always)]
    fn zero() -> Self {
        // SAFETY: AVX-512F is present (module docs).
        V512(unsafe { _mm512_setzero_ps() })
    }
    #[inline(always)]
    fn splat(x: f32) -> Self {
        // SAFETY: AVX-512F is present (module docs).
        V512(unsafe { _mm512_set1_ps(x) })
    }
    #[inline(always)]
    unsafe fn load_ptr(p: *const f32) -> Self {
        // SAFETY: the caller guarantees 16 readable floats at `p`; loadu has no
        // alignment requirement; AVX-512F is present (module docs).
        V512(unsafe { _mm512_loadu_ps(p) })
    }
    #[inline(always)]
    unsafe fn store_ptr(self, p: *mut f32) {
        // SAFETY: the caller guarantees 16 writable floats at `p`; storeu has
        // no alignment requirement; AVX-512F is present (module docs).
        unsafe { _mm512_storeu_ps(p, self.0) }
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        // SAFETY: AVX-512F is present (module docs).
        V512(unsafe { _mm512_fmadd_ps(self.0, b.0, c.0) })
    }
    #[inline(always)]
    fn mul(self, b: Self) -> Self {
        // SAFETY: AVX-512F is present (module docs).
        V512(unsafe { _mm512_mul_ps(self.0, b.0) })
    }
    #[inline(always)]
    fn add(self, b: Self) -> Self {
        // SAFETY: AVX-512F is present (module docs).
        V512(unsafe { _mm512_add_ps(self.0, b.0) })
    }
    #[inline(always)]
    fn and(self, b: Self) -> Self {
        // `vandps zmm` (AVX-512DQ): stays in the FP domain, unlike `vpandd`.
        // SAFETY: AVX-512DQ is present (module docs).
        V512(unsafe { _mm512_and_ps(self.0, b.0) })
    }
    #[inline(always)]
    fn relu(self) -> Self {
        // maxps(a, b) = a > b ? a : b: with a = 0, NaN and -0.0 in b give b.
        // SAFETY: AVX-512F is present (module docs).
        V512(unsafe { _mm512_max_ps(_mm512_setzero_ps(), self.0) })
    }
    #[inline(always)]
    fn reduce_add(self) -> f32 {
        // SAFETY: AVX-512F is present (module docs).
        unsafe { _mm512_reduce_add_ps(self.0) }
    }
    #[inline(always)]
    fn index(f: impl Fn(usize) -> u32) -> Idx512 {
        let a: [u32; 16] = core::array::from_fn(|j| f(j) % 32);
        // SAFETY: `a` is 64 readable bytes; loadu has no alignment requirement;
        // AVX-512F is present (module docs).
        Idx512(unsafe { _mm512_loadu_si512(a.as_ptr().cast()) })
    }
    #[inline(always)]
    fn pick2(a: Self, b: Self, idx: Idx512) -> Self {
        // One `vpermt2ps`: index bit 4 selects the source.
        // SAFETY: AVX-512F is present (module docs).
        V512(unsafe { _mm512_permutex2var_ps(a.0, idx.0, b.0) })
    }
    #[inline(always)]
    unsafe fn store_first(self, p: *mut f32, n: usize) {
        let mask: __mmask16 = if n >= 16 { u16::MAX } else { (1u16 << n) - 1 };
        // SAFETY: the caller guarantees `p .. p + n` is writable; a masked
        // store neither writes nor faults on the lanes it leaves out;
        // AVX-512F is present (module docs).
        unsafe { _mm512_mask_storeu_ps(p, mask, self.0) }
    }
    #[inline(always)]
    unsafe fn store_lanes(self, p: *mut f32, first: usize, n: usize) {
        let first = first.min(16);
        let n = n.min(16 - first);
        let mask = (((1u32 << n) - 1) << first) as __mmask16;
        // SAFETY: lane `first + i` goes to `p + i` for i < n, which the caller
        // guarantees writable; the masked-off lanes are neither written nor
        // checked for faults, so the base address `p - first` may lie outside
        // the buffer (computed with `wrapping_sub`, never dereferenced
        // itself); AVX-512F is present (module docs).
        unsafe { _mm512_mask_storeu_ps(p.wrapping_sub(first), mask, self.0) }
    }
    #[inline(always)]
    fn mul_add_scalar(a: f32, b: f32, c: f32) -> f32 {
        // Compiled with FMA enabled, this is one `vfmadd`, not a libm call.
        a.mul_add(b, c)
    }
}
