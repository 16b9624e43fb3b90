//! Memoised eligibility checks for the slow paths of the hash policies.
//!
//! When the endpoint a key hashes to is ineligible, the ring walks forward
//! point by point and Maglev probes further table slots. Both can visit the
//! same endpoint many times (a ring has ~160 points per endpoint), and the
//! caller's `eligible` closure may not be free (it can consult health and
//! outlier state). Remembering each verdict bounds the closure calls to one
//! per endpoint and lets the walk stop as soon as every endpoint is known to
//! be ineligible. The fast path (first choice eligible) never builds one, so
//! the allocation is paid only when something is down.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Unknown,
    Eligible,
    Ineligible,
}

pub(crate) struct Verdicts<'a> {
    eligible: &'a dyn Fn(usize) -> bool,
    known: Vec<Verdict>,
    /// Endpoints not yet known to be ineligible; 0 means give up.
    possible: usize,
}

impl<'a> Verdicts<'a> {
    pub(crate) fn new(endpoints: usize, eligible: &'a dyn Fn(usize) -> bool) -> Self {
        Self {
            eligible,
            known: vec![Verdict::Unknown; endpoints],
            possible: endpoints,
        }
    }

    /// Records a verdict the caller already obtained, so it is not asked twice.
    pub(crate) fn mark_ineligible(&mut self, index: usize) {
        if let Some(slot) = self.known.get_mut(index)
            && *slot != Verdict::Ineligible
        {
            *slot = Verdict::Ineligible;
            self.possible = self.possible.saturating_sub(1);
        }
    }

    /// Whether `index` is eligible, asking the closure at most once per index.
    /// Out-of-range indices are never eligible.
    pub(crate) fn check(&mut self, index: usize) -> bool {
        match self.known.get(index) {
            Some(Verdict::Eligible) => true,
            Some(Verdict::Ineligible) | None => false,
            Some(Verdict::Unknown) => {
                if (self.eligible)(index) {
                    if let Some(slot) = self.known.get_mut(index) {
                        *slot = Verdict::Eligible;
                    }
                    true
                } else {
                    self.mark_ineligible(index);
                    false
                }
            }
        }
    }

    /// True once every endpoint has been found ineligible.
    pub(crate) fn exhausted(&self) -> bool {
        self.possible == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn asks_each_index_once() {
        let calls = Cell::new(0);
        let eligible = |i: usize| {
            calls.set(calls.get() + 1);
            i == 2
        };
        let mut verdicts = Verdicts::new(3, &eligible);
        for _ in 0..5 {
            assert!(!verdicts.check(0));
            assert!(verdicts.check(2));
        }
        assert_eq!(calls.get(), 2);
        assert!(!verdicts.exhausted());
    }

    #[test]
    fn exhausted_when_all_ineligible() {
        let eligible = |_: usize| false;
        let mut verdicts = Verdicts::new(3, &eligible);
        verdicts.mark_ineligible(1);
        verdicts.mark_ineligible(1);
        assert!(!verdicts.exhausted());
        assert!(!verdicts.check(0));
        assert!(!verdicts.check(2));
        assert!(verdicts.exhausted());
    }

    #[test]
    fn out_of_range_is_ineligible() {
        let eligible = |_: usize| true;
        let mut verdicts = Verdicts::new(2, &eligible);
        assert!(!verdicts.check(7));
    }
}
