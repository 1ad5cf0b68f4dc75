//! A handle's replaceable contents (its convolution or network), swapped as
//! a whole by `*_set_precision` while other threads run forward passes on
//! the handle, as `threads` swaps its pool: each pass takes its own
//! reference (an `Arc`) to the value it starts with and keeps it to the end,
//! so a replaced value lives until the last pass using it returns. The lock
//! is held only to read or swap the reference, never while a pass runs or a
//! replacement is built, so neither waits for the other.

use std::sync::{Arc, Mutex, PoisonError};

/// The value a handle's calls use now.
#[derive(Debug)]
pub(crate) struct Current<T> {
    value: Mutex<Arc<T>>,
}

impl<T> Current<T> {
    pub(crate) fn new(value: T) -> Current<T> {
        Current { value: Mutex::new(Arc::new(value)) }
    }

    /// The value now; a later [`Current::replace`] does not change it.
    pub(crate) fn get(&self) -> Arc<T> {
        // A poisoned lock only means a thread panicked while cloning or
        // swapping the reference; the reference itself is intact.
        Arc::clone(&self.value.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Makes `value` the one later calls get. The old value is dropped here
    /// (outside the lock) unless a running pass still holds it.
    pub(crate) fn replace(&self, value: T) {
        let old = std::mem::replace(
            &mut *self.value.lock().unwrap_or_else(PoisonError::into_inner),
            Arc::new(value),
        );
        drop(old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_taken_before_a_replace_is_kept() {
        let current = Current::new(vec![1, 2]);
        let taken = current.get();
        current.replace(vec![3]);
        assert_eq!(*taken, [1, 2]);
        assert_eq!(*current.get(), [3]);
        assert_eq!(Arc::strong_count(&taken), 1, "the handle no longer holds the old value");
    }
}
