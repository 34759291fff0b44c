//! A Lambda Runtime API (`/2018-06-01/runtime/...`) on loopback, serving one function process, the
//! way the Lambda service does: the unmodified binary polls `invocation/next` and posts its
//! `response` or `error`. Used by the local event source mapping, the demo and the tests.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};

const PREFIX: &str = "/2018-06-01/runtime/";

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The function's response payload.
    Response(serde_json::Value),
    /// The function reported an error (`invocation/{id}/error`).
    FunctionError(serde_json::Value),
}

struct Pending {
    request_id: String,
    payload: Bytes,
    deadline_ms: u128,
}

struct Shared {
    queue: tokio::sync::Mutex<mpsc::Receiver<Pending>>,
    waiting: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    init_error: Mutex<Option<String>>,
    function_arn: String,
}

/// One running function process and the Runtime API it polls.
pub struct LambdaProcess {
    child: Child,
    queue: mpsc::Sender<Pending>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
    /// The request id of every invocation so far, in order.
    request_ids: Vec<String>,
    server: tokio::task::JoinHandle<()>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    pub function_name: String,
    pub runtime_api: SocketAddr,
}

impl LambdaProcess {
    /// Starts the Runtime API on a free loopback port and the binary against it, with `env` added to
    /// the variables Lambda itself sets.
    pub async fn spawn(
        binary: &Path,
        function_name: &str,
        env: &[(String, String)],
    ) -> anyhow::Result<LambdaProcess> {
        if !binary.exists() {
            bail!(
                "{} does not exist: build it first (make build-debug)",
                binary.display()
            );
        }
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let runtime_api = listener.local_addr()?;
        let (queue, receiver) = mpsc::channel(16);
        let shared = Arc::new(Shared {
            queue: tokio::sync::Mutex::new(receiver),
            waiting: Mutex::new(HashMap::new()),
            init_error: Mutex::new(None),
            function_arn: format!("arn:aws:lambda:us-east-1:000000000000:function:{function_name}"),
        });
        let server = tokio::spawn(serve(listener, shared.clone()));

        let mut command = Command::new(binary);
        command
            .env("AWS_LAMBDA_RUNTIME_API", runtime_api.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", function_name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
            .env(
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{function_name}"),
            )
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "local")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        collect_lines(child.stdout.take(), stdout.clone());
        collect_lines(child.stderr.take(), stderr.clone());
        Ok(LambdaProcess {
            child,
            queue,
            shared,
            next_id: AtomicU64::new(1),
            request_ids: Vec::new(),
            server,
            stdout,
            stderr,
            function_name: function_name.to_string(),
            runtime_api,
        })
    }

    /// Hands `payload` to the function and waits for its answer, at most `timeout` (also the
    /// invocation's deadline, as the function sees it).
    pub async fn invoke(
        &mut self,
        payload: &serde_json::Value,
        timeout: Duration,
    ) -> anyhow::Result<Outcome> {
        self.invoke_raw(Bytes::from(serde_json::to_vec(payload)?), timeout)
            .await
    }

    /// [`Self::invoke`] with the payload's exact bytes (numbers with more digits than an `f64`
    /// keeps, odd spacing).
    pub async fn invoke_raw(
        &mut self,
        payload: Bytes,
        timeout: Duration,
    ) -> anyhow::Result<Outcome> {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let request_id = format!("00000000-0000-4000-8000-{n:012}");
        self.request_ids.push(request_id.clone());
        let (tx, rx) = oneshot::channel();
        self.shared
            .waiting
            .lock()
            .unwrap()
            .insert(request_id.clone(), tx);
        let deadline_ms = now_ms() + timeout.as_millis();
        self.queue
            .send(Pending {
                request_id: request_id.clone(),
                payload,
                deadline_ms,
            })
            .await
            .map_err(|_| anyhow!("runtime API is gone"))?;
        let result = tokio::select! {
            outcome = rx => outcome.map_err(|_| anyhow!("invocation {request_id} was dropped")),
            status = self.child.wait() => {
                let init_error = self.shared.init_error.lock().unwrap().clone();
                Err(anyhow!(
                    "{} exited ({}) during invocation {request_id}{}\n{}",
                    self.function_name,
                    status.map(|s| s.to_string()).unwrap_or_default(),
                    init_error.map(|e| format!("; init error: {e}")).unwrap_or_default(),
                    self.stderr_text()
                ))
            }
            _ = tokio::time::sleep(timeout) => Err(anyhow!("{} timed out after {timeout:?}", self.function_name)),
        };
        self.shared.waiting.lock().unwrap().remove(&request_id);
        result
    }

    /// Kills the process at once, as Lambda does on a time-out or a crash.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Waits for the process to exit by itself (e.g. a failed cold start).
    pub async fn wait_exit(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        Ok(tokio::time::timeout(timeout, self.child.wait()).await??)
    }

    /// The request id of every invocation so far, in order.
    pub fn request_ids(&self) -> &[String] {
        &self.request_ids
    }

    /// Lines the function wrote to stdout (EMF metric lines).
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Lines the function wrote to stderr (its JSON logs).
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }
}

impl Drop for LambdaProcess {
    fn drop(&mut self) {
        self.server.abort();
        let _ = self.child.start_kill();
    }
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}

fn collect_lines<R>(pipe: Option<R>, into: Arc<Mutex<Vec<String>>>)
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    let Some(pipe) = pipe else { return };
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            into.lock().unwrap().push(line);
        }
    });
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| route(req, shared.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

async fn route(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return Ok(reply(StatusCode::NOT_FOUND, "unknown path"));
    };
    let method = req.method().clone();
    let body = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Ok(reply(StatusCode::BAD_REQUEST, "unreadable body")),
    };
    let segments: Vec<&str> = rest.split('/').collect();
    Ok(match (method, segments.as_slice()) {
        (Method::GET, ["invocation", "next"]) => {
            let next = shared.queue.lock().await.recv().await;
            match next {
                Some(pending) => {
                    let mut response = reply(StatusCode::OK, pending.payload);
                    let headers = response.headers_mut();
                    let header = |v: &str| v.parse().expect("ascii header value");
                    headers.insert("Lambda-Runtime-Aws-Request-Id", header(&pending.request_id));
                    headers.insert(
                        "Lambda-Runtime-Deadline-Ms",
                        header(&pending.deadline_ms.to_string()),
                    );
                    headers.insert(
                        "Lambda-Runtime-Invoked-Function-Arn",
                        header(&shared.function_arn),
                    );
                    headers.insert(
                        "Lambda-Runtime-Trace-Id",
                        header("Root=1-00000000-000000000000000000000000;Sampled=0"),
                    );
                    headers.insert("Content-Type", header("application/json"));
                    response
                }
                None => reply(StatusCode::GONE, "shutting down"),
            }
        }
        (Method::POST, ["invocation", request_id, kind @ ("response" | "error")]) => {
            let value = serde_json::from_slice(&body).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&body).into())
            });
            let outcome = if *kind == "response" {
                Outcome::Response(value)
            } else {
                Outcome::FunctionError(value)
            };
            let waiter = shared.waiting.lock().unwrap().remove(*request_id);
            match waiter {
                Some(tx) => {
                    let _ = tx.send(outcome);
                    reply(StatusCode::ACCEPTED, "{\"status\":\"OK\"}")
                }
                None => reply(StatusCode::BAD_REQUEST, "unknown request id"),
            }
        }
        (Method::POST, ["init", "error"]) => {
            *shared.init_error.lock().unwrap() = Some(String::from_utf8_lossy(&body).into());
            reply(StatusCode::ACCEPTED, "{\"status\":\"OK\"}")
        }
        _ => reply(StatusCode::NOT_FOUND, "unknown path"),
    })
}
