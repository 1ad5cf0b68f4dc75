//! Per-thread scratch buffers, so that `Conv2d::forward_into` allocates nothing
//! once each worker thread has seen the largest layer it runs, while one
//! `Conv2d` can still be shared (`&self`) by many threads at once.

use std::cell::RefCell;

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
    key.with(|cell| {
        // A re-entrant call on the same thread (which the library never makes)
        // gets a fresh buffer instead of a panic.
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
