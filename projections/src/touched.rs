//! The rows one batch touches, folded in memory and written back once.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

/// Rows keyed by their primary key: the ones loaded for a batch, and which of them changed, in
/// the order they first changed.
pub struct Touched<K, V> {
    /// Each row, and whether it changed.
    rows: HashMap<K, (V, bool)>,
    changed: Vec<K>,
}

impl<K, V> Default for Touched<K, V> {
    fn default() -> Self {
        Self {
            rows: HashMap::new(),
            changed: Vec::new(),
        }
    }
}

impl<K: Hash + Eq + Clone, V> Touched<K, V> {
    pub fn new(existing: impl IntoIterator<Item = (K, V)>) -> Self {
        Self {
            rows: existing.into_iter().map(|(k, v)| (k, (v, false))).collect(),
            changed: Vec::new(),
        }
    }

    /// Adds a row as it stands, unchanged (a later `add` of the same key replaces it).
    pub fn add(&mut self, key: K, value: V) {
        self.rows.insert(key, (value, false));
    }

    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.rows.get(key).map(|(row, _)| row)
    }

    /// Adds a row unless one with this key exists (events are applied at most once, so an
    /// existing row means the insert already happened).
    pub fn insert_absent(&mut self, key: K, value: V) {
        if !self.rows.contains_key(&key) {
            self.rows.insert(key.clone(), (value, true));
            self.changed.push(key);
        }
    }

    /// Changes an existing row; a missing row is left missing, as an SQL `UPDATE` would.
    pub fn update<Q>(&mut self, key: &Q, change: impl FnOnce(&mut V))
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.update_if(key, |row| {
            change(row);
            true
        });
    }

    /// Like [`Self::update`], counting the row as changed only when `change` says so.
    pub fn update_if<Q>(&mut self, key: &Q, change: impl FnOnce(&mut V) -> bool)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some((row, changed)) = self.rows.get_mut(key) {
            if change(row) && !*changed {
                *changed = true;
                self.changed.push(key.to_owned());
            }
        }
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.rows.values().map(|(row, _)| row)
    }

    /// The rows that changed, in the order they first changed.
    pub fn changed(&self) -> Vec<&V> {
        self.changed
            .iter()
            .filter_map(|key| self.rows.get(key).map(|(row, _)| row))
            .collect()
    }
}
