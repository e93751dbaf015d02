//! Sliding windows of recent outcomes.
//!
//! Both kinds record in O(1) without allocating and without locks, and both really
//! slide: an outcome leaves the count-based window when the N-th newer outcome arrives,
//! and leaves the time-based window when its bucket falls out of the span.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Which recent calls the failure and slow-call rates are computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlidingWindow {
    /// The last `n` recorded calls (ignored calls are not recorded).
    Count(u32),
    /// The calls of the last `span`, kept in `buckets` buckets of `span / buckets`
    /// each: the window slides one bucket at a time.
    Time {
        /// How far back the window reaches.
        span: Duration,
        /// The resolution of the slide.
        buckets: u32,
    },
}

impl SlidingWindow {
    /// The largest count-based window.
    pub const MAX_COUNT: u32 = 1 << 19;
    /// The largest number of buckets of a time-based window.
    pub const MAX_BUCKETS: u32 = 1024;

    /// A count-based window of the last `n` calls.
    #[must_use]
    pub const fn count(n: u32) -> Self {
        Self::Count(n)
    }

    /// A time-based window of `span`, in 10 buckets.
    #[must_use]
    pub const fn time(span: Duration) -> Self {
        Self::Time { span, buckets: 10 }
    }
}

impl Default for SlidingWindow {
    /// The last 100 calls.
    fn default() -> Self {
        Self::Count(100)
    }
}

/// Outcome counts of a window at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WindowCounts {
    /// Recorded calls (successes and failures; ignored calls are not recorded).
    pub calls: u32,
    /// Failed calls among them.
    pub failures: u32,
    /// Slow calls among them (successful or not).
    pub slow: u32,
}

impl WindowCounts {
    /// `failures / calls`, 0.0 for an empty window.
    #[must_use]
    pub fn failure_rate(&self) -> f64 {
        ratio(self.failures, self.calls)
    }

    /// `slow / calls`, 0.0 for an empty window.
    #[must_use]
    pub fn slow_rate(&self) -> f64 {
        ratio(self.slow, self.calls)
    }
}

fn ratio(part: u32, whole: u32) -> f64 {
    if whole == 0 {
        0.0
    } else {
        f64::from(part) / f64::from(whole)
    }
}

pub(crate) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    pub(crate) fn new(kind: SlidingWindow) -> Self {
        match kind {
            SlidingWindow::Count(n) => Self::Count(CountWindow::new(n)),
            SlidingWindow::Time { span, buckets } => Self::Time(TimeWindow::new(span, buckets)),
        }
    }

    /// Whether `record` and `counts` need the current time.
    pub(crate) fn needs_time(&self) -> bool {
        matches!(self, Self::Time(_))
    }

    /// Whether a success would leave the window unchanged (a count window already full
    /// of successes).
    #[inline(always)]
    pub(crate) fn is_full_of_successes(&self) -> bool {
        match self {
            Self::Count(w) => w.totals.load(Ordering::Relaxed) == u64::from(w.len),
            Self::Time(_) => false,
        }
    }

    #[inline]
    pub(crate) fn record(&self, failure: bool, slow: bool, now_ms: u64) {
        match self {
            Self::Count(w) => w.record(failure, slow),
            Self::Time(w) => w.record(failure, slow, now_ms),
        }
    }

    pub(crate) fn counts(&self, now_ms: u64) -> WindowCounts {
        match self {
            Self::Count(w) => w.counts(),
            Self::Time(w) => w.counts(now_ms),
        }
    }

    pub(crate) fn clear(&self) {
        match self {
            Self::Count(w) => w.clear(),
            Self::Time(w) => w.clear(),
        }
    }
}

/// A ring of the last N outcomes plus running totals.
///
/// Each slot holds one outcome; a recorder swaps its outcome into the next slot and
/// adds the difference between the new and the evicted outcome to one packed counter,
/// so the totals stay exact under any interleaving (transiently off by the deltas still
/// in flight, never drifting).
pub(crate) struct CountWindow {
    slots: Box<[AtomicU8]>,
    cursor: AtomicU32,
    /// `calls + failures << 21 + slow << 42`, as a wrapping signed sum.
    totals: AtomicU64,
    /// Lemire's fast-modulo constant for `slots.len()`.
    fastmod: u64,
    len: u32,
}

const RECORDED: u8 = 1;
const FAILED: u8 = 2;
const SLOW: u8 = 4;
const FIELD_BITS: u32 = 21;

impl CountWindow {
    fn new(n: u32) -> Self {
        let len = n.clamp(1, SlidingWindow::MAX_COUNT);
        Self {
            slots: (0..len).map(|_| AtomicU8::new(0)).collect(),
            cursor: AtomicU32::new(0),
            totals: AtomicU64::new(0),
            fastmod: (u64::MAX / u64::from(len)).wrapping_add(1),
            len,
        }
    }

    #[inline]
    fn slot_of(&self, cursor: u32) -> usize {
        let low = self.fastmod.wrapping_mul(u64::from(cursor));
        ((u128::from(low) * u128::from(self.len)) >> 64) as usize
    }

    #[inline]
    fn record(&self, failure: bool, slow: bool) {
        let new = RECORDED | if failure { FAILED } else { 0 } | if slow { SLOW } else { 0 };
        // A full window of successes stays the same multiset when a success evicts
        // one of them, whichever slot it lands in: the healthy steady state records
        // without any read-modify-write.
        if new == RECORDED && self.totals.load(Ordering::Relaxed) == u64::from(self.len) {
            return;
        }
        let index = self.slot_of(self.cursor.fetch_add(1, Ordering::Relaxed));
        let Some(slot) = self.slots.get(index) else {
            return;
        };
        // In the steady state the evicted outcome usually equals the new one: a plain
        // load then saves the read-modify-write (a racing recorder's swap still sees
        // and accounts for whatever this slot holds).
        if slot.load(Ordering::Relaxed) == new {
            return;
        }
        let old = slot.swap(new, Ordering::Relaxed);
        if old != new {
            let delta = weight(new).wrapping_sub(weight(old));
            self.totals.fetch_add(delta as u64, Ordering::Relaxed);
        }
    }

    fn counts(&self) -> WindowCounts {
        let v = self.totals.load(Ordering::Relaxed) as i64;
        let calls = sign_extend(v);
        let rest = v.wrapping_sub(calls) >> FIELD_BITS;
        let failures = sign_extend(rest);
        let slow = rest.wrapping_sub(failures) >> FIELD_BITS;
        WindowCounts {
            calls: clamp_count(calls),
            failures: clamp_count(failures),
            slow: clamp_count(slow),
        }
    }

    fn clear(&self) {
        for slot in &*self.slots {
            let old = slot.swap(0, Ordering::Relaxed);
            if old != 0 {
                self.totals
                    .fetch_add(weight(old).wrapping_neg() as u64, Ordering::Relaxed);
            }
        }
    }
}

#[inline]
fn weight(slot: u8) -> i64 {
    i64::from(slot & RECORDED)
        + (i64::from((slot & FAILED) >> 1) << FIELD_BITS)
        + (i64::from((slot & SLOW) >> 2) << (2 * FIELD_BITS))
}

#[inline]
fn sign_extend(v: i64) -> i64 {
    (v << (64 - FIELD_BITS)) >> (64 - FIELD_BITS)
}

fn clamp_count(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

/// Buckets of `width_ms`, each one packed word: `epoch:22 | calls:14 | failures:14 |
/// slow:14`. A bucket whose epoch is not the current one is stale and is reset by the
/// first recorder of the new epoch; readers only sum buckets of the last `len` epochs.
pub(crate) struct TimeWindow {
    buckets: Box<[AtomicU64]>,
    width_ms: u64,
    len: u64,
}

const EPOCH_BITS: u32 = 22;
const EPOCH_MASK: u64 = (1 << EPOCH_BITS) - 1;
const COUNT_BITS: u32 = 14;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;

impl TimeWindow {
    fn new(span: Duration, buckets: u32) -> Self {
        let len = buckets.clamp(1, SlidingWindow::MAX_BUCKETS);
        let span_ms = u64::try_from(span.as_millis()).unwrap_or(u64::MAX);
        Self {
            buckets: (0..len).map(|_| AtomicU64::new(0)).collect(),
            width_ms: (span_ms / u64::from(len)).max(1),
            len: u64::from(len),
        }
    }

    #[inline]
    fn record(&self, failure: bool, slow: bool, now_ms: u64) {
        let epoch = now_ms / self.width_ms;
        let Some(bucket) = self.buckets.get((epoch % self.len) as usize) else {
            return;
        };
        let epoch = epoch & EPOCH_MASK;
        let mut current = bucket.load(Ordering::Relaxed);
        loop {
            let (mut calls, mut failures, mut slows) = if unpack_epoch(current) == epoch {
                unpack_counts(current)
            } else {
                (0, 0, 0)
            };
            if calls == COUNT_MAX {
                // Saturated: halve all counts so the rates stay right (the bucket
                // then weighs its calls approximately, which only happens above
                // 16k calls per bucket).
                calls = calls.div_ceil(2);
                failures = failures.div_ceil(2);
                slows = slows.div_ceil(2);
            }
            let next = pack_bucket(
                epoch,
                calls + 1,
                failures + u64::from(failure),
                slows + u64::from(slow),
            );
            match bucket.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    fn counts(&self, now_ms: u64) -> WindowCounts {
        let now_epoch = (now_ms / self.width_ms) & EPOCH_MASK;
        let mut totals = WindowCounts::default();
        for bucket in &*self.buckets {
            let word = bucket.load(Ordering::Relaxed);
            let age = now_epoch.wrapping_sub(unpack_epoch(word)) & EPOCH_MASK;
            if age < self.len {
                let (calls, failures, slow) = unpack_counts(word);
                // Each count is below 2^14, so these fit easily.
                totals.calls += calls as u32;
                totals.failures += failures as u32;
                totals.slow += slow as u32;
            }
        }
        totals
    }

    fn clear(&self) {
        for bucket in &*self.buckets {
            bucket.store(0, Ordering::Relaxed);
        }
    }
}

fn pack_bucket(epoch: u64, calls: u64, failures: u64, slow: u64) -> u64 {
    (epoch << (3 * COUNT_BITS))
        | (calls << (2 * COUNT_BITS))
        | (failures.min(COUNT_MAX) << COUNT_BITS)
        | slow.min(COUNT_MAX)
}

fn unpack_epoch(word: u64) -> u64 {
    word >> (3 * COUNT_BITS)
}

fn unpack_counts(word: u64) -> (u64, u64, u64) {
    (
        (word >> (2 * COUNT_BITS)) & COUNT_MAX,
        (word >> COUNT_BITS) & COUNT_MAX,
        word & COUNT_MAX,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_window_slides() {
        let w = CountWindow::new(4);
        for _ in 0..4 {
            w.record(true, false);
        }
        assert_eq!(
            w.counts(),
            WindowCounts {
                calls: 4,
                failures: 4,
                slow: 0
            }
        );
        // Four successes push every failure out.
        for i in 0..4 {
            w.record(false, i % 2 == 0);
        }
        assert_eq!(
            w.counts(),
            WindowCounts {
                calls: 4,
                failures: 0,
                slow: 2
            }
        );
        w.clear();
        assert_eq!(w.counts(), WindowCounts::default());
    }

    #[test]
    fn count_window_totals_are_exact_under_threads() {
        let w = std::sync::Arc::new(CountWindow::new(64));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000 {
                        w.record((i + t) % 3 == 0, i % 5 == 0);
                    }
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().is_ok());
        }
        // Quiescent: the totals must equal the slots' contents exactly.
        let mut expected = WindowCounts::default();
        for slot in &*w.slots {
            let s = slot.load(Ordering::Relaxed);
            expected.calls += u32::from(s & RECORDED);
            expected.failures += u32::from((s & FAILED) >> 1);
            expected.slow += u32::from((s & SLOW) >> 2);
        }
        assert_eq!(w.counts(), expected);
        assert_eq!(expected.calls, 64);
    }

    #[test]
    fn fastmod_is_round_robin() {
        for len in [1_u32, 3, 7, 100, 1000] {
            let w = CountWindow::new(len);
            for c in 0..5000_u32 {
                assert_eq!(w.slot_of(c), (c % len) as usize);
            }
        }
    }

    #[test]
    fn time_window_expires_old_buckets() {
        let w = TimeWindow::new(Duration::from_secs(10), 10);
        w.record(true, false, 0);
        w.record(true, true, 500);
        w.record(false, false, 3_000);
        assert_eq!(
            w.counts(3_000),
            WindowCounts {
                calls: 3,
                failures: 2,
                slow: 1
            }
        );
        // At 10 s the bucket [0, 1 s) has left the window.
        assert_eq!(w.counts(10_000).calls, 1);
        assert_eq!(w.counts(13_999).calls, 0);
        // A recorder reusing the slot resets it.
        w.record(false, false, 10_100);
        assert_eq!(
            w.counts(10_100),
            WindowCounts {
                calls: 2,
                failures: 0,
                slow: 0
            }
        );
    }

    #[test]
    fn time_window_saturation_keeps_rates() {
        let w = TimeWindow::new(Duration::from_secs(1), 1);
        for i in 0..40_000_u32 {
            w.record(i % 4 == 0, false, 10);
        }
        let c = w.counts(10);
        assert!(c.calls <= COUNT_MAX as u32);
        assert!((c.failure_rate() - 0.25).abs() < 0.02, "{c:?}");
    }
}
