//! Worker threads per handle: the bindings' default pool, shared by every
//! handle left at setting 0, or a private rayon pool of `n` threads that the
//! handle's forward passes run inside.
//!
//! The setting can change while forward passes run on the handle: each pass
//! holds its own reference (an `Arc`) to the pool it started on, so
//! `*_set_threads` only swaps the handle's reference, and a replaced pool
//! lives until the last pass running on it returns. A private pool's threads
//! are joined when its last reference goes (in `*_set_threads`, in
//! `*_destroy`, or at the end of the last pass that used it), so once no
//! call is running no thread of the handle's is left: a host may then unload
//! the library, and valgrind sees no thread-local blocks of
//! exited-but-unjoined threads.
//!
//! The default pool is the bindings' own, not rayon's global one, so that
//! its size is bounded like a private pool's: RAYON_NUM_THREADS (as rayon
//! reads it) up to [`MAX_THREADS`], an error above that, else one thread per
//! CPU up to [`MAX_THREADS`]. It is made on first use and lives as long as
//! the process.

use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use crate::status::{Failure, REPCONV_ERR_THREADS, Res};

/// The largest thread count of any pool (documented in the header).
pub(crate) const MAX_THREADS: usize = 1024;

/// The environment variable that sizes the default pool, as it sizes
/// rayon's global one.
const POOL_ENV: &str = "RAYON_NUM_THREADS";

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

    /// Its worker count.
    fn size(&self) -> usize {
        self.workers.len()
    }

    /// Runs `f` inside the pool; the calling thread waits.
    fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(pool) => pool.install(f),
            // Only a pool being dropped has none, and nothing runs on it.
            None => f(),
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

/// The size of the default pool: RAYON_NUM_THREADS if it is a positive
/// integer (an error above [`MAX_THREADS`]), else one thread per CPU, at
/// most [`MAX_THREADS`]. Rayon ignores a value that is not a positive
/// integer, and so does this.
fn default_size() -> Res<usize> {
    let requested = std::env::var(POOL_ENV).ok().and_then(|v| v.trim().parse::<usize>().ok());
    match requested {
        Some(n) if n > MAX_THREADS => Err(Failure::new(
            REPCONV_ERR_THREADS,
            format!(
                "threads: {POOL_ENV}={n} asks the default pool for more than {MAX_THREADS} \
                 threads; lower it, or give the handle its own pool with *_set_threads"
            ),
        )),
        Some(n) if n > 0 => Ok(n),
        _ => Ok(std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_THREADS)),
    }
}

/// The default pool, made on first use. A failure (a RAYON_NUM_THREADS
/// above the limit, or threads the system refused) is returned and tried
/// again on the next call.
fn default_pool() -> Res<Arc<Pool>> {
    static DEFAULT: Mutex<Option<Arc<Pool>>> = Mutex::new(None);
    let mut slot = DEFAULT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(pool) = &*slot {
        return Ok(Arc::clone(pool));
    }
    let pool = Arc::new(Pool::new(default_size()?)?);
    *slot = Some(Arc::clone(&pool));
    Ok(pool)
}

/// A handle's threads: `None` for the default pool, or its private pool.
/// The lock is held only to read or swap the reference, never while a pass
/// runs, so setting the threads never waits for running passes and passes
/// never wait for each other.
#[derive(Debug, Default)]
pub(crate) struct Threads {
    private: Mutex<Option<Arc<Pool>>>,
}

impl Threads {
    fn private(&self) -> Option<Arc<Pool>> {
        self.private.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// `0`: the default pool; `n >= 1`: a private pool of `n` workers,
    /// replacing any previous one. Passes already running finish on the pool
    /// they started on; a replaced private pool's workers are joined when
    /// the last of them returns (here, if none is running). On failure the
    /// setting is unchanged.
    pub(crate) fn set(&self, n: usize) -> Res {
        if n > MAX_THREADS {
            return Err(Failure::invalid(format!("threads: at most {MAX_THREADS}, got {n}")));
        }
        let new = if n > 0 { Some(Arc::new(Pool::new(n)?)) } else { None };
        let old = std::mem::replace(
            &mut *self.private.lock().unwrap_or_else(PoisonError::into_inner),
            new,
        );
        // Outside the lock: this may join the old pool's workers.
        drop(old);
        Ok(())
    }

    /// What `set` was given last: 0 for the default pool.
    pub(crate) fn setting(&self) -> usize {
        self.private().map_or(0, |p| p.size())
    }

    /// The number of threads a forward pass runs on: the private pool's, or
    /// the default pool's (which this makes, if it is not there yet).
    pub(crate) fn count(&self) -> Res<usize> {
        match self.private() {
            Some(pool) => Ok(pool.size()),
            None => Ok(default_pool()?.size()),
        }
    }

    /// Runs `f` inside the handle's pool (private or default) while the
    /// calling thread waits. Fails only if the default pool cannot be made.
    pub(crate) fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> Res<R> {
        let pool = match self.private() {
            Some(pool) => pool,
            None => default_pool()?,
        };
        // `pool` keeps this pass's pool alive should `set` replace it
        // meanwhile; dropping it afterwards may join that pool's workers.
        Ok(pool.install(f))
    }

    /// A new `Threads` with the same setting (its own pool).
    pub(crate) fn duplicate(&self) -> Res<Threads> {
        let t = Threads::default();
        t.set(self.setting())?;
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_pool_lives_until_the_pass_on_it_returns() {
        let threads = Threads::default();
        threads.set(2).unwrap();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|s| {
            let pass = s.spawn(|| {
                threads
                    .run(move || {
                        started_tx.send(()).unwrap();
                        go_rx.recv().unwrap();
                        rayon::current_num_threads()
                    })
                    .unwrap()
            });
            started_rx.recv().unwrap();
            // The pass is inside the 2-thread pool: replace it.
            threads.set(3).unwrap();
            assert_eq!(threads.setting(), 3);
            go_tx.send(()).unwrap();
            assert_eq!(pass.join().unwrap(), 2, "the pass finished on the pool it started on");
        });
        assert_eq!(threads.run(rayon::current_num_threads).unwrap(), 3);
    }
}
