//! The portable instantiation on `wide::f32x8`, whose representation `wide`
//! picks from the build's target features: two SSE registers on a plain
//! x86-64 build, two NEON registers on aarch64, simd128 on wasm. No
//! `unsafe` intrinsics: only the two pointer accesses below.

use wide::{f32x8, u32x8};

use super::{Tile, Vector};

/// Eight f32 lanes of `wide`.
#[derive(Clone, Copy, Debug)]
#[repr(transparent)]
pub(super) struct VP(f32x8);

/// Whether `f32::mul_add` is an instruction (not a libm call) in this build.
const SCALAR_FMA: bool = cfg!(any(target_feature = "fma", target_arch = "aarch64"));

impl Vector for VP {
    const LANES: usize = 8;
    // The tile of the AVX2 instantiation: fits 16 registers of 8 lanes, and
    // NEON's 32 registers of 4 lanes.
    type Gemm = Tile<6, 2>;
    // Each f32x8 is two xmm registers on SSE2 (16 in all).
    const PEAK_CHAINS: usize = 6;
    const ONE_INSTRUCTION_PICK2: bool = false;
    const REGISTERS: usize = 8;
    type V8 = VP;
    type Index = u32x8;

    #[inline(always)]
    fn zero() -> Self {
        VP(f32x8::ZERO)
    }
    #[inline(always)]
    fn splat(x: f32) -> Self {
        VP(f32x8::splat(x))
    }
    #[inline(always)]
    unsafe fn load_ptr(p: *const f32) -> Self {
        // SAFETY: the caller guarantees 8 readable floats at `p`; `f32x8` is
        // plain old data and `read_unaligned` has no alignment requirement.
        VP(unsafe { p.cast::<f32x8>().read_unaligned() })
    }
    #[inline(always)]
    unsafe fn store_ptr(self, p: *mut f32) {
        // SAFETY: the caller guarantees 8 writable floats at `p`.
        unsafe { p.cast::<f32x8>().write_unaligned(self.0) }
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        // `wide` fuses only where the build has FMA (or NEON); else mul + add.
        VP(self.0.mul_add(b.0, c.0))
    }
    #[inline(always)]
    fn mul(self, b: Self) -> Self {
        VP(self.0 * b.0)
    }
    #[inline(always)]
    fn add(self, b: Self) -> Self {
        VP(self.0 + b.0)
    }
    #[inline(always)]
    fn and(self, b: Self) -> Self {
        VP(self.0 & b.0)
    }
    #[inline(always)]
    fn relu(self) -> Self {
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        {
            // maxps(a, b) = a > b ? a : b, so NaN (or an equal zero) in x gives x.
            VP(f32x8::ZERO.fast_max(self.0))
        }
        #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
        {
            // `fast_max` keeps NaN only on x86: compare and select elsewhere.
            VP(self.0.simd_lt(f32x8::ZERO).select(f32x8::ZERO, self.0))
        }
    }
    #[inline(always)]
    fn reduce_add(self) -> f32 {
        self.0.reduce_add()
    }
    #[inline(always)]
    fn index(f: impl Fn(usize) -> u32) -> u32x8 {
        u32x8::new(core::array::from_fn(|j| f(j) % 16))
    }
    #[inline(always)]
    fn pick2(a: Self, b: Self, idx: u32x8) -> Self {
        // Lane by lane through arrays, which is far faster on SSE2 than
        // `wide`'s runtime two-vector shuffle (numbers in docs/experiments.md).
        let (a, b, idx) = (a.0.to_array(), b.0.to_array(), idx.to_array());
        VP(f32x8::new(core::array::from_fn(|j| {
            let i = idx[j] as usize % 16;
            if i < 8 { a[i] } else { b[i - 8] }
        })))
    }
    #[inline(always)]
    fn mul_add_scalar(a: f32, b: f32, c: f32) -> f32 {
        if SCALAR_FMA { a.mul_add(b, c) } else { a * b + c }
    }
}
