//! Slice access for any [`Vector`]: the checked loads and stores kernels use by
//! default, and the only unchecked helpers in the project (each with a
//! `# Safety` section and a `debug_assert!` on its bounds).

use crate::isa::{MAX_LANES, Vector};

/// Slice loads and stores, provided for every [`Vector`].
pub(crate) trait Lanes: Vector {
    /// Loads `LANES` floats starting at `s[i]`.
    ///
    /// # Panics
    /// If `i + LANES > s.len()`.
    #[inline(always)]
    fn load(s: &[f32], i: usize) -> Self {
        let v = &s[i..i + Self::LANES];
        // SAFETY: `v` holds exactly LANES floats.
        unsafe { Self::load_ptr(v.as_ptr()) }
    }

    /// Loads up to `LANES` floats starting at `s[i]`; lanes past the end of
    /// `s` are zero (never garbage, which could be denormal or NaN and stall
    /// the FPU).
    #[inline(always)]
    fn load_partial(s: &[f32], i: usize) -> Self {
        const { assert!(Self::LANES <= MAX_LANES) };
        let end = s.len().min(i + Self::LANES);
        let src = &s[i.min(end)..end];
        let mut buf = [0.0f32; MAX_LANES];
        buf[..src.len()].copy_from_slice(src);
        Self::load(&buf, 0)
    }

    /// Stores the lanes to `s[i..i + LANES]`.
    ///
    /// # Panics
    /// If `i + LANES > s.len()`.
    #[inline(always)]
    fn store(self, s: &mut [f32], i: usize) {
        let v = &mut s[i..i + Self::LANES];
        // SAFETY: `v` holds exactly LANES floats and comes from a unique borrow.
        unsafe { self.store_ptr(v.as_mut_ptr()) }
    }

    /// The lanes as an array (the first `LANES` entries are used).
    #[inline(always)]
    fn to_array(self) -> [f32; MAX_LANES] {
        const { assert!(Self::LANES <= MAX_LANES) };
        let mut buf = [0.0f32; MAX_LANES];
        self.store(&mut buf, 0);
        buf
    }

    /// Loads `LANES` floats starting at `s[i]` without a bounds check.
    ///
    /// # Safety
    /// `i + LANES <= s.len()` must hold.
    #[inline(always)]
    unsafe fn load_unchecked(s: &[f32], i: usize) -> Self {
        debug_assert!(i + Self::LANES <= s.len(), "load_unchecked out of bounds");
        // SAFETY: the caller guarantees `s[i..i + LANES]` is in bounds.
        unsafe { Self::load_ptr(s.as_ptr().add(i)) }
    }

    /// Stores the lanes to `s[i..i + LANES]` without a bounds check.
    ///
    /// # Safety
    /// `i + LANES <= s.len()` must hold.
    #[inline(always)]
    unsafe fn store_unchecked(self, s: &mut [f32], i: usize) {
        debug_assert!(i + Self::LANES <= s.len(), "store_unchecked out of bounds");
        // SAFETY: the caller guarantees `s[i..i + LANES]` is in bounds, and the
        // pointer comes from `as_mut_ptr` of a unique borrow, so writing is allowed.
        unsafe { self.store_ptr(s.as_mut_ptr().add(i)) }
    }
}

impl<V: Vector> Lanes for V {}

/// Reads `s[i]` without a bounds check.
///
/// # Safety
/// `i < s.len()` must hold.
#[inline(always)]
pub(crate) unsafe fn get_unchecked(s: &[f32], i: usize) -> f32 {
    debug_assert!(i < s.len(), "get_unchecked out of bounds");
    // SAFETY: the caller guarantees `i < s.len()`.
    unsafe { *s.get_unchecked(i) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::{Isa, Job, dispatch};

    /// `store_first` and `store_lanes` write exactly the lanes asked for,
    /// where asked, on every ISA this CPU has (AVX-512's are masked stores
    /// whose base address lies before the buffer).
    #[test]
    fn partial_stores_write_only_their_lanes() {
        struct Check;
        impl Job for Check {
            type Out = ();
            fn run<V: Vector>(self) {
                let lanes = V::LANES;
                let v = V::load(&core::array::from_fn::<f32, MAX_LANES, _>(|j| j as f32), 0);
                for first in 0..=lanes {
                    for n in 0..=lanes - first {
                        // Sentinels around the n written floats.
                        let mut buf = vec![-1.0f32; n + 2];
                        // SAFETY: buf[1..1 + n] is writable.
                        unsafe { v.store_lanes(buf.as_mut_ptr().add(1), first, n) };
                        let want: Vec<f32> = (0..n).map(|i| (first + i) as f32).collect();
                        assert_eq!(&buf[1..1 + n], &want[..], "first {first} n {n}");
                        assert_eq!((buf[0], buf[n + 1]), (-1.0, -1.0), "first {first} n {n}");
                        if first == 0 {
                            let mut buf = vec![-1.0f32; n + 2];
                            // SAFETY: as above.
                            unsafe { v.store_first(buf.as_mut_ptr().add(1), n) };
                            assert_eq!(&buf[1..1 + n], &want[..]);
                            assert_eq!((buf[0], buf[n + 1]), (-1.0, -1.0));
                        }
                    }
                }
            }
        }
        for isa in Isa::available() {
            dispatch(isa, Check);
        }
    }
}
