//! A per-thread cache in front of the `http_requests` counter family.
//!
//! `Family::get_or_create` hashes every label string with SipHash and takes the family's lock;
//! for a small proxied request that was a measurable share of gatehouse's own CPU time. Label
//! values are `Arc`s built once per config snapshot, so their addresses identify them: the cache
//! keys on those addresses and the status, hashed with one multiply per word, and holds clones
//! of the labels so that no address can be reused by another label while its entry lives.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::{Label, RequestLabels};

/// Entries one thread keeps before starting over. Each config reload brings new label `Arc`s,
/// so without a bound the cache would grow with every reload.
const MAX_ENTRIES: usize = 4096;

/// Which `Metrics`, the addresses of the four label values, and the status.
type Key = (u64, usize, usize, usize, usize, u16);

thread_local! {
    static COUNTERS: RefCell<HashMap<Key, (Counter, RequestLabels), BuildHasherDefault<WordMix>>> =
        RefCell::new(HashMap::default());
}

/// The labels of one answered request, borrowed: a cache hit clones none of them. A request
/// with no route or no endpoint is counted under "-".
#[derive(Clone, Copy, Debug)]
pub struct RequestLabelRefs<'a> {
    pub listener: &'a Label,
    pub route: Option<&'a Label>,
    pub cluster: Option<&'a Label>,
    pub endpoint: Option<&'a Label>,
    pub status: u16,
}

/// The same labels with "-" filled in.
#[derive(Clone, Copy)]
struct Resolved<'a> {
    listener: &'a Label,
    route: &'a Label,
    cluster: &'a Label,
    endpoint: &'a Label,
    status: u16,
}

impl Resolved<'_> {
    fn to_owned(self) -> RequestLabels {
        RequestLabels {
            listener: Arc::clone(self.listener),
            route: Arc::clone(self.route),
            cluster: Arc::clone(self.cluster),
            endpoint: Arc::clone(self.endpoint),
            status: self.status,
        }
    }
}

/// Adds one to the counter of `labels` in `family`, the family of the `Metrics` numbered `owner`.
/// `dash` is the owner's "-" label.
pub(crate) fn count(
    owner: u64,
    family: &Family<RequestLabels, Counter>,
    dash: &Label,
    labels: RequestLabelRefs<'_>,
) {
    let labels = Resolved {
        listener: labels.listener,
        route: labels.route.unwrap_or(dash),
        cluster: labels.cluster.unwrap_or(dash),
        endpoint: labels.endpoint.unwrap_or(dash),
        status: labels.status,
    };
    let key = (
        owner,
        address(labels.listener),
        address(labels.route),
        address(labels.cluster),
        address(labels.endpoint),
        labels.status,
    );
    COUNTERS.with_borrow_mut(|counters| {
        if let Some((counter, _)) = counters.get(&key) {
            counter.inc();
            return;
        }
        if counters.len() >= MAX_ENTRIES {
            counters.clear();
        }
        let labels = labels.to_owned();
        let counter = family.get_or_create(&labels).clone();
        counter.inc();
        counters.insert(key, (counter, labels));
    });
}

fn address(label: &Label) -> usize {
    Arc::as_ptr(label) as usize
}

/// A hasher for keys made of machine words (FxHash's mixing): addresses and small integers need
/// no defence against crafted collisions, only spreading.
#[derive(Default)]
pub(crate) struct WordMix(u64);

impl Hasher for WordMix {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u16(&mut self, word: u16) {
        self.write_u64(u64::from(word));
    }

    fn write_usize(&mut self, word: usize) {
        self.write_u64(word as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::label;

    fn refs(labels: &RequestLabels) -> RequestLabelRefs<'_> {
        RequestLabelRefs {
            listener: &labels.listener,
            route: Some(&labels.route),
            cluster: Some(&labels.cluster),
            endpoint: Some(&labels.endpoint),
            status: labels.status,
        }
    }

    fn labels(route: &str, status: u16) -> RequestLabels {
        RequestLabels {
            listener: label("l"),
            route: label(route),
            cluster: label("c"),
            endpoint: label("e"),
            status,
        }
    }

    #[test]
    fn cached_and_uncached_label_sets_count_into_the_family() {
        let family = Family::<RequestLabels, Counter>::default();
        let ok = labels("api", 200);
        for _ in 0..3 {
            count(1, &family, &label("-"), refs(&ok));
        }
        // Equal values behind other Arcs (a reloaded config) reach the same series.
        count(1, &family, &label("-"), refs(&labels("api", 200)));
        count(
            1,
            &family,
            &label("-"),
            refs(&RequestLabels {
                status: 503,
                ..ok.clone()
            }),
        );
        assert_eq!(family.get_or_create(&ok).get(), 4);
        assert_eq!(
            family
                .get_or_create(&RequestLabels { status: 503, ..ok })
                .get(),
            1
        );
    }

    #[test]
    fn owners_do_not_share_counters() {
        let first = Family::<RequestLabels, Counter>::default();
        let second = Family::<RequestLabels, Counter>::default();
        let same = labels("api", 200);
        count(10, &first, &label("-"), refs(&same));
        count(11, &second, &label("-"), refs(&same));
        count(11, &second, &label("-"), refs(&same));
        assert_eq!(first.get_or_create(&same).get(), 1);
        assert_eq!(second.get_or_create(&same).get(), 2);
    }

    #[test]
    fn the_cache_stays_bounded() {
        let family = Family::<RequestLabels, Counter>::default();
        let route = label("r");
        for status in 0..(MAX_ENTRIES as u16 + 10) {
            count(
                20,
                &family,
                &label("-"),
                refs(&RequestLabels {
                    route: Arc::clone(&route),
                    ..labels("x", status)
                }),
            );
        }
        assert!(COUNTERS.with_borrow(HashMap::len) <= MAX_ENTRIES);
    }

    #[test]
    fn missing_route_and_endpoint_count_as_dash() {
        let family = Family::<RequestLabels, Counter>::default();
        let dash = label("-");
        let listener = label("l");
        let unrouted = RequestLabelRefs {
            listener: &listener,
            route: None,
            cluster: None,
            endpoint: None,
            status: 404,
        };
        count(30, &family, &dash, unrouted);
        count(30, &family, &dash, unrouted);
        let expected = RequestLabels {
            listener,
            route: label("-"),
            cluster: label("-"),
            endpoint: label("-"),
            status: 404,
        };
        assert_eq!(family.get_or_create(&expected).get(), 2);
    }
}
