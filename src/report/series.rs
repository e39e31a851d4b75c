//! A run's requests over time, bucketed: requests per second, retries, 429s and
//! timeouts per bucket, and latency percentiles. Fed one attempt at a time, so a run of
//! millions of requests costs a fixed number of buckets plus one latency per request.
//! Knows nothing of SQL or of drawing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::domain::RowStatus;
use crate::ledger::{AttemptPoint, CustomerRows};

/// Buckets a chart shows at most: enough for shape, few enough to stay small.
pub const MAX_BUCKETS: usize = 120;

/// One bucket of time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Bucket {
    pub requests: u64,
    pub retries: u64,
    pub throttled: u64,
    pub timeouts: u64,
    pub server_errors: u64,
}

/// The requests of a run, bucketed.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// Milliseconds since the epoch of the first request.
    pub start_ms: i64,
    /// The width of a bucket, in milliseconds.
    pub width_ms: i64,
    pub buckets: Vec<Bucket>,
    pub total: Bucket,
    /// Latency percentiles in milliseconds: p50, p90, p95, p99, max.
    pub latency: Option<[i64; 5]>,
}

/// Collects attempts; [`Collector::finish`] buckets them.
#[derive(Default)]
pub struct Collector {
    /// (ms since epoch, kind bits) per attempt, in arrival order.
    points: Vec<(i64, u8)>,
    latencies: Vec<i64>,
    seen: HashSet<(bool, i64)>,
}

const RETRY: u8 = 1;
const THROTTLED: u8 = 2;
const TIMEOUT: u8 = 4;
const SERVER: u8 = 8;

impl Collector {
    pub fn add(&mut self, a: AttemptPoint<'_>) {
        let Some(ms) = parse_ms(a.at) else { return };
        let mut kind = 0;
        if !self.seen.insert((a.action, a.key)) {
            kind |= RETRY;
        }
        kind |= match a.class {
            "429" => THROTTLED,
            "timeout" => TIMEOUT,
            "5xx" => SERVER,
            _ => 0,
        };
        self.points.push((ms, kind));
        self.latencies.push(a.latency_ms.max(0));
    }

    /// Whether invitation `id` had a request in the attempts collected so far.
    pub fn attempted(&self, id: i64) -> bool {
        self.seen.contains(&(false, id))
    }

    pub fn finish(mut self) -> Timeline {
        let Some(start) = self.points.iter().map(|p| p.0).min() else {
            return Timeline::default();
        };
        let end = self.points.iter().map(|p| p.0).max().unwrap_or(start);
        let span = (end - start).max(1);
        // Whole seconds, so a bucket's count over its width is requests per second.
        let span = span as u64;
        let width_ms = (span.div_ceil(MAX_BUCKETS as u64).div_ceil(1000).max(1) * 1000) as i64;
        let span = span as i64;
        let n = (span / width_ms + 1) as usize;
        let mut buckets = vec![Bucket::default(); n];
        let mut total = Bucket::default();
        for (ms, kind) in &self.points {
            let i = (((ms - start) / width_ms) as usize).min(n - 1);
            for b in [&mut buckets[i], &mut total] {
                b.requests += 1;
                b.retries += u64::from(kind & RETRY != 0);
                b.throttled += u64::from(kind & THROTTLED != 0);
                b.timeouts += u64::from(kind & TIMEOUT != 0);
                b.server_errors += u64::from(kind & SERVER != 0);
            }
        }
        let latency = percentiles(&mut self.latencies);
        Timeline {
            start_ms: start,
            width_ms,
            buckets,
            total,
            latency,
        }
    }
}

/// A run's rows tallied in one pass: per status, per customer, sent and done before.
#[derive(Default)]
pub struct RowTally {
    per_customer: HashMap<Option<i64>, [u64; RowStatus::ALL.len()]>,
    /// Rows that ended invited or exists after a request of the run.
    pub sent: u64,
    /// Rows that ended invited or exists with no request of the run.
    pub already_done: u64,
}

impl RowTally {
    /// Counts one row; `attempted` says whether its invitation had a request this run.
    pub fn add(&mut self, customer: Option<i64>, status: &str, attempted: bool) {
        let Some(i) = RowStatus::ALL.iter().position(|s| s.as_str() == status) else {
            return;
        };
        self.per_customer
            .entry(customer)
            .or_insert([0; RowStatus::ALL.len()])[i] += 1;
        if matches!(RowStatus::ALL[i], RowStatus::Invited | RowStatus::Exists) {
            if attempted {
                self.sent += 1;
            } else {
                self.already_done += 1;
            }
        }
    }

    /// Rows per status over all customers.
    pub fn statuses(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for counts in self.per_customer.values() {
            for (s, n) in RowStatus::ALL.iter().zip(counts) {
                if *n > 0 {
                    *out.entry(s.as_str().to_string()).or_insert(0) += n;
                }
            }
        }
        out
    }

    /// The customers, most rows first (names left for the caller to fill in).
    pub fn customers(&self) -> Vec<CustomerRows> {
        let mut out: Vec<CustomerRows> = self
            .per_customer
            .iter()
            .map(|(id, counts)| CustomerRows {
                id: *id,
                name: None,
                statuses: RowStatus::ALL
                    .iter()
                    .zip(counts)
                    .filter(|(_, n)| **n > 0)
                    .map(|(s, n)| (s.as_str().to_string(), *n))
                    .collect(),
                total: counts.iter().sum(),
            })
            .collect();
        out.sort_by(|a, b| b.total.cmp(&a.total).then(a.id.cmp(&b.id)));
        out
    }
}

/// p50, p90, p95, p99 and the maximum, by nearest rank.
fn percentiles(v: &mut [i64]) -> Option<[i64; 5]> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let at = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    Some([at(0.50), at(0.90), at(0.95), at(0.99), v[v.len() - 1]])
}

/// RFC 3339 text as milliseconds since the epoch.
pub fn parse_ms(at: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(at.trim_end_matches('Z')).ok()?;
    let d = t.duration_since(UNIX_EPOCH).ok()?;
    Some(d.as_millis() as i64)
}

/// Milliseconds since the epoch as RFC 3339 text, to the second.
pub fn format_ms(ms: i64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Now, in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn point<'a>(key: i64, at: &'a str, class: &'a str, latency_ms: i64) -> AttemptPoint<'a> {
        AttemptPoint {
            key,
            action: false,
            at,
            latency_ms,
            class,
        }
    }

    #[test]
    fn attempts_land_in_whole_second_buckets_with_retries_counted() {
        let mut c = Collector::default();
        c.add(point(1, "2026-01-01T00:00:00.100Z", "429", 10));
        c.add(point(1, "2026-01-01T00:00:00.900Z", "ok", 20));
        c.add(point(2, "2026-01-01T00:00:02.500Z", "timeout", 30));
        c.add(point(3, "not a time", "ok", 40));
        let t = c.finish();
        assert_eq!(t.width_ms, 1000);
        assert_eq!(t.buckets.len(), 3);
        assert_eq!(t.buckets[0].requests, 2);
        assert_eq!(t.buckets[0].retries, 1);
        assert_eq!(t.buckets[0].throttled, 1);
        assert_eq!(t.buckets[2].timeouts, 1);
        assert_eq!(t.total.requests, 3);
        assert_eq!(t.latency, Some([20, 30, 30, 30, 30]));
    }

    #[test]
    fn rows_tally_per_customer_and_split_sent_from_done_before() {
        let mut t = RowTally::default();
        t.add(Some(1), "invited", true);
        t.add(Some(1), "invited", false);
        t.add(Some(2), "exists", true);
        t.add(None, "invalid", false);
        t.add(Some(2), "no such status", true);
        assert_eq!((t.sent, t.already_done), (2, 1));
        assert_eq!(t.statuses().get("invited"), Some(&2));
        let customers = t.customers();
        assert_eq!(customers[0].id, Some(1));
        assert_eq!(customers[0].total, 2);
        assert_eq!(customers.len(), 3);
    }

    #[test]
    fn a_long_run_keeps_at_most_the_bucket_limit() {
        let mut c = Collector::default();
        c.add(point(1, "2026-01-01T00:00:00Z", "ok", 1));
        c.add(point(2, "2026-01-01T10:00:00Z", "ok", 1));
        let t = c.finish();
        assert!(t.buckets.len() <= MAX_BUCKETS + 1, "{}", t.buckets.len());
        assert_eq!(t.width_ms % 1000, 0);
    }
}
