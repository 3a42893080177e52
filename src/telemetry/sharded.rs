//! Metrics that every request updates, kept apart per worker thread.
//!
//! prometheus-client's `Histogram` takes a write lock on every observation
//! and its `Counter` is one atomic: with every worker updating the same
//! ones for each request, their cache lines travel between cores on every
//! request. Here each worker (`proxy::pool::shard`) adds to a slot of its
//! own, on its own cache line, and the exposition sums the slots.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Slots per metric: workers beyond this share slots (still correct, since
/// every update is an atomic add).
const SLOTS: usize = 8;

/// A slot alone on its cache line (128 bytes: adjacent-line prefetch pairs
/// 64-byte lines on x86).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

fn slot() -> usize {
    crate::proxy::pool::shard() % SLOTS
}

/// A monotonic counter, one slot per worker.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<[Padded<AtomicU64>; SLOTS]>);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0[slot()].0.fetch_add(1, Ordering::Relaxed);
    }

    /// The total over every slot.
    pub fn get(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

impl TypedMetric for Counter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for Counter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }
    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Buckets a histogram may have, `+Inf` included: the shares are fixed
/// arrays, so that each lies whole on cache lines of its own (a boxed slice
/// per share would put two workers' buckets side by side in the heap).
const MAX_BUCKETS: usize = 31;

/// One worker's share of a histogram: the sum in nanoseconds (an integer,
/// so it is one atomic add) and per-bucket counts (the count is their sum).
#[derive(Debug, Default)]
struct Share {
    sum_nanos: AtomicU64,
    buckets: [AtomicU64; MAX_BUCKETS],
}

/// A histogram of durations in seconds, one share per worker.
#[derive(Debug, Clone)]
pub struct Histogram {
    /// Upper bounds, ascending, the last `f64::MAX` (`+Inf`).
    bounds: Arc<[f64]>,
    shares: Arc<[Padded<Share>]>,
}

impl Histogram {
    /// A histogram with `bounds` (ascending, at most 30) and `+Inf`.
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Self {
        let bounds: Arc<[f64]> = bounds
            .into_iter()
            .chain(std::iter::once(f64::MAX))
            .collect();
        assert!(bounds.len() <= MAX_BUCKETS, "at most {MAX_BUCKETS} buckets");
        let shares = (0..SLOTS).map(|_| Padded::default()).collect();
        Self { bounds, shares }
    }

    /// Records one duration of `seconds`.
    pub fn observe(&self, seconds: f64) {
        let share = &self.shares[slot()].0;
        // `as` saturates: a negative or NaN duration counts as 0 ns.
        share
            .sum_nanos
            .fetch_add((seconds * 1e9) as u64, Ordering::Relaxed);
        let bucket = self
            .bounds
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(self.bounds.len() - 1);
        share.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// (sum in seconds, count, per-bucket counts) over every share.
    fn totals(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut buckets: Vec<(f64, u64)> = self.bounds.iter().map(|b| (*b, 0)).collect();
        let mut nanos = 0u64;
        for share in self.shares.iter() {
            nanos = nanos.wrapping_add(share.0.sum_nanos.load(Ordering::Relaxed));
            for (total, n) in buckets.iter_mut().zip(share.0.buckets.iter()) {
                total.1 += n.load(Ordering::Relaxed);
            }
        }
        let count = buckets.iter().map(|(_, n)| n).sum();
        (nanos as f64 / 1e9, count, buckets)
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.totals();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }
    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_from_every_thread_add_up() {
        let histogram = Histogram::new([0.001, 0.01]);
        let counter = Counter::default();
        std::thread::scope(|s| {
            for worker in 0..(SLOTS + 3) {
                let (h, c) = (histogram.clone(), counter.clone());
                s.spawn(move || {
                    crate::proxy::pool::set_shard(worker);
                    for _ in 0..100 {
                        h.observe(0.005);
                        c.inc();
                    }
                });
            }
        });
        histogram.observe(5.0);
        let (sum, count, buckets) = histogram.totals();
        let n = (SLOTS as u64 + 3) * 100;
        assert_eq!(count, n + 1);
        assert_eq!(counter.get(), n);
        assert_eq!(buckets, vec![(0.001, 0), (0.01, n), (f64::MAX, 1)]);
        assert!((sum - (n as f64 * 0.005 + 5.0)).abs() < 1e-6, "{sum}");
    }
}
