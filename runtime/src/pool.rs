//! A persistent thread pool: `run(n, f)` splits `0..n` into contiguous near-equal chunks
//! and calls `f(begin, end, worker)` for each on its own thread, the caller doing chunk 0.
//!
//! Workers spin briefly for the next job, then sleep on a condition variable, so a stream
//! of small kernels does not pay a wake-up each and an idle pool burns no CPU. Only std.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::error::RuntimeError;

/// The task of one `run`: `f` borrowed from the caller, who waits until every chunk is done.
type Task<'a> = dyn Fn(i64, i64, usize) + Sync + 'a;

#[derive(Clone, Copy)]
struct Job {
    /// Valid while the `run` that published it has not returned.
    f: *const Task<'static>,
    n: i64,
    chunks: usize,
}

// SAFETY: `f` points at a `Sync` closure that outlives the job (the publishing `run` waits
// for every chunk before returning).
unsafe impl Send for Job {}

struct State {
    job: Option<Job>,
    shutdown: bool,
    panic: Option<String>,
}

struct Shared {
    state: Mutex<State>,
    /// Bumped (under the lock) for each job and for shutdown.
    generation: AtomicU64,
    /// Chunks of the current job still running on workers.
    remaining: AtomicUsize,
    wake: Condvar,
    done: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic never happens while the lock is held (tasks run outside it), but be safe.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Polls before sleeping: long enough to catch the next kernel of a run. After the first
/// few polls each one yields, so that a waiting thread gives its core to the one it waits
/// for when there are more threads than free cores.
const SPIN: u32 = 2_000;
const SPIN_HOT: u32 = 64;

/// One poll of a wait loop.
fn pause(spins: u32) {
    if spins < SPIN_HOT {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// A fixed set of worker threads (`threads - 1` of them: the caller is worker 0).
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Serializes concurrent callers of `run`.
    running: Mutex<()>,
}

impl Pool {
    /// A pool of `threads` workers including the caller (at least 1). Should the system
    /// refuse a thread, the pool has fewer; [`Pool::threads`] says how many.
    pub fn new(threads: usize) -> Pool {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                job: None,
                shutdown: false,
                panic: None,
            }),
            generation: AtomicU64::new(0),
            remaining: AtomicUsize::new(0),
            wake: Condvar::new(),
            done: Condvar::new(),
        });
        let mut workers = Vec::new();
        for index in 1..threads.max(1) {
            let s = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(format!("arch-pool-{index}"))
                .spawn(move || worker(&s, index));
            match spawned {
                Ok(h) => workers.push(h),
                Err(_) => break,
            }
        }
        Pool {
            shared,
            workers,
            running: Mutex::new(()),
        }
    }

    /// Number of workers, the caller included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Calls `f(begin, end, worker)` on `min(threads, n)` contiguous near-equal chunks of
    /// `0..n` at once (chunk `i` on worker `i`, chunk 0 on the calling thread) and returns
    /// when all are done. A panic in `f` is caught and returned as an error after every
    /// chunk has finished. `f` must not call `run` on the same pool.
    pub fn run(&self, n: i64, f: &(dyn Fn(i64, i64, usize) + Sync)) -> Result<(), RuntimeError> {
        if n <= 0 {
            return Ok(());
        }
        let chunks = self.threads().min(usize::try_from(n).unwrap_or(usize::MAX));
        if chunks == 1 {
            return catch_unwind(AssertUnwindSafe(|| f(0, n, 0)))
                .map_err(|p| RuntimeError::Kernel(panic_message(&p)));
        }
        let _serial = self.running.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: erase the borrow's lifetime; `f` outlives the job because this function
        // waits below for `remaining == 0`, after which no worker touches it.
        let f_static: *const Task<'static> =
            unsafe { std::mem::transmute::<&Task<'_>, &Task<'static>>(f) };
        {
            let mut st = self.shared.lock();
            st.panic = None;
            st.job = Some(Job {
                f: f_static,
                n,
                chunks,
            });
            self.shared.remaining.store(chunks - 1, Ordering::SeqCst);
            self.shared.generation.fetch_add(1, Ordering::SeqCst);
        }
        self.shared.wake.notify_all();

        let (b, e) = chunk(n, chunks, 0);
        let mine = catch_unwind(AssertUnwindSafe(|| f(b, e, 0)));

        let mut spins = 0;
        while self.shared.remaining.load(Ordering::Acquire) != 0 && spins < SPIN {
            pause(spins);
            spins += 1;
        }
        let mut st = self.shared.lock();
        while self.shared.remaining.load(Ordering::Acquire) != 0 {
            st = self.shared.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.job = None;
        let theirs = st.panic.take();
        drop(st);
        match (mine, theirs) {
            (Err(p), _) => Err(RuntimeError::Kernel(panic_message(&p))),
            (Ok(()), Some(m)) => Err(RuntimeError::Kernel(m)),
            (Ok(()), None) => Ok(()),
        }
    }
}

/// Chunk `i` of `k` near-equal contiguous chunks of `0..n` (the first `n % k` one longer).
fn chunk(n: i64, k: usize, i: usize) -> (i64, i64) {
    let (k, i) = (k as i64, i as i64);
    let (base, rem) = (n / k, n % k);
    let begin = i * base + i.min(rem);
    let end = begin + base + i64::from(i < rem);
    (begin, end)
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    let what = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("a task panicked: {what}")
}

fn worker(s: &Shared, index: usize) {
    let mut seen = 0u64;
    loop {
        let mut spins = 0;
        while s.generation.load(Ordering::Acquire) == seen && spins < SPIN {
            pause(spins);
            spins += 1;
        }
        let job = {
            let mut st = s.lock();
            while s.generation.load(Ordering::Acquire) == seen && !st.shutdown {
                st = s.wake.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            if st.shutdown {
                return;
            }
            seen = s.generation.load(Ordering::Acquire);
            st.job
        };
        let Some(job) = job else { continue };
        if index >= job.chunks {
            continue;
        }
        let (b, e) = chunk(job.n, job.chunks, index);
        // SAFETY: the publishing `run` is waiting for this chunk (see `Job::f`).
        let f = unsafe { &*job.f };
        let result = catch_unwind(AssertUnwindSafe(|| f(b, e, index)));
        if let Err(p) = result {
            let mut st = s.lock();
            st.panic.get_or_insert_with(|| panic_message(&p));
        }
        if s.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Take the lock so the caller is either before its check or waiting.
            let _st = s.lock();
            s.done.notify_all();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        {
            let mut st = self.shared.lock();
            st.shutdown = true;
            self.shared.generation.fetch_add(1, Ordering::SeqCst);
        }
        self.shared.wake.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("threads", &self.threads())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicI64;

    #[test]
    fn chunks_cover_the_range_in_order() {
        for n in [1i64, 2, 3, 7, 100, 101] {
            for k in 1..=4usize.min(n as usize) {
                let mut next = 0;
                for i in 0..k {
                    let (b, e) = chunk(n, k, i);
                    assert_eq!(b, next);
                    assert!(e > b && e - b <= n / k as i64 + 1);
                    next = e;
                }
                assert_eq!(next, n);
            }
        }
    }

    #[test]
    fn sums_are_identical_for_every_thread_count() {
        let n = 100_003i64;
        let mut sums = Vec::new();
        for threads in 1..=4 {
            let pool = Pool::new(threads);
            assert_eq!(pool.threads(), threads);
            let total = AtomicI64::new(0);
            let used = Mutex::new(Vec::new());
            pool.run(n, &|b, e, w| {
                total.fetch_add((b..e).map(|i| i * i % 7).sum::<i64>(), Ordering::Relaxed);
                used.lock().unwrap().push((w, b, e));
            })
            .unwrap();
            let mut used = used.into_inner().unwrap();
            used.sort();
            assert_eq!(used.len(), threads);
            assert!(used.iter().enumerate().all(|(i, u)| u.0 == i));
            sums.push(total.into_inner());
        }
        assert!(sums.windows(2).all(|w| w[0] == w[1]), "{sums:?}");
    }

    #[test]
    fn many_tiny_runs_complete_quickly() {
        let pool = Pool::new(3);
        let count = AtomicI64::new(0);
        let start = std::time::Instant::now();
        for _ in 0..10_000 {
            pool.run(3, &|b, e, _| {
                count.fetch_add(e - b, Ordering::Relaxed);
            })
            .unwrap();
        }
        assert_eq!(count.into_inner(), 30_000);
        assert!(start.elapsed().as_secs() < 20, "{:?}", start.elapsed());
        // Small ranges use fewer workers; zero is a no-op.
        let seen = Mutex::new(Vec::new());
        pool.run(2, &|b, e, w| seen.lock().unwrap().push((w, b, e)))
            .unwrap();
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        assert_eq!(seen, [(0, 0, 1), (1, 1, 2)]);
        pool.run(0, &|_, _, _| panic!("not called")).unwrap();
    }

    #[test]
    fn a_panicking_task_is_an_error_not_a_deadlock() {
        let pool = Pool::new(3);
        let err = pool
            .run(9, &|b, _, _| {
                if b >= 3 {
                    panic!("chunk at {b}");
                }
            })
            .unwrap_err();
        assert!(err.to_string().contains("chunk at"), "{err}");
        let err = pool.run(9, &|_, _, w| assert_ne!(w, 0)).unwrap_err();
        assert!(matches!(err, RuntimeError::Kernel(_)));
        // The pool still works afterwards.
        let total = AtomicI64::new(0);
        pool.run(9, &|b, e, _| {
            total.fetch_add(e - b, Ordering::Relaxed);
        })
        .unwrap();
        assert_eq!(total.into_inner(), 9);
    }
}
