//! Aggregates as this process last saw them, each with the sequence of its last event, used
//! only when the event store reports the aggregate still at that sequence (docs/decisions/0027
//! and 0028): the state is then exactly what a load would give, without reading the events.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::ledger::Versioned;

pub(super) struct KnownStates<A> {
    states: Mutex<HashMap<String, Versioned<A>>>,
    /// How many aggregates are kept before the map starts again from empty: the bound only
    /// guards memory.
    capacity: usize,
}

impl<A: Clone> KnownStates<A> {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            states: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// The kept state of `id` if its last event is the one at `sequence` (`None`: no event).
    pub(super) fn at(&self, id: &str, sequence: Option<i64>) -> Option<Versioned<A>> {
        let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        states
            .get(id)
            .filter(|known| Some(known.sequence as i64) == sequence)
            .cloned()
    }

    /// The kept state of `id`, whatever its sequence: a guess, to be checked by the event store
    /// when anything decided on it is written (docs/decisions/0034).
    pub(super) fn last_seen(&self, id: &str) -> Option<Versioned<A>> {
        let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        states.get(id).cloned()
    }

    /// Keeps the state of `id` as of its last event (an aggregate with no events is not kept).
    pub(super) fn keep(&self, id: &str, state: &Versioned<A>) {
        if state.sequence == 0 {
            return;
        }
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        if states.len() >= self.capacity && !states.contains_key(id) {
            states.clear();
        }
        states.insert(id.to_owned(), state.clone());
    }
}
