//! A store that fails part-way through a run: the run fails with the store's error, promptly (the
//! fetching, decoding and encoding halves all stop), leaves no Parquet behind, and the next run
//! writes every event once.

use async_trait::async_trait;
use pipeline::memory::FaultyObjectStore;
use pipeline::ports::{ByteStream, MultipartUpload};

use super::*;

/// Lists every object of the memory store, but one of them cannot be read any more (deleted by
/// someone else between the listing and the GET).
struct GoneAfterListing {
    inner: MemoryObjectStore,
    gone: String,
}

#[async_trait]
impl ObjectStore for GoneAfterListing {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        self.inner.put(key, body).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        self.inner.list(prefix).await
    }
    async fn get(&self, key: &str) -> Result<ByteStream, StoreError> {
        if key == self.gone {
            let gone = StoreError::new(format!("GetObject {key}"), "NoSuchKey");
            return Err(gone.with_kind(pipeline::ports::FailureKind::Permanent));
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

/// 40 objects of 50 events each, in two languages, on two shards; returns their keys.
async fn stage_many(store: &MemoryObjectStore) -> Vec<String> {
    let mut keys = Vec::new();
    for object in 0..40u64 {
        let shard = format!("shardId-00000000000{}", object % 2);
        let events: Vec<(u64, Vec<u8>)> = (0..50)
            .map(|i| {
                let n = object * 100 + i + 1;
                let language = if n % 3 == 0 { "lang_fr" } else { "lang_en" };
                (n, event_with_language(n, language))
            })
            .collect();
        keys.push(stage(store, &shard, &events).await);
    }
    keys
}

/// Small batches and small files, so the run is many batches and files deep when the store fails.
fn small_batches(compact: &mut Compact) {
    compact.settings.batch_rows = 16;
    compact.settings.file_bytes = 4 << 10;
}

async fn within_a_minute<T>(run: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(60), run)
        .await
        .expect("the run must end, not hang, when the store fails")
}

fn parquet_keys(store: &MemoryObjectStore) -> Vec<String> {
    store
        .keys()
        .into_iter()
        .filter(|k| k.ends_with(".parquet"))
        .collect()
}

async fn the_next_run_writes_every_event_once(store: &MemoryObjectStore) {
    let (mut compact, _) = compactor(store);
    small_batches(&mut compact);
    let report = compact.run(day()).await.unwrap();
    assert_eq!(report.rows_written, 2000);
    let ids = sorted_ids(store, &report.files);
    let mut expected: Vec<String> = (0..40u64)
        .flat_map(|object| (0..50).map(move |i| uuid(object * 100 + i + 1)))
        .collect();
    expected.sort();
    assert_eq!(ids, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_parquet_upload_fails_the_run_and_the_next_run_writes_everything() {
    let store = MemoryObjectStore::default();
    stage_many(&store).await;
    let (mut compact, _) = compactor(&store);
    small_batches(&mut compact);
    // The third language's files are never written; the first partition's may be.
    compact.objects = Arc::new(FaultyObjectStore {
        inner: store.clone(),
        needle: "language=lang_fr/".into(),
        hang: false,
    });
    let error = within_a_minute(compact.run(day())).await.unwrap_err();
    assert!(matches!(error, CompactError::Store(_)), "{error}");
    assert!(error.to_string().contains("lang_fr"), "{error}");
    // A failed run completes no file: what it wrote stays in unfinished (aborted) uploads.
    assert_eq!(parquet_keys(&store), Vec::<String>::new());
    the_next_run_writes_every_event_once(&store).await;
}

#[tokio::test]
async fn a_staging_object_gone_before_its_get_fails_the_run_and_the_next_run_writes_everything() {
    let store = MemoryObjectStore::default();
    let keys = stage_many(&store).await;
    let (mut compact, _) = compactor(&store);
    small_batches(&mut compact);
    compact.objects = Arc::new(GoneAfterListing {
        inner: store.clone(),
        gone: keys[30].clone(),
    });
    let error = within_a_minute(compact.run(day())).await.unwrap_err();
    assert!(matches!(error, CompactError::Store(_)), "{error}");
    assert!(error.to_string().contains(&keys[30]), "{error}");
    assert_eq!(parquet_keys(&store), Vec::<String>::new());
    the_next_run_writes_every_event_once(&store).await;
}
