//! The password-hashing pool: Argon2id verifications run on a few dedicated threads,
//! with a short queue, and beyond it are refused at once.
//!
//! Each verification allocates its memory cost (19 MiB by default); run without a bound,
//! 32 parallel logins took 600 MiB. Here at most `workers` hashes run at once (one per
//! core by default) and at most `queue` more wait; a login past that is answered
//! `503 overloaded` immediately, holding no memory and no thread. Dedicated threads
//! (not tokio's blocking pool, which grows to hundreds of threads) also keep the
//! allocator's per-thread arenas, and so the memory the hashes retain, to `workers`.
//!
//! The pool checks PHC strings and knows nothing of where users live.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordVerifier};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// A job refused because the pool and its queue are full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded;

impl std::fmt::Display for Overloaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the password-hashing pool is full")
    }
}

impl std::error::Error for Overloaded {}

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of hashing threads behind an admission semaphore of `workers + queue`
/// permits. A permit is taken before a job is queued and released when it has run,
/// so refusing is immediate and needs no timing.
#[derive(Debug)]
pub struct HashingPool {
    jobs: mpsc::Sender<Job>,
    admission: Arc<Semaphore>,
}

impl HashingPool {
    /// `workers` threads (at least 1) and room for `queue` waiting jobs. The threads
    /// end when the pool is dropped.
    pub fn new(workers: usize, queue: usize) -> anyhow::Result<Self> {
        let workers = workers.max(1);
        let (jobs, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..workers {
            let receiver = Arc::clone(&receiver);
            std::thread::Builder::new()
                .name(format!("login-hash-{i}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for the next job.
                        let job = receiver.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok(job) = job else { break };
                        // A panicking job (a bug) must not take the thread with it.
                        if std::panic::catch_unwind(AssertUnwindSafe(job)).is_err() {
                            tracing::error!("a password-hashing job panicked");
                        }
                    }
                })
                .context("starting a password-hashing thread")?;
        }
        Ok(Self {
            jobs,
            admission: Arc::new(Semaphore::new(workers + queue)),
        })
    }

    /// One thread per core (`std::thread::available_parallelism`).
    pub fn default_workers() -> usize {
        std::thread::available_parallelism().map_or(1, usize::from)
    }

    /// Four waiting jobs per thread: a queued login waits at most about five hash times.
    pub fn default_queue(workers: usize) -> usize {
        workers.max(1) * 4
    }

    /// Run `job` on the pool, or refuse it now when `workers + queue` jobs are in.
    /// The returned future gives `None` if the job panicked. A job whose caller has
    /// gone away (the future was dropped) before it starts is skipped.
    pub fn try_run<T, F>(
        &self,
        job: F,
    ) -> Result<impl Future<Output = Option<T>> + Send + use<T, F>, Overloaded>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let permit = Arc::clone(&self.admission)
            .try_acquire_owned()
            .map_err(|_| Overloaded)?;
        let (reply, answer) = oneshot::channel();
        let wrapped: Job = Box::new(move || {
            let permit: OwnedSemaphorePermit = permit;
            if reply.is_closed() {
                return;
            }
            let value = job();
            // The place is free before the caller hears back, so a caller that
            // answers and retries finds it free.
            drop(permit);
            let _ = reply.send(value);
        });
        // The threads live as long as the pool (they hold only the receiver), so a
        // send cannot fail while `self` exists; if it did, the job's permit goes with it.
        self.jobs.send(wrapped).map_err(|_| Overloaded)?;
        Ok(async move { answer.await.ok() })
    }

    /// Check `password` against the PHC string `hash` on the pool. `Ok(false)` for a
    /// wrong password or an unreadable hash.
    pub async fn verify(
        &self,
        argon2: &Argon2<'static>,
        hash: String,
        password: String,
    ) -> Result<Option<bool>, Overloaded> {
        let argon2 = argon2.clone();
        let check = self.try_run(move || {
            PasswordHash::new(&hash)
                .map(|parsed| argon2.verify_password(password.as_bytes(), &parsed).is_ok())
                .unwrap_or(false)
        })?;
        Ok(check.await)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A job that runs until `release` fires.
    fn blocker(pool: &HashingPool) -> (mpsc::Sender<()>, impl Future<Output = Option<()>>) {
        let (release, wait) = mpsc::channel::<()>();
        let done = pool
            .try_run(move || {
                let _ = wait.recv();
            })
            .expect("room in the pool");
        (release, done)
    }

    #[tokio::test(start_paused = true)]
    async fn beyond_workers_and_queue_jobs_are_refused_at_once() {
        let pool = HashingPool::new(1, 1).unwrap();
        let (release_running, running) = blocker(&pool);
        let (release_queued, queued) = blocker(&pool);
        // The third is refused synchronously: no waiting, no timing.
        assert_eq!(pool.try_run(|| ()).err(), Some(Overloaded));
        release_running.send(()).unwrap();
        release_queued.send(()).unwrap();
        assert_eq!(running.await, Some(()));
        assert_eq!(queued.await, Some(()));
        // Room again once they are done.
        assert_eq!(pool.try_run(|| 7).unwrap().await, Some(7));
    }

    #[tokio::test]
    async fn a_dropped_caller_frees_its_place() {
        let pool = HashingPool::new(1, 0).unwrap();
        let (release, running) = blocker(&pool);
        drop(running);
        release.send(()).unwrap();
        // The permit is released by the worker once the job ends; poll until it is.
        let answer = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Ok(run) = pool.try_run(|| 1) {
                    return run.await;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the place is freed");
        assert_eq!(answer, Some(1));
    }

    #[tokio::test]
    async fn a_panicking_job_answers_none_and_keeps_the_thread() {
        let pool = HashingPool::new(1, 0).unwrap();
        let panicked = pool.try_run(|| -> u8 { panic!("boom") }).unwrap().await;
        assert_eq!(panicked, None);
        let mut answer = None;
        while answer.is_none() {
            if let Ok(run) = pool.try_run(|| 2) {
                answer = run.await;
            } else {
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(answer, Some(2));
    }

    #[tokio::test]
    async fn verifies_phc_strings() {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let argon2 = Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(1024, 1, 1, None).unwrap(),
        );
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let hash = argon2.hash_password(b"right", &salt).unwrap().to_string();
        let pool = HashingPool::new(1, 2).unwrap();
        let verify = |password: &str| pool.verify(&argon2, hash.clone(), password.to_owned());
        assert_eq!(verify("right").await, Ok(Some(true)));
        assert_eq!(verify("wrong").await, Ok(Some(false)));
        let garbage = pool.verify(&argon2, "not a hash".into(), "x".into()).await;
        assert_eq!(garbage, Ok(Some(false)));
    }
}
