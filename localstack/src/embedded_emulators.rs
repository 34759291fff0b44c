//! Embedded emulators for the demo's stream and dedup table, served from this process on free
//! loopback ports: Kinesis by ferrokinesis, DynamoDB by dynoxide (SQLite in memory).
//!
//! moto serves S3 and CloudWatch well, but not the demo's volume on the other two: its DynamoDB does
//! ~200 conditional PutItems a second (one per event), and its Kinesis copies a shard's whole key
//! list on every put (5 ms a record at 200k records) and fails GetRecords that race a PutRecords.
//! The demo's own clients are pointed here in code; the `ingest` binary reaches the dedup table
//! through the SDK's standard `AWS_ENDPOINT_URL_DYNAMODB`.

use std::future::Future;

use anyhow::Context;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// One emulator served on `127.0.0.1`, stopped by [`EmbeddedService::stop`] or on drop.
pub struct EmbeddedService {
    name: &'static str,
    endpoint: String,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

type Shutdown = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

impl EmbeddedService {
    /// DynamoDB's JSON API over an empty in-memory database.
    pub async fn dynamodb() -> anyhow::Result<Self> {
        let database = dynoxide::Database::memory()
            .map_err(|e| anyhow::anyhow!("opening the embedded DynamoDB: {e}"))?;
        Self::serve("DynamoDB", move |listener, shutdown| async move {
            dynoxide::server::serve_with_shutdown(listener, database, shutdown)
                .await
                .map_err(|e| anyhow::anyhow!(e))
        })
        .await
    }

    /// Kinesis Data Streams with no streams yet, which become active at once; shard iterators
    /// expire after `iterator_ttl` (five minutes on AWS).
    pub async fn kinesis(iterator_ttl: std::time::Duration) -> anyhow::Result<Self> {
        let (app, _store) = ferrokinesis::create_app(ferrokinesis::store::StoreOptions {
            create_stream_ms: 0,
            shard_limit: 1024,
            iterator_ttl_seconds: iterator_ttl.as_secs().max(1),
            ..Default::default()
        });
        // axum's default 2 MB is below a full PutRecords (5 MiB of data and keys, base64 in JSON).
        let app = app.layer(axum::extract::DefaultBodyLimit::max(10 << 20));
        Self::serve("Kinesis", move |listener, shutdown| async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
                .map_err(anyhow::Error::from)
        })
        .await
    }

    async fn serve<F, Fut>(name: &'static str, run: F) -> anyhow::Result<Self>
    where
        F: FnOnce(tokio::net::TcpListener, Shutdown) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .with_context(|| format!("binding a loopback port for the embedded {name}"))?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let (shutdown, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(run(
            listener,
            Box::pin(async move {
                let _ = stopped.await;
            }),
        ));
        Ok(EmbeddedService {
            name,
            endpoint,
            shutdown: Some(shutdown),
            server: Some(server),
        })
    }

    /// `http://127.0.0.1:<port>`
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Stops accepting connections and waits for the requests in flight.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .with_context(|| format!("embedded {} task", self.name))?
                .with_context(|| format!("embedded {}", self.name))?;
        }
        Ok(())
    }
}

impl Drop for EmbeddedService {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}
