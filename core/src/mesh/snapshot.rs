//! Read-mostly state published by the node task to the data path.
//!
//! The node task is the only writer: it replaces the whole value. Readers (session
//! readers, local senders) keep a [`Cached`] copy and only take the lock when the
//! version number moved, so forwarding a message costs one atomic load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// A value replaced as a whole by one writer and read by many.
pub(crate) struct Published<T> {
    version: AtomicU64,
    value: RwLock<Arc<T>>,
}

impl<T> Published<T> {
    /// Publishes `value` as version 1.
    pub(crate) fn new(value: T) -> Self {
        Published {
            version: AtomicU64::new(1),
            value: RwLock::new(Arc::new(value)),
        }
    }

    /// Replaces the value.
    pub(crate) fn publish(&self, value: T) {
        let value = Arc::new(value);
        {
            let mut slot = self.value.write().unwrap_or_else(|e| e.into_inner());
            *slot = value;
        }
        self.version.fetch_add(1, Ordering::Release);
    }

    /// The current value and its version.
    pub(crate) fn load(&self) -> (u64, Arc<T>) {
        // Read the version first: if a publish races, the value may be newer than
        // the version, which only causes one extra reload later.
        let v = self.version.load(Ordering::Acquire);
        let value = self.value.read().unwrap_or_else(|e| e.into_inner()).clone();
        (v, value)
    }
}

/// A reader's copy of a [`Published`] value.
pub(crate) struct Cached<T> {
    version: u64,
    value: Arc<T>,
}

impl<T> Cached<T> {
    /// A copy of the current value.
    pub(crate) fn new(p: &Published<T>) -> Self {
        let (version, value) = p.load();
        Cached { version, value }
    }

    /// The current value, reloading only if a newer one was published.
    pub(crate) fn get(&mut self, p: &Published<T>) -> &Arc<T> {
        if p.version.load(Ordering::Acquire) != self.version {
            let (version, value) = p.load();
            self.version = version;
            self.value = value;
        }
        &self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_see_new_versions() {
        let p = Published::new(1);
        let mut c = Cached::new(&p);
        assert_eq!(**c.get(&p), 1);
        p.publish(2);
        assert_eq!(**c.get(&p), 2);
        assert_eq!(**c.get(&p), 2);
    }
}
