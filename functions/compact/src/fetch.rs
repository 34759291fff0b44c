//! Staging objects fetched ahead of the decoder, handed out in list order.
//!
//! A day is ~17,000 small objects per shard, and each GET waits on S3's latency, so one fetch at a
//! time (or a fixed handful) would leave the decoder idle most of the run. Each fetch is its own
//! task, so it progresses while lines are decoded and encoded; the window of fetches in flight
//! starts small and doubles each time the decoder finds the next object not yet fetched, up to
//! [`FetchWindow::max_fetches`], and never holds more than [`FetchWindow::max_bytes`] of objects
//! (by their listed sizes) beyond the one being decoded: small objects get many fetches in flight,
//! large ones few.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::FutureExt as _;
use pipeline::ports::{read_all, ObjectInfo, ObjectStore, StoreError};
use tokio::task::JoinHandle;

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

pub struct Prefetcher {
    objects: Arc<dyn ObjectStore>,
    staging: Arc<[ObjectInfo]>,
    next: usize,
    /// Indexes into `staging`, in list order.
    in_flight: VecDeque<(usize, Fetch)>,
    in_flight_bytes: usize,
    /// Fetches allowed in flight now; it only grows.
    window: usize,
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
            bounds,
        }
    }

    /// The widest the window grew: the most fetches the run allowed in flight at once.
    pub fn widest(&self) -> usize {
        self.window
    }

    /// Starts fetches until the window or the byte bound is full.
    fn top_up(&mut self) {
        while let Some(info) = self.staging.get(self.next) {
            let size = info.size as usize;
            let full = self.in_flight.len() >= self.window
                || (!self.in_flight.is_empty()
                    && self.in_flight_bytes + size > self.bounds.max_bytes);
            if full {
                break;
            }
            let objects = self.objects.clone();
            let key = info.key.clone();
            let task = tokio::spawn(async move { read_all(objects.as_ref(), &key, size).await });
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
                self.window = (self.window * 2).min(self.bounds.max_fetches);
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
    use bytes::Bytes;
    use pipeline::memory::MemoryObjectStore;

    use super::*;

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
