//! Answers computed once per revision of what they are computed from. A comparison is a pure
//! function of an experiment's stored runs, and the fleet comparison of all stored runs; each
//! write bumps a revision in the same transaction (see `migrations/0006_revisions.sql`), so an
//! answer is reused exactly while nothing it depends on has changed. Concurrent requests for
//! the same missing answer compute it once.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use tokio::sync::OnceCell;

/// How many answers are kept; past this, entries are dropped (an arbitrary one per insert).
const CAPACITY: usize = 4096;

type Slot<V> = Arc<OnceCell<V>>;

/// Values of type `V` (serialized answers by default) by key, each valid at one revision.
#[derive(Debug)]
pub struct Memo<K, R, V = Bytes> {
    entries: Mutex<HashMap<K, (R, Slot<V>)>>,
}

impl<K, R, V> Default for Memo<K, R, V> {
    fn default() -> Self {
        Self {
            entries: Mutex::default(),
        }
    }
}

impl<K: Eq + Hash + Clone, R: PartialEq + Clone, V: Clone> Memo<K, R, V> {
    /// The answer for `key` at `revision`: the stored one when it was computed at this
    /// revision, else `compute`'s (errors are returned, not kept).
    pub(crate) async fn get_or_compute<E, F, Fut>(
        &self,
        key: &K,
        revision: R,
        compute: F,
    ) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let slot = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            match entries.get(key) {
                Some((at, slot)) if *at == revision => slot.clone(),
                _ => {
                    if entries.len() >= CAPACITY
                        && !entries.contains_key(key)
                        && let Some(evicted) = entries.keys().next().cloned()
                    {
                        entries.remove(&evicted);
                    }
                    let slot = Slot::<V>::default();
                    entries.insert(key.clone(), (revision, slot.clone()));
                    slot
                }
            }
        };
        slot.get_or_try_init(compute).await.cloned()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn an_answer_is_reused_until_its_revision_changes() {
        let memo: Memo<&str, i64> = Memo::default();
        let computed = AtomicUsize::new(0);
        let compute = |text: &'static str| {
            computed.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, ()>(Bytes::from_static(text.as_bytes())) }
        };
        assert_eq!(
            memo.get_or_compute(&"a", 1, || compute("one")).await,
            Ok(Bytes::from_static(b"one"))
        );
        assert_eq!(
            memo.get_or_compute(&"a", 1, || compute("other")).await,
            Ok(Bytes::from_static(b"one"))
        );
        assert_eq!(
            memo.get_or_compute(&"a", 2, || compute("two")).await,
            Ok(Bytes::from_static(b"two"))
        );
        assert_eq!(
            memo.get_or_compute(&"b", 2, || compute("b")).await,
            Ok(Bytes::from_static(b"b"))
        );
        assert_eq!(computed.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn errors_are_not_kept() {
        let memo: Memo<u8, u8> = Memo::default();
        let failed = memo
            .get_or_compute(&1, 0, || async { Err::<Bytes, _>("database down") })
            .await;
        assert_eq!(failed, Err("database down"));
        let answered = memo
            .get_or_compute(&1, 0, || async { Ok::<_, &str>(Bytes::from_static(b"ok")) })
            .await;
        assert_eq!(answered, Ok(Bytes::from_static(b"ok")));
    }

    #[tokio::test]
    async fn concurrent_requests_compute_once() {
        let memo: Arc<Memo<u8, u8>> = Arc::default();
        let computed = Arc::new(AtomicUsize::new(0));
        let (release, wait) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (memo, computed, mut wait) = (memo.clone(), computed.clone(), wait.clone());
            tasks.push(tokio::spawn(async move {
                memo.get_or_compute(&7, 1, || async move {
                    computed.fetch_add(1, Ordering::SeqCst);
                    let _ = wait.wait_for(|go| *go).await;
                    Ok::<_, ()>(Bytes::from_static(b"answer"))
                })
                .await
            }));
        }
        release.send_replace(true);
        for task in tasks {
            assert_eq!(task.await.unwrap(), Ok(Bytes::from_static(b"answer")));
        }
        assert_eq!(computed.load(Ordering::SeqCst), 1);
    }
}
