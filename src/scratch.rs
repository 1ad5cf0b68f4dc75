//! Per-thread scratch buffers, so that `Conv2d::forward_into` allocates nothing
//! in the steady state while one `Conv2d` can still be shared (`&self`) by
//! many threads at once.
//!
//! # Retention policy
//! Each thread keeps one buffer of each kind (kernel panel, im2col band or
//! prepared input, tap offsets), grown on demand to the largest request it has
//! served, but never beyond [`RETAIN_BYTES`]. A request larger than that is
//! served by a temporary buffer that is freed when the call returns, so no
//! thread holds on to the memory of the largest layer it ever ran: a thread
//! retains at most `3 * RETAIN_BYTES` of scratch. The general path never asks
//! for more than its band limit (8 MiB by default) of im2col plus a GEMM panel
//! of at most 12 MiB, so it is always served from the retained buffers; only
//! the direct 3x3 kernel's padded copy of a large input (over 16 MiB) is
//! allocated and freed on every call.

use std::cell::RefCell;

/// The most each per-thread buffer keeps between calls, in bytes (16 MiB).
pub(crate) const RETAIN_BYTES: usize = 16 << 20;

thread_local! {
    static PANEL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static IM2COL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static OFFSETS: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

fn with_buf<T: Clone + Default, R>(
    key: &'static std::thread::LocalKey<RefCell<Vec<T>>>,
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    if len > RETAIN_BYTES / size_of::<T>() {
        // Too large to keep: this call's own buffer, freed on return.
        return f(&mut vec![T::default(); len]);
    }
    key.with(|cell| {
        // A re-entrant call on the same thread (rayon work stealing while a
        // task waits can run another forward pass here) gets a fresh buffer
        // instead of a panic.
        match cell.try_borrow_mut() {
            Ok(mut buf) => {
                if buf.len() < len {
                    buf.resize(len, T::default());
                }
                f(&mut buf[..len])
            }
            Err(_) => f(&mut vec![T::default(); len]),
        }
    })
}

/// Runs `f` with this thread's kernel scratch (tail panels), at least `len` long.
pub(crate) fn with_panel<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    with_buf(&PANEL, len, f)
}

/// Runs `f` with this thread's im2col buffer, at least `len` long.
pub(crate) fn with_im2col<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    with_buf(&IM2COL, len, f)
}

/// Runs `f` with this thread's tap-offset table, at least `len` long.
pub(crate) fn with_offsets<R>(len: usize, f: impl FnOnce(&mut [usize]) -> R) -> R {
    with_buf(&OFFSETS, len, f)
}
