//! Staging objects fetched ahead of the decoder, handed out in list order.
//!
//! A day is ~17,000 small objects per shard, and each GET waits on S3's latency, so one fetch at a
//! time (or a fixed handful) would leave the decoder idle most of the run. Each fetch is its own
//! task, so it progresses while lines are decoded and encoded; the window of fetches in flight
//! starts small and doubles each time the decoder finds the next object not yet fetched, up to
//! [`FetchWindow::max_fetches`], and never holds more than [`FetchWindow::max_bytes`] of objects
//! (by their listed sizes) beyond the one being decoded: small objects get many fetches in flight,
//! large ones few.
//!
//! S3 answers a prefix's GETs up to a rate (about 5,500 a second), then with `SlowDown`; once the
//! SDK's own retries (and their shared retry quota) are spent, the failure reaches us. A fetch that
//! fails so, or with any other transient failure, is asked again after a pause, and halves the
//! fetches the run keeps in flight from then on: the window adapts to what the store sustains
//! instead of failing the day.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use pipeline::ports::{read_all, ObjectInfo, ObjectStore, StoreError};
use tokio::task::JoinHandle;

/// Attempts of one fetch, each after the SDK's own retries, before its failure is the run's.
pub const FETCH_ATTEMPTS: u32 = 4;

/// The pause before a fetch's second attempt; it doubles for each further one.
const FIRST_PAUSE: Duration = Duration::from_millis(250);

/// Bounds on the fetches in flight.
#[derive(Debug, Clone, Copy)]
pub struct FetchWindow {
    /// Fetches in flight at first.
    pub initial_fetches: usize,
    /// At most this many at once: each is a connection, and a Lambda process has 1,024 file
    /// descriptors.
    pub max_fetches: usize,
    /// Listed bytes of the objects fetched ahead (one object is always allowed, whatever its size).
    pub max_bytes: usize,
}

/// Aborts the task when dropped: a run that fails leaves no fetch running behind it.
pub struct AbortOnDrop<T>(pub JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type Fetch = AbortOnDrop<Result<Vec<u8>, StoreError>>;

/// How many fetches the store sustains at once, as its failures say: shared by the fetch tasks,
/// which report failures, and the prefetcher, which starts fetches.
struct Ceiling {
    fetches: AtomicUsize,
    /// Bumped at each halving: the fetches in flight when one failed all saw the same overload,
    /// so only the first of them to fail halves the ceiling (as TCP halves once per loss event).
    halvings: AtomicU64,
}

impl Ceiling {
    fn get(&self) -> usize {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Halves the ceiling unless it was halved since `seen`.
    fn halve_since(&self, seen: u64) {
        let next = seen + 1;
        if self
            .halvings
            .compare_exchange(seen, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            let halved = (self.get() / 2).max(1);
            self.fetches.store(halved, Ordering::Relaxed);
            tracing::warn!(
                fetches_in_flight = halved,
                "the store is failing fetches: fewer at once from now on"
            );
        }
    }
}

/// One object's fetch, asked again after each transient failure (up to [`FETCH_ATTEMPTS`]).
/// `halvings`: the ceiling's count of halvings when the fetch was started.
async fn fetch(
    objects: Arc<dyn ObjectStore>,
    ceiling: Arc<Ceiling>,
    key: String,
    size: usize,
    mut halvings: u64,
) -> Result<Vec<u8>, StoreError> {
    let mut pause = FIRST_PAUSE;
    for attempt in 1.. {
        match read_all(objects.as_ref(), &key, size).await {
            Err(error) if error.is_transient() && attempt < FETCH_ATTEMPTS => {
                tracing::warn!(%error, attempt, "fetch failed; asking again");
                ceiling.halve_since(halvings);
                tokio::time::sleep(pause).await;
                pause *= 2;
                halvings = ceiling.halvings.load(Ordering::Relaxed);
            }
            done => return done,
        }
    }
    unreachable!("the last attempt returns")
}

pub struct Prefetcher {
    objects: Arc<dyn ObjectStore>,
    staging: Arc<[ObjectInfo]>,
    next: usize,
    /// Indexes into `staging`, in list order.
    in_flight: VecDeque<(usize, Fetch)>,
    in_flight_bytes: usize,
    /// Fetches allowed in flight now: it grows while the decoder waits, up to the ceiling.
    window: usize,
    /// The most the run allowed in flight at once.
    widest: usize,
    /// [`FetchWindow::max_fetches`] at first, halved by failing fetches.
    ceiling: Arc<Ceiling>,
    bounds: FetchWindow,
}

impl Prefetcher {
    pub fn new(
        objects: Arc<dyn ObjectStore>,
        staging: Arc<[ObjectInfo]>,
        bounds: FetchWindow,
    ) -> Self {
        let bounds = FetchWindow {
            max_fetches: bounds.max_fetches.max(1),
            ..bounds
        };
        let window = bounds.initial_fetches.clamp(1, bounds.max_fetches);
        Prefetcher {
            objects,
            staging,
            next: 0,
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
            window,
            widest: window,
            ceiling: Arc::new(Ceiling {
                fetches: AtomicUsize::new(bounds.max_fetches),
                halvings: AtomicU64::new(0),
            }),
            bounds,
        }
    }

    /// The widest the window grew: the most fetches the run allowed in flight at once.
    pub fn widest(&self) -> usize {
        self.widest
    }

    /// Starts fetches until the window or the byte bound is full.
    fn top_up(&mut self) {
        self.window = self.window.min(self.ceiling.get());
        while let Some(info) = self.staging.get(self.next) {
            let size = info.size as usize;
            let full = self.in_flight.len() >= self.window
                || (!self.in_flight.is_empty()
                    && self.in_flight_bytes + size > self.bounds.max_bytes);
            if full {
                break;
            }
            let task = tokio::spawn(fetch(
                self.objects.clone(),
                self.ceiling.clone(),
                info.key.clone(),
                size,
                self.ceiling.halvings.load(Ordering::Relaxed),
            ));
            self.in_flight.push_back((self.next, AbortOnDrop(task)));
            self.in_flight_bytes += size;
            self.next += 1;
        }
    }

    /// The next object in list order with its bytes, or `None` after the last.
    pub async fn next(&mut self) -> Option<Result<(ObjectInfo, Vec<u8>), StoreError>> {
        self.top_up();
        let (index, mut fetch) = self.in_flight.pop_front()?;
        let result = match (&mut fetch.0).now_or_never() {
            Some(done) => done,
            None => {
                // The decoder caught up with the fetches: widen the window, then wait.
                self.window = (self.window * 2).min(self.ceiling.get());
                self.widest = self.widest.max(self.window);
                self.top_up();
                (&mut fetch.0).await
            }
        };
        let info = &self.staging[index];
        self.in_flight_bytes -= info.size as usize;
        Some(match result {
            Ok(fetched) => fetched.map(|body| (info.clone(), body)),
            Err(join_error) => Err(StoreError::new(
                format!("GetObject {}", info.key),
                format!("the fetch task failed: {join_error}"),
            )),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use async_trait::async_trait;
    use bytes::Bytes;
    use pipeline::memory::MemoryObjectStore;
    use pipeline::ports::{ByteStream, FailureKind, MultipartUpload};

    use super::*;

    /// A memory store whose GETs of some keys fail (`failures` times, of `kind`) before they
    /// succeed; it counts every GET of every key.
    #[derive(Default)]
    struct Flaky {
        inner: MemoryObjectStore,
        failing: Mutex<HashMap<String, u32>>,
        kind: Option<FailureKind>,
        gets: Mutex<HashMap<String, u32>>,
    }

    impl Flaky {
        fn gets_of(&self, key: &str) -> u32 {
            self.gets.lock().unwrap().get(key).copied().unwrap_or(0)
        }
    }

    #[async_trait]
    impl ObjectStore for Flaky {
        async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
            self.inner.put(key, body).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
            self.inner.list(prefix).await
        }
        async fn get(&self, key: &str) -> Result<ByteStream, StoreError> {
            *self
                .gets
                .lock()
                .unwrap()
                .entry(key.to_string())
                .or_default() += 1;
            if let Some(left) = self.failing.lock().unwrap().get_mut(key) {
                if *left > 0 {
                    *left -= 1;
                    let slow_down = StoreError::new(format!("GetObject {key}"), "SlowDown");
                    return Err(slow_down.with_kind(self.kind.unwrap_or(FailureKind::Transient)));
                }
            }
            self.inner.get(key).await
        }
        async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
            self.inner.delete(keys).await
        }
        async fn start_upload(&self, key: &str) -> Result<Box<dyn MultipartUpload>, StoreError> {
            self.inner.start_upload(key).await
        }
    }

    /// `count` objects in a flaky store whose keys `fails(i)` picks fail `failures` times each.
    async fn flaky_store(
        count: usize,
        fails: impl Fn(usize) -> bool,
        failures: u32,
        kind: FailureKind,
    ) -> (Arc<Flaky>, Vec<ObjectInfo>) {
        let store = Flaky {
            kind: Some(kind),
            ..Flaky::default()
        };
        let mut staging = Vec::new();
        for i in 0..count {
            let key = format!("staging/{i:03}.ndjson");
            store
                .inner
                .put(&key, Bytes::from(key.clone()))
                .await
                .unwrap();
            if fails(i) {
                store.failing.lock().unwrap().insert(key.clone(), failures);
            }
            let size = key.len() as u64;
            staging.push(ObjectInfo { key, size });
        }
        (Arc::new(store), staging)
    }

    const SIXTEEN_AT_ONCE: FetchWindow = FetchWindow {
        initial_fetches: 16,
        max_fetches: 16,
        max_bytes: 1 << 20,
    };

    #[tokio::test(start_paused = true)]
    async fn fetches_the_store_fails_for_a_while_are_asked_again_and_fewer_go_at_once() {
        let (store, staging) = flaky_store(100, |i| i % 10 == 3, 2, FailureKind::Transient).await;
        let objects: Arc<dyn ObjectStore> = store.clone();
        let mut fetches = Prefetcher::new(objects, staging.clone().into(), SIXTEEN_AT_ONCE);
        for info in &staging {
            let (got, body) = fetches.next().await.unwrap().unwrap();
            assert_eq!(got.key, info.key);
            assert_eq!(body, info.key.as_bytes());
            assert!(fetches.in_flight.len() <= SIXTEEN_AT_ONCE.max_fetches);
        }
        assert!(fetches.next().await.is_none());
        for info in &staging {
            let failed = if info.key.ends_with("3.ndjson") { 2 } else { 0 };
            assert_eq!(store.gets_of(&info.key), 1 + failed, "{}", info.key);
        }
        let ceiling = fetches.ceiling.get();
        assert!((1..16).contains(&ceiling), "{ceiling}");
    }

    #[tokio::test(start_paused = true)]
    async fn failures_of_fetches_in_flight_together_halve_the_fetches_once() {
        // All 16 are in flight at once, and the first two fail together.
        let (store, staging) = flaky_store(16, |i| i < 2, 1, FailureKind::Transient).await;
        let mut fetches = Prefetcher::new(store, staging.into(), SIXTEEN_AT_ONCE);
        while let Some(fetched) = fetches.next().await {
            fetched.unwrap();
        }
        assert_eq!(fetches.ceiling.get(), 8);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fetch_that_keeps_failing_is_the_run_s_error_after_its_attempts() {
        let (store, staging) = flaky_store(3, |i| i == 1, u32::MAX, FailureKind::Transient).await;
        let objects: Arc<dyn ObjectStore> = store.clone();
        let mut fetches = Prefetcher::new(objects, staging.clone().into(), SIXTEEN_AT_ONCE);
        assert!(fetches.next().await.unwrap().is_ok());
        let error = fetches.next().await.unwrap().unwrap_err();
        assert!(error.message.contains("SlowDown"), "{error}");
        assert_eq!(store.gets_of(&staging[1].key), FETCH_ATTEMPTS);

        // A permanent failure (access denied, no such key) is not asked again.
        let (store, staging) = flaky_store(3, |i| i == 1, 1, FailureKind::Permanent).await;
        let objects: Arc<dyn ObjectStore> = store.clone();
        let mut fetches = Prefetcher::new(objects, staging.clone().into(), SIXTEEN_AT_ONCE);
        assert!(fetches.next().await.unwrap().is_ok());
        assert!(fetches.next().await.unwrap().is_err());
        assert_eq!(store.gets_of(&staging[1].key), 1);
    }

    #[tokio::test]
    async fn hands_out_every_object_in_list_order_within_its_bounds() {
        let store = MemoryObjectStore::default();
        let mut staging = Vec::new();
        for i in 0..100usize {
            let key = format!("staging/{i:03}.ndjson");
            store
                .put(&key, Bytes::from(vec![b'x'; 10 + i]))
                .await
                .unwrap();
            staging.push(ObjectInfo {
                key,
                size: 10 + i as u64,
            });
        }
        let bounds = FetchWindow {
            initial_fetches: 2,
            max_fetches: 16,
            max_bytes: 300,
        };
        let mut fetches = Prefetcher::new(Arc::new(store), staging.clone().into(), bounds);
        let mut seen = Vec::new();
        while let Some(fetched) = fetches.next().await {
            let (info, body) = fetched.unwrap();
            assert_eq!(body.len() as u64, info.size, "{}", info.key);
            seen.push(info.key.clone());
            assert!(fetches.in_flight.len() <= bounds.max_fetches);
            assert!(fetches.in_flight_bytes <= bounds.max_bytes);
        }
        let listed: Vec<String> = staging.iter().map(|o| o.key.clone()).collect();
        assert_eq!(seen, listed);
        // The decoder waited on the fetches, so the window grew, and stayed within its bound.
        assert!(
            fetches.widest() > 2 && fetches.widest() <= 16,
            "{}",
            fetches.widest()
        );
    }

    #[tokio::test]
    async fn a_failed_fetch_is_the_run_s_error() {
        let staging = vec![ObjectInfo {
            key: "staging/gone.ndjson".into(),
            size: 5,
        }];
        let bounds = FetchWindow {
            initial_fetches: 8,
            max_fetches: 8,
            max_bytes: 1 << 20,
        };
        let store = Arc::new(MemoryObjectStore::default());
        let mut fetches = Prefetcher::new(store, staging.into(), bounds);
        assert!(fetches.next().await.unwrap().is_err());
        assert!(fetches.next().await.is_none());
    }
}
