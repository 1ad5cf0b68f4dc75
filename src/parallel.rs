//! Whether work on this thread may fork onto the rayon pool.
//!
//! Every parallel decision in the crate (convolutions, BatchNorm and
//! elementwise passes) asks [`may_fork`]. A network that splits a batch by
//! images runs each image's whole forward pass on one worker inside
//! [`serial_scope`], so its layers do not fork again: one parallel region per
//! batch instead of a fork-join per layer and image.

use std::cell::Cell;

thread_local! {
    static SERIAL: Cell<bool> = const { Cell::new(false) };
}

/// True when the pool has more than one thread and this thread is not inside
/// a [`serial_scope`].
pub(crate) fn may_fork() -> bool {
    !SERIAL.with(Cell::get) && rayon::current_num_threads() > 1
}

/// Runs `f` with [`may_fork`] false on this thread (restored afterwards, also
/// if `f` panics).
pub(crate) fn serial_scope<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            SERIAL.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(SERIAL.with(|s| s.replace(true)));
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_scope_nests_and_restores() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        pool.install(|| {
            assert!(may_fork());
            serial_scope(|| {
                assert!(!may_fork());
                serial_scope(|| assert!(!may_fork()));
                assert!(!may_fork());
            });
            assert!(may_fork());
            let caught = std::panic::catch_unwind(|| serial_scope(|| panic!("inside")));
            assert!(caught.is_err());
            assert!(may_fork(), "a panic inside the scope must not leave it set");
        });
    }
}
