//! The SIMD lane type every kernel is written against, and the only unchecked
//! load/store helpers in the project.
//!
//! `V` is chosen once, at compile time: `f32x16` when the build enables
//! AVX-512F (512-bit registers), `f32x8` otherwise (AVX2, or two SSE/NEON/wasm
//! registers under the hood of `wide`). Kernels use `V` and [`LANES`] only, so
//! the same source serves every ISA and an AVX-512 build gets `__x16` kernels.

/// The SIMD vector type of this build.
#[cfg(target_feature = "avx512f")]
pub type V = wide::f32x16;
/// The SIMD vector type of this build.
#[cfg(not(target_feature = "avx512f"))]
pub type V = wide::f32x8;

/// Number of f32 lanes in [`V`].
#[cfg(target_feature = "avx512f")]
pub const LANES: usize = 16;
/// Number of f32 lanes in [`V`].
#[cfg(not(target_feature = "avx512f"))]
pub const LANES: usize = 8;

/// The lane suffix used in kernel names (`x16` or `x8`), see CONVENTIONS.md.
#[cfg(target_feature = "avx512f")]
pub const LANES_NAME: &str = "x16";
/// The lane suffix used in kernel names (`x16` or `x8`), see CONVENTIONS.md.
#[cfg(not(target_feature = "avx512f"))]
pub const LANES_NAME: &str = "x8";

/// Whether `V::mul_add` compiles to a single fused multiply-add instruction in this build.
pub const HAS_FMA: bool = cfg!(target_feature = "fma");

/// Loads `LANES` floats starting at `s[i]`, bounds-checked.
///
/// # Panics
/// If `i + LANES > s.len()`.
#[inline(always)]
pub fn load(s: &[f32], i: usize) -> V {
    let a: &[f32; LANES] = s[i..i + LANES].try_into().expect("slice of LANES");
    V::new(*a)
}

/// Loads up to `LANES` floats starting at `s[i]`; lanes past the end of `s`
/// are zero (never garbage, which could be denormal or NaN and stall the FPU).
#[inline(always)]
pub fn load_partial(s: &[f32], i: usize) -> V {
    let end = s.len().min(i + LANES);
    V::from(&s[i.min(end)..end])
}

/// Stores `v` to `s[i..i + LANES]`, bounds-checked.
///
/// # Panics
/// If `i + LANES > s.len()`.
#[inline(always)]
pub fn store(s: &mut [f32], i: usize, v: V) {
    s[i..i + LANES].copy_from_slice(v.as_array());
}

/// Stores the first `n` lanes of `v` to `s[i..i + n]`, bounds-checked.
///
/// # Panics
/// If `n > LANES` or `i + n > s.len()`.
#[inline(always)]
pub fn store_partial(s: &mut [f32], i: usize, n: usize, v: V) {
    s[i..i + n].copy_from_slice(&v.as_array()[..n]);
}

/// Loads `LANES` floats starting at `s[i]` without a bounds check.
///
/// # Safety
/// `i + LANES <= s.len()` must hold.
#[inline(always)]
pub unsafe fn load_unchecked(s: &[f32], i: usize) -> V {
    debug_assert!(i + LANES <= s.len(), "load_unchecked out of bounds");
    // SAFETY: the caller guarantees `s[i..i + LANES]` is in bounds; `V` is
    // plain old data with no alignment requirement for an unaligned read.
    unsafe { s.as_ptr().add(i).cast::<V>().read_unaligned() }
}

/// Reads `s[i]` without a bounds check.
///
/// # Safety
/// `i < s.len()` must hold.
#[inline(always)]
pub unsafe fn get_unchecked(s: &[f32], i: usize) -> f32 {
    debug_assert!(i < s.len(), "get_unchecked out of bounds");
    // SAFETY: the caller guarantees `i < s.len()`.
    unsafe { *s.get_unchecked(i) }
}

/// Stores `v` to `s[i..i + LANES]` without a bounds check.
///
/// # Safety
/// `i + LANES <= s.len()` must hold.
#[inline(always)]
pub unsafe fn store_unchecked(s: &mut [f32], i: usize, v: V) {
    debug_assert!(i + LANES <= s.len(), "store_unchecked out of bounds");
    // SAFETY: the caller guarantees `s[i..i + LANES]` is in bounds, and the
    // pointer comes from `as_mut_ptr` of a unique borrow, so writing is allowed.
    unsafe { s.as_mut_ptr().add(i).cast::<V>().write_unaligned(v) }
}
