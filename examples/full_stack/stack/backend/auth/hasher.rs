//! The password-hashing pool: Argon2id verifications run on a few dedicated threads,
//! with a short queue, and beyond it are refused at once.
//!
//! Each verification needs its memory cost (19 MiB by default); run without a bound,
//! 32 parallel logins took 600 MiB. Here at most `workers` hashes run at once (one per
//! core by default) and at most `queue` more wait; a login past that is answered
//! `503 overloaded` immediately, holding no memory and no thread. Each thread keeps one
//! Argon2 memory buffer and reuses it (see [`BLOCKS`]), so the pool's memory is about
//! `workers` × the memory cost, for good, whatever the load.
//!
//! The pool checks PHC strings and knows nothing of where users live.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use std::cell::RefCell;

use anyhow::Context;
use argon2::password_hash::{Output, PasswordHash};
use argon2::{Algorithm, Argon2, Block, Params, Version};
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

    /// Check `password` against the PHC string `hash` on the pool. `Ok(Some(false))`
    /// for a wrong password or an unreadable hash; `Ok(None)` if the check panicked.
    pub async fn verify(&self, hash: String, password: String) -> Result<Option<bool>, Overloaded> {
        let check = self.try_run(move || verify_phc(password.as_bytes(), &hash))?;
        Ok(check.await)
    }
}

/// The largest Argon2 memory cost a stored hash may ask for (256 MiB): a hash asking more
/// is refused rather than allowed to grow a hashing thread's memory.
pub const MAX_HASH_MEMORY_KIB: usize = 256 * 1024;

thread_local! {
    /// The Argon2 memory of this hashing thread, reused by every check it runs.
    ///
    /// `Argon2::verify_password` allocates its memory (64-byte aligned) for each check;
    /// glibc then keeps each freed 19 MiB buffer instead of reusing it, and RSS grew by
    /// 19 MiB per login up to ~330 MiB even with two threads. Reused memory costs each
    /// thread its memory cost once, for good. (Stale contents do not matter: Argon2's
    /// first pass writes every block before any block is read.)
    static BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// What `PasswordVerifier::verify_password` does for Argon2 PHC strings, with this
/// thread's reusable memory: the algorithm, version, costs, salt and output length of
/// `phc`, and a constant-time comparison of the outputs.
fn verify_phc(password: &[u8], phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(version), Ok(params)) = (
        Algorithm::try_from(hash.algorithm),
        hash.version
            .map(Version::try_from)
            .transpose()
            .map(Option::unwrap_or_default),
        Params::try_from(&hash),
    ) else {
        return false;
    };
    let blocks_needed = params.block_count();
    if blocks_needed > MAX_HASH_MEMORY_KIB {
        tracing::error!(
            memory_kib = blocks_needed,
            "a stored password hash asks for more memory than allowed; refused"
        );
        return false;
    }
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let mut out = [0u8; 64];
    let Some(out) = out.get_mut(..expected.len()) else {
        return false;
    };
    let argon2 = Argon2::new(algorithm, version, params);
    let hashed = BLOCKS.with_borrow_mut(|blocks| {
        if blocks.len() < blocks_needed {
            blocks.resize(blocks_needed, Block::new());
        }
        argon2
            .hash_password_into_with_memory(password, salt, out, &mut blocks[..blocks_needed])
            .is_ok()
    });
    // `Output`'s equality is constant-time.
    hashed && Output::new(out).is_ok_and(|computed| computed == expected)
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

    fn phc(params: Params, version: Version, password: &[u8]) -> String {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let argon2 = Argon2::new(Algorithm::Argon2id, version, params);
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        argon2.hash_password(password, &salt).unwrap().to_string()
    }

    #[tokio::test]
    async fn verifies_phc_strings_like_the_argon2_crate_with_reused_memory() {
        use argon2::password_hash::PasswordVerifier;
        // One thread, so every check reuses (and dirties) the same memory, and the
        // costs change from hash to hash (the memory grows, then is used in part).
        let pool = HashingPool::new(1, 8).unwrap();
        let cases = [
            (Params::new(2048, 1, 1, None).unwrap(), Version::V0x13),
            (Params::new(1024, 2, 1, None).unwrap(), Version::V0x13),
            (Params::new(1024, 1, 2, Some(16)).unwrap(), Version::V0x10),
        ];
        for (params, version) in cases.clone() {
            let hash = phc(params, version, b"right");
            for password in ["right", "wrong", ""] {
                let parsed = PasswordHash::new(&hash).unwrap();
                let expected = Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok();
                let got = pool.verify(hash.clone(), password.to_owned()).await;
                assert_eq!(got, Ok(Some(expected)), "{hash} {password}");
            }
        }
        assert_eq!(
            pool.verify(
                phc(cases[0].0.clone(), Version::V0x13, b"right"),
                "right".into()
            )
            .await,
            Ok(Some(true))
        );
    }

    #[tokio::test]
    async fn unreadable_or_oversized_hashes_never_match() {
        let pool = HashingPool::new(1, 8).unwrap();
        let good = phc(Params::new(1024, 1, 1, None).unwrap(), Version::V0x13, b"x");
        let too_big = good.replace("m=1024", "m=4194304");
        let unknown_param = good.replace("m=1024,", "m=1024,q=1,");
        let no_hash = good.rsplit_once('$').unwrap().0.to_owned();
        for hash in ["not a hash", "", &too_big, &unknown_param, &no_hash] {
            assert_eq!(
                pool.verify(hash.to_owned(), "x".into()).await,
                Ok(Some(false)),
                "{hash}"
            );
        }
        assert_eq!(pool.verify(good, "x".into()).await, Ok(Some(true)));
    }
}
