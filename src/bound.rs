//! Bound instruments cached per attribute set (feature `experimental-bound-instruments`).
//!
//! Recording a histogram through the SDK hashes the attribute slice (SipHash) and takes
//! a read lock for every instrument. A request records up to three histograms with the
//! same attributes, and the attribute sets are few (method × status × route × …), so
//! this cache hashes the set once (with a fast hash), and records through handles bound
//! to it with opentelemetry's `experimental_metrics_bound_instruments` API.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::RwLock;

use opentelemetry::metrics::{BoundHistogram, Histogram};
use opentelemetry::KeyValue;

/// At most this many attribute sets are bound; others are recorded unbound. Far above
/// what a service with templated routes produces, and the SDK's own cardinality limit
/// (2000 by default) applies either way.
const MAX_BOUND_SETS: usize = 1024;

/// The handles of one attribute set.
struct BoundSet {
    duration: BoundHistogram<f64>,
    request_size: Option<BoundHistogram<u64>>,
    response_size: Option<BoundHistogram<u64>>,
}

#[derive(Default)]
pub(crate) struct BoundCache {
    sets: RwLock<HashMap<Box<[KeyValue]>, BoundSet, BuildHasherDefault<FxHasher>>>,
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
            if let (Some(h), Some(v)) = (&set.request_size, values.1) {
                h.record(v);
            }
            if let (Some(h), Some(v)) = (&set.response_size, values.2) {
                h.record(v);
            }
        };
        if let Ok(sets) = self.sets.read() {
            if let Some(set) = sets.get(attrs) {
                record(set);
                return true;
            }
        }
        let Ok(mut sets) = self.sets.write() else {
            return false;
        };
        if sets.len() >= MAX_BOUND_SETS && !sets.contains_key(attrs) {
            return false;
        }
        let set = sets.entry(attrs.into()).or_insert_with(|| BoundSet {
            duration: instruments.0.bind(attrs),
            request_size: instruments.1.map(|h| h.bind(attrs)),
            response_size: instruments.2.map(|h| h.bind(attrs)),
        });
        record(set);
        true
    }
}

/// The multiply-rotate hash of rustc (FxHash): a few cycles per word, fine for keys an
/// attacker cannot choose freely (our attribute sets are bounded by construction).
#[derive(Default)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
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

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_i64(&mut self, i: i64) {
        self.add(i as u64);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}
