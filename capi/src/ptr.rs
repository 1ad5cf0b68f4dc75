//! Turning the caller's raw pointers into references: the only place in the
//! crate that dereferences them (apart from `Box::from_raw` in the destroy
//! functions). Each function checks what can be checked (NULL, alignment,
//! the size limit of a Rust slice) and returns a [`Failure`] naming the
//! argument; what cannot be checked (that the memory is really there and not
//! written concurrently) is the caller's contract, stated in each public
//! function's `# Safety` section.

use std::ffi::{CStr, c_char};

use crate::status::{Failure, REPCONV_ERR_TOO_LARGE, Res};

/// NULL and alignment.
pub(crate) fn check<T>(what: &str, ptr: *const T) -> Res {
    if ptr.is_null() {
        return Err(Failure::null(what));
    }
    if !ptr.is_aligned() {
        return Err(Failure::invalid(format!(
            "{what} ({ptr:p}) is not aligned to {} bytes",
            align_of::<T>()
        )));
    }
    Ok(())
}

/// NULL, alignment, and that `len` elements fit in `isize::MAX` bytes (the
/// precondition of `slice::from_raw_parts`).
pub(crate) fn check_array<T>(what: &str, ptr: *const T, len: usize) -> Res {
    check(what, ptr)?;
    if len > isize::MAX as usize / size_of::<T>().max(1) {
        return Err(Failure::new(
            REPCONV_ERR_TOO_LARGE,
            format!("{what}: {len} elements exceed the address space"),
        ));
    }
    Ok(())
}

/// Fails unless the two arrays' byte ranges are disjoint (an input and the
/// output it is written to may not alias).
pub(crate) fn check_disjoint<T>(a: (&str, *const T, usize), b: (&str, *const T, usize)) -> Res {
    let range = |p: *const T, len: usize| {
        let start = p as usize;
        (start, start.saturating_add(len.saturating_mul(size_of::<T>())))
    };
    let ((a_start, a_end), (b_start, b_end)) = (range(a.1, a.2), range(b.1, b.2));
    if a_start < b_end && b_start < a_end {
        return Err(Failure::invalid(format!("{} and {} overlap in memory", a.0, b.0)));
    }
    Ok(())
}

/// `len` elements at `ptr`, read-only.
///
/// # Safety
/// Unless NULL or misaligned (reported as errors), `ptr` must point to `len`
/// initialised elements that stay valid and unwritten for `'a`.
pub(crate) unsafe fn array<'a, T>(what: &str, ptr: *const T, len: usize) -> Res<&'a [T]> {
    check_array(what, ptr, len)?;
    // SAFETY: non-null, aligned and at most isize::MAX bytes (checked above);
    // readable, initialised and unwritten for 'a by this function's contract.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// `len` elements at `ptr`, writable.
///
/// # Safety
/// Unless NULL or misaligned (reported as errors), `ptr` must point to `len`
/// elements that stay valid for writes and otherwise unaccessed for `'a`.
pub(crate) unsafe fn array_mut<'a, T>(what: &str, ptr: *mut T, len: usize) -> Res<&'a mut [T]> {
    check_array(what, ptr, len)?;
    // SAFETY: non-null, aligned and at most isize::MAX bytes (checked above);
    // writable and not otherwise accessed for 'a by this function's contract.
    // The caller's f32 buffers may hold any bit pattern, all valid f32.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
}

/// A shape: 4 `size_t` at `ptr`.
///
/// # Safety
/// As [`array`] with `len` 4.
pub(crate) unsafe fn shape(what: &str, ptr: *const usize) -> Res<[usize; 4]> {
    // SAFETY: forwarded to this function's contract.
    let s = unsafe { array(what, ptr, 4) }?;
    Ok([s[0], s[1], s[2], s[3]])
}

/// A shared reference to the value at `ptr` (a handle or parameter struct).
///
/// # Safety
/// Unless NULL or misaligned, `ptr` must point to a live, initialised `T`
/// that is not mutated for `'a`.
pub(crate) unsafe fn get<'a, T>(what: &str, ptr: *const T) -> Res<&'a T> {
    check(what, ptr)?;
    // SAFETY: non-null and aligned (checked above); live and unmutated for
    // 'a by this function's contract.
    Ok(unsafe { &*ptr })
}

/// Writes an output argument.
///
/// # Safety
/// Unless NULL or misaligned, `ptr` must be valid for a write of `T`.
pub(crate) unsafe fn write<T: Copy>(what: &str, ptr: *mut T, value: T) -> Res {
    check(what, ptr)?;
    // SAFETY: non-null and aligned (checked above); writable by this
    // function's contract. `T: Copy`, so the old value needs no drop.
    unsafe { ptr.write(value) };
    Ok(())
}

/// A handle output argument (`T** out`): checked and set to NULL up front,
/// so it is NULL whenever the call fails; returns it for the final write.
///
/// # Safety
/// As [`write`] for `*mut T`, for `'a`.
pub(crate) unsafe fn out_handle<'a, T>(what: &str, ptr: *mut *mut T) -> Res<&'a mut *mut T> {
    // SAFETY: forwarded to this function's contract.
    unsafe { write(what, ptr, std::ptr::null_mut()) }?;
    // SAFETY: non-null, aligned and initialised (just written); writable and
    // not otherwise accessed for 'a by this function's contract.
    Ok(unsafe { &mut *ptr })
}

/// An optional NUL-terminated string: `None` for NULL.
///
/// # Safety
/// Unless NULL, `ptr` must point to a NUL-terminated string that stays valid
/// and unwritten for `'a`.
pub(crate) unsafe fn opt_c_str<'a>(ptr: *const c_char) -> Option<&'a CStr> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: non-null (checked above); NUL-terminated, valid and unwritten
    // for 'a by this function's contract.
    Some(unsafe { CStr::from_ptr(ptr) })
}

/// A required NUL-terminated string.
///
/// # Safety
/// As [`opt_c_str`].
pub(crate) unsafe fn c_str<'a>(what: &str, ptr: *const c_char) -> Res<&'a CStr> {
    // SAFETY: forwarded to this function's contract.
    unsafe { opt_c_str(ptr) }.ok_or_else(|| Failure::null(what))
}
