//! Bound instruments cached per attribute set (feature `experimental-bound-instruments`).
//!
//! Recording a histogram through the SDK hashes the attribute slice (SipHash) and takes
//! a read lock for every instrument. A request records up to three histograms with the
//! same attributes, and the attribute sets are few (method × status × route × …), so
//! this cache hashes the set once (with a fast hash), and records through handles bound
//! to it with opentelemetry's `experimental_metrics_bound_instruments` API.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{OnceLock, RwLock};

use opentelemetry::metrics::{BoundHistogram, Histogram};
use opentelemetry::{KeyValue, Value};

/// At most this many attribute sets are bound; others are recorded unbound. Far above
/// what a service with templated routes produces, and the SDK's own cardinality limit
/// (2000 by default) applies either way.
const MAX_BOUND_SETS: usize = 1024;

/// The handles of one attribute set. The size handles are bound on their first value:
/// binding creates the series, and a size that is never measured (no request body, or a
/// client that ends at the headers) must not show as an empty one.
struct BoundSet {
    duration: BoundHistogram<f64>,
    request_size: OnceLock<BoundHistogram<u64>>,
    response_size: OnceLock<BoundHistogram<u64>>,
}

/// The bound sets, by [`set_hash`]: a hash is almost always one set, but sets with equal
/// hashes are kept apart by [`same_set`].
#[derive(Default)]
struct Sets {
    by_hash: HashMap<u64, Vec<(Box<[KeyValue]>, BoundSet)>, BuildHasherDefault<PassThrough>>,
    /// How many sets `by_hash` holds.
    len: usize,
}

impl Sets {
    /// The bound set of `attrs`, whose [`set_hash`] is `hash`.
    fn find(&self, hash: u64, attrs: &[KeyValue]) -> Option<&BoundSet> {
        self.by_hash
            .get(&hash)?
            .iter()
            .find(|(bound, _)| same_set(bound, attrs))
            .map(|(_, set)| set)
    }

    fn is_full(&self) -> bool {
        self.len >= MAX_BOUND_SETS
    }

    fn insert(&mut self, hash: u64, attrs: &[KeyValue], set: BoundSet) {
        self.by_hash
            .entry(hash)
            .or_default()
            .push((attrs.into(), set));
        self.len += 1;
    }
}

#[derive(Default)]
pub(crate) struct BoundCache {
    sets: RwLock<Sets>,
}

impl BoundCache {
    /// Records through the bound handles of `attrs`, binding them on first use.
    /// Returns `false` if the cache is full, so the caller records unbound.
    pub(crate) fn record(
        &self,
        attrs: &[KeyValue],
        instruments: (
            &Histogram<f64>,
            Option<&Histogram<u64>>,
            Option<&Histogram<u64>>,
        ),
        values: (f64, Option<u64>, Option<u64>),
    ) -> bool {
        let record = |set: &BoundSet| {
            set.duration.record(values.0);
            if let (Some(h), Some(v)) = (instruments.1, values.1) {
                set.request_size.get_or_init(|| h.bind(attrs)).record(v);
            }
            if let (Some(h), Some(v)) = (instruments.2, values.2) {
                set.response_size.get_or_init(|| h.bind(attrs)).record(v);
            }
        };
        let hash = set_hash(attrs);
        if let Ok(sets) = self.sets.read() {
            if let Some(set) = sets.find(hash, attrs) {
                record(set);
                return true;
            }
            // Full: record unbound, without ever taking the write lock again.
            if sets.is_full() {
                return false;
            }
        }
        let Ok(mut sets) = self.sets.write() else {
            return false;
        };
        // Another thread may have bound it, or filled the cache, in between.
        if let Some(set) = sets.find(hash, attrs) {
            record(set);
            return true;
        }
        if sets.is_full() {
            return false;
        }
        let set = BoundSet {
            duration: instruments.0.bind(attrs),
            request_size: OnceLock::new(),
            response_size: OnceLock::new(),
        };
        record(&set);
        sets.insert(hash, attrs, set);
        true
    }
}

/// A hash of an attribute set, keys and values, eight bytes a step (FxHash's
/// multiply-rotate): fine for sets that an attacker cannot choose freely (ours are
/// bounded by construction).
fn set_hash(attrs: &[KeyValue]) -> u64 {
    let mut h = Fx(attrs.len() as u64);
    for kv in attrs {
        h.add_bytes(kv.key.as_str().as_bytes());
        match &kv.value {
            Value::String(s) => h.add_bytes(s.as_str().as_bytes()),
            Value::I64(i) => h.add(*i as u64),
            Value::Bool(b) => h.add(u64::from(*b)),
            Value::F64(f) => h.add(f.to_bits()),
            // Not among the crate's metric attributes: equal sets still hash alike.
            _ => h.add(u64::MAX),
        }
    }
    h.0
}

/// Whether two attribute sets are the same, in the same order (as [`set_hash`] sees
/// them). The crate's keys are `&'static str` constants: the same address is the
/// usual answer, the text the fallback.
fn same_set(a: &[KeyValue], b: &[KeyValue]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(a, b)| {
            let (ka, kb) = (a.key.as_str(), b.key.as_str());
            (std::ptr::eq(ka, kb) || ka == kb) && same_value(&a.value, &b.value)
        })
}

/// Values compared as [`set_hash`] hashes them: a float by its bits, so that `NaN` is
/// itself (not a new set on every record) and `0.0` and `-0.0`, hashed apart, stay apart.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::F64(a), Value::F64(b)) => a.to_bits() == b.to_bits(),
        (a, b) => a == b,
    }
}

/// The multiply-rotate hash of rustc (FxHash).
struct Fx(u64);

impl Fx {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    #[inline]
    fn add_bytes(&mut self, bytes: &[u8]) {
        self.add(bytes.len() as u64);
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }
}

/// The map's hasher: its keys are already hashes.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed; any other input still hashes consistently.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.0 = i;
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry::KeyValue;
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

    use crate::telemetry::{Instruments, Side};

    /// `(metric name, number of series, total count)` of every histogram exported.
    fn exported(exporter: &InMemoryMetricExporter) -> Vec<(String, usize, u64)> {
        let mut out = Vec::new();
        for rm in exporter.get_finished_metrics().unwrap() {
            for sm in rm.scope_metrics() {
                for m in sm.metrics() {
                    let (series, count) = match m.data() {
                        AggregatedMetrics::F64(MetricData::Histogram(h)) => (
                            h.data_points().count(),
                            h.data_points().map(|p| p.count()).sum(),
                        ),
                        AggregatedMetrics::U64(MetricData::Histogram(h)) => (
                            h.data_points().count(),
                            h.data_points().map(|p| p.count()).sum(),
                        ),
                        _ => continue,
                    };
                    out.push((m.name().to_owned(), series, count));
                }
            }
        }
        out.sort();
        out
    }

    fn setup() -> (SdkMeterProvider, InMemoryMetricExporter, Instruments) {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        let instruments = Instruments::new(&provider.meter("t"), Side::Server, true, false);
        (provider, exporter, instruments)
    }

    #[test]
    fn sets_beyond_the_cache_are_recorded_unbound() {
        let (provider, exporter, instruments) = setup();
        let n = super::MAX_BOUND_SETS + 100;
        for i in 0..n {
            let attrs = [KeyValue::new("i", i as i64)];
            instruments.record(&attrs, 0.1, Some(1), Some(2));
            instruments.record(&attrs, 0.1, Some(1), Some(2));
        }
        provider.force_flush().unwrap();
        let n2 = 2 * n as u64;
        assert_eq!(
            exported(&exporter),
            vec![
                ("http.server.request.body.size".to_owned(), n, n2),
                ("http.server.request.duration".to_owned(), n, n2),
                ("http.server.response.body.size".to_owned(), n, n2),
            ]
        );
    }

    #[test]
    fn sets_with_one_hash_are_kept_apart() {
        let (_provider, _exporter, instruments) = setup();
        let a = [KeyValue::new("k", "a")];
        let b = [KeyValue::new("k", "b")];
        let bound = |attrs: &[KeyValue]| super::BoundSet {
            duration: instruments.duration.bind(attrs),
            request_size: std::sync::OnceLock::new(),
            response_size: std::sync::OnceLock::new(),
        };
        // Both under one hash, as if they collided.
        let mut sets = super::Sets::default();
        sets.insert(7, &a, bound(&a));
        sets.insert(7, &b, bound(&b));
        let held = &sets.by_hash[&7];
        let found = |attrs: &[KeyValue]| sets.find(7, attrs).map(|s| s as *const _);
        assert_eq!(found(&a), Some(&held[0].1 as *const _));
        assert_eq!(found(&b), Some(&held[1].1 as *const _));
        assert_eq!(found(&[KeyValue::new("k", "c")]), None);
        assert_eq!(sets.find(8, &a).map(|s| s as *const _), None);
        assert_eq!(sets.len, 2);
    }

    #[test]
    fn concurrent_binding_counts_each_set_once() {
        let (provider, exporter, instruments) = setup();
        let instruments = std::sync::Arc::new(instruments);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let instruments = instruments.clone();
                std::thread::spawn(move || {
                    for i in 0..200 {
                        instruments.record(&[KeyValue::new("i", i as i64)], 0.1, None, Some(1));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let sets = instruments.bound.sets.read().unwrap();
        assert_eq!(sets.len, 200);
        let stored: usize = sets.by_hash.values().map(Vec::len).sum();
        assert_eq!(stored, 200);
        drop(sets);
        provider.force_flush().unwrap();
        assert_eq!(
            exported(&exporter),
            vec![
                ("http.server.request.duration".to_owned(), 200, 1600),
                ("http.server.response.body.size".to_owned(), 200, 1600),
            ]
        );
    }

    #[test]
    fn floats_are_compared_by_their_bits() {
        use opentelemetry::Value;
        assert!(super::same_value(
            &Value::F64(f64::NAN),
            &Value::F64(f64::NAN)
        ));
        assert!(!super::same_value(&Value::F64(0.0), &Value::F64(-0.0)));
        assert!(super::same_value(
            &Value::from("a"),
            &Value::from("a".to_owned())
        ));
    }

    #[test]
    fn a_size_never_measured_makes_no_series() {
        let (provider, exporter, instruments) = setup();
        let attrs = [KeyValue::new("k", "v")];
        instruments.record(&attrs, 0.1, None, Some(5));
        instruments.record(&attrs, 0.2, None, Some(6));
        provider.force_flush().unwrap();
        assert_eq!(
            exported(&exporter),
            vec![
                ("http.server.request.duration".to_owned(), 1, 2),
                ("http.server.response.body.size".to_owned(), 1, 2),
            ]
        );
    }
}
