//! Memo tables for lookups by address: bounded, shared between threads, never poisoned.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

/// Entries kept per memo table before it is reset. Keys are addresses inside the text, so a
/// table is bounded anyway; the cap keeps a corrupt stream of distinct pcs from growing it.
pub(super) const CACHE_CAP: usize = 1 << 16;

/// One memo table: key to a shared, finished value.
pub(super) type Memo<K, V> = Mutex<HashMap<K, Arc<V>>>;

/// Locks a memo table, ignoring poisoning: tables hold only finished values.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The value memoized for `key`, made by `make` the first time.
pub(super) fn cached<K: Eq + Hash, V: ?Sized>(
    memo: &Memo<K, V>,
    key: K,
    make: impl FnOnce() -> Arc<V>,
) -> Arc<V> {
    if let Some(v) = lock(memo).get(&key) {
        return v.clone();
    }
    let v = make();
    let mut map = lock(memo);
    if map.len() >= CACHE_CAP {
        map.clear();
    }
    map.insert(key, v.clone());
    v
}

/// Like [`cached`], for a `make` that can fail (failures are not memoized).
pub(super) fn try_cached<K: Eq + Hash, V: ?Sized, E>(
    memo: &Memo<K, V>,
    key: K,
    make: impl FnOnce() -> Result<Arc<V>, E>,
) -> Result<Arc<V>, E> {
    if let Some(v) = lock(memo).get(&key) {
        return Ok(v.clone());
    }
    let v = make()?;
    Ok(cached(memo, key, || v))
}
