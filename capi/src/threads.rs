//! Worker threads per handle: none of its own (rayon's global pool) or a
//! private rayon pool of `n` threads that its forward passes run inside.
//!
//! A private pool's threads are joined when it is dropped (by
//! `*_set_threads` or `*_destroy`), so once those return no thread of the
//! handle's is left running: a host may then unload the library, and
//! valgrind sees no thread-local blocks of exited-but-unjoined threads.

use std::thread::JoinHandle;

use crate::status::{Failure, REPCONV_ERR_THREADS, Res};

/// A rayon pool whose worker threads are joined on drop.
#[derive(Debug)]
struct Pool {
    pool: Option<rayon::ThreadPool>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    fn new(n: usize) -> Res<Pool> {
        let mut workers = Vec::with_capacity(n);
        let built = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("repconv-{i}"))
            .spawn_handler(|thread| {
                let mut builder = std::thread::Builder::new();
                if let Some(name) = thread.name() {
                    builder = builder.name(name.to_owned());
                }
                if let Some(size) = thread.stack_size() {
                    builder = builder.stack_size(size);
                }
                workers.push(builder.spawn(|| thread.run())?);
                Ok(())
            })
            .build();
        match built {
            Ok(pool) => Ok(Pool { pool: Some(pool), workers }),
            Err(e) => {
                // Rayon terminates the workers it did start; join them.
                drop(Pool { pool: None, workers });
                Err(Failure::new(
                    REPCONV_ERR_THREADS,
                    format!("threads: cannot start {n} worker threads: {e}"),
                ))
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Dropping the pool tells its workers to exit once idle.
        drop(self.pool.take());
        for worker in self.workers.drain(..) {
            // A worker that panicked has exited too; nothing to report.
            let _ = worker.join();
        }
    }
}

/// A handle's threads.
#[derive(Debug, Default)]
pub(crate) struct Threads {
    pool: Option<Pool>,
}

impl Threads {
    /// `0`: no pool of its own (the global one); `n >= 1`: a private pool of
    /// `n` workers, replacing (and joining) any previous one.
    pub(crate) fn set(&mut self, n: usize) -> Res {
        /// The largest thread count accepted (documented in the header).
        const MAX: usize = 1024;
        if n > MAX {
            return Err(Failure::invalid(format!("threads: at most {MAX}, got {n}")));
        }
        self.pool = None;
        if n > 0 {
            self.pool = Some(Pool::new(n)?);
        }
        Ok(())
    }

    fn private(&self) -> Option<&rayon::ThreadPool> {
        self.pool.as_ref().and_then(|p| p.pool.as_ref())
    }

    /// What `set` was given: 0 for the global pool.
    pub(crate) fn setting(&self) -> usize {
        self.private().map_or(0, rayon::ThreadPool::current_num_threads)
    }

    /// The number of threads a forward pass runs on: the private pool's, or
    /// the global pool's (as seen from the calling thread).
    pub(crate) fn count(&self) -> usize {
        self.private().map_or_else(rayon::current_num_threads, |p| p.current_num_threads())
    }

    /// Runs `f` inside the private pool (the calling thread waits), or on
    /// the calling thread, whose parallel tiles go to the global pool.
    pub(crate) fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match self.private() {
            Some(pool) => pool.install(f),
            None => f(),
        }
    }

    /// A new `Threads` with the same setting (its own pool).
    pub(crate) fn duplicate(&self) -> Res<Threads> {
        let mut t = Threads::default();
        t.set(self.setting())?;
        Ok(t)
    }
}
