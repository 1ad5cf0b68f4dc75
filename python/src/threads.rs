//! A handle's worker threads: rayon's global pool (the default, shared by
//! every handle left at 0, at most 1024 workers: [`bound_global_pool`]) or a
//! private pool of `n` threads its forward passes run inside while the
//! calling thread waits.

use std::sync::{Arc, Mutex, PoisonError};

use pyo3::prelude::*;

use crate::errors::{Kind, raise};

/// The largest pool, private or global (as in the C API).
pub(crate) const MAX_THREADS: usize = 1024;

/// Builds rayon's global pool (what handles left at 0 threads run on) before
/// anything else can, with at most [`MAX_THREADS`] workers: RAYON_NUM_THREADS
/// if it is a positive integer, else one per CPU. Unbounded,
/// `RAYON_NUM_THREADS=100000` would start 100000 threads on the first pass.
/// If another library built the global pool first, it keeps its size.
pub(crate) fn bound_global_pool() {
    let n = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let _ = rayon::ThreadPoolBuilder::new().num_threads(n.min(MAX_THREADS)).build_global();
}

/// The threads of a `Conv2d` or `MobileOne`. Changing them while forward
/// passes run is allowed: a pass keeps the pool it started with.
#[derive(Debug, Default)]
pub(crate) struct Threads {
    pool: Mutex<Option<Arc<rayon::ThreadPool>>>,
}

impl Threads {
    /// Threads set to `n` (see [`Threads::set`]).
    pub(crate) fn new(n: usize) -> PyResult<Threads> {
        let t = Threads::default();
        t.set(n)?;
        Ok(t)
    }

    fn current(&self) -> Option<Arc<rayon::ThreadPool>> {
        // A poisoned lock only means a thread panicked while swapping the
        // Option; it is intact.
        self.pool.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// `0`: the global pool; `1..=1024`: a private pool of `n` threads,
    /// replacing any previous one.
    pub(crate) fn set(&self, n: usize) -> PyResult<()> {
        if n > MAX_THREADS {
            return Err(raise(Kind::Param, format!("threads: at most {MAX_THREADS}, got {n}")));
        }
        let pool = match n {
            0 => None,
            n => Some(Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(|i| format!("repconv-{i}"))
                    .build()
                    .map_err(|e| {
                        raise(Kind::Param, format!("threads: cannot start {n} threads: {e}"))
                    })?,
            )),
        };
        *self.pool.lock().unwrap_or_else(PoisonError::into_inner) = pool;
        Ok(())
    }

    /// What [`Threads::set`] was given: 0 for the global pool.
    pub(crate) fn setting(&self) -> usize {
        self.current().map_or(0, |p| p.current_num_threads())
    }

    /// The number of threads a forward pass runs on.
    pub(crate) fn count(&self) -> usize {
        self.current().map_or_else(rayon::current_num_threads, |p| p.current_num_threads())
    }

    /// Runs `f` inside the private pool, or on the calling thread (whose
    /// parallel work goes to the global pool).
    pub(crate) fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match self.current() {
            Some(pool) => pool.install(f),
            None => f(),
        }
    }
}
