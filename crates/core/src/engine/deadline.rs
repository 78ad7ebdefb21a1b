//! When planning must stop. The server gives each review a deadline; the engine checks it
//! between steps and inside the loops over the pod's lists, so a review that outlives its
//! deadline stops using CPU and is refused (never answered with a partial patch). A plain
//! `Instant`: the engine stays free of any runtime.

use std::time::Instant;

/// A point in time after which planning gives up, or none (CLI tools, tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    /// Never stops.
    pub fn none() -> Self {
        Self(None)
    }

    pub fn at(when: Instant) -> Self {
        Self(Some(when))
    }

    /// Whether the deadline has passed (reads the clock: call it per step or per batch of
    /// items, not per byte).
    pub fn passed(&self) -> bool {
        self.0.is_some_and(|d| Instant::now() >= d)
    }
}

/// Checks a deadline in a loop: the clock is read once per [`Self::EVERY`] calls, and once
/// passed it stays passed.
#[derive(Debug)]
pub(crate) struct Watch {
    deadline: Deadline,
    calls: u32,
    passed: bool,
}

impl Watch {
    /// Items handled between two reads of the clock: each item is at least a clone of a
    /// small struct, so a read per 64 costs nothing measurable and stops within microseconds.
    const EVERY: u32 = 64;

    pub fn new(deadline: Deadline) -> Self {
        Self {
            deadline,
            calls: 0,
            passed: deadline.passed(),
        }
    }

    /// True once the deadline has passed (checked now).
    pub fn passed_now(&mut self) -> bool {
        if !self.passed {
            self.passed = self.deadline.passed();
        }
        self.passed
    }

    /// True once the deadline has passed; reads the clock every [`Self::EVERY`] calls.
    pub fn tick(&mut self) -> bool {
        if self.passed {
            return true;
        }
        self.calls += 1;
        if self.calls >= Self::EVERY {
            self.calls = 0;
            self.passed = self.deadline.passed();
        }
        self.passed
    }

    /// Whether a passed deadline was seen (without reading the clock).
    pub fn seen(&self) -> bool {
        self.passed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_passed_deadline_is_seen_at_once_and_stays_seen() {
        let past = Instant::now()
            .checked_sub(Duration::from_millis(1))
            .unwrap_or_else(Instant::now);
        let mut w = Watch::new(Deadline::at(past));
        assert!(w.seen());
        assert!(w.tick());
        let mut never = Watch::new(Deadline::none());
        assert!((0..1000).all(|_| !never.tick()));
        assert!(!never.passed_now());
    }
}
