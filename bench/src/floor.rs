//! The floor of the batch-list load: a bare axum server (one route, no middleware, a runtime of
//! two workers as `wenhui serve` runs on these machines) that answers every request with the
//! bytes the service answered the batch list with. What wrk gets from it is the most any
//! service built on axum and hyper could answer here with wrk on the same cores, whatever it
//! did to build the answer: the ceiling of the ratio on this machine.

use std::net::SocketAddr;
use std::thread::JoinHandle;

use anyhow::{Context, anyhow, ensure};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};

/// The answer the floor serves: status, headers and body as the service gave them.
#[derive(Clone)]
pub struct CopiedAnswer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl CopiedAnswer {
    /// One GET of `url` (a success), kept whole but for the headers hyper writes itself for
    /// each answer. reqwest and axum share the `http` and `bytes` types: nothing is converted.
    pub async fn fetch(client: &reqwest::Client, url: &str) -> anyhow::Result<CopiedAnswer> {
        let answer = client.get(url).send().await.with_context(|| format!("GET {url}"))?;
        let status = answer.status();
        ensure!(status.is_success(), "GET {url} answered {status}: the floor copies a success");
        let mut headers = answer.headers().clone();
        for per_answer in
            [header::CONTENT_LENGTH, header::TRANSFER_ENCODING, header::DATE, header::CONNECTION]
        {
            headers.remove(per_answer);
        }
        let body = answer.bytes().await.context("the answer's body")?;
        Ok(CopiedAnswer { status, headers, body })
    }

    pub fn body_len(&self) -> usize {
        self.body.len()
    }
}

/// The bare server, on a thread of its own until dropped.
pub struct FloorServer {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FloorServer {
    /// Starts serving `answer` on a free loopback port.
    pub fn start(answer: CopiedAnswer) -> anyhow::Result<FloorServer> {
        let (bound_tx, bound_rx) = std::sync::mpsc::channel::<std::io::Result<SocketAddr>>();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("floor".into())
            .spawn(move || serve(answer, bound_tx, stopped))
            .context("starting the floor server's thread")?;
        let addr = bound_rx
            .recv()
            .map_err(|_| anyhow!("the floor server stopped before it listened"))?
            .context("binding the floor server")?;
        Ok(FloorServer { addr, stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for FloorServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    answer: CopiedAnswer,
    bound: std::sync::mpsc::Sender<std::io::Result<SocketAddr>>,
    stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = bound.send(Err(error));
            return;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(listener) => listener,
            Err(error) => {
                let _ = bound.send(Err(error));
                return;
            }
        };
        let _ = bound.send(listener.local_addr());
        let app = axum::Router::new().fallback(move || {
            let CopiedAnswer { status, headers, body } = answer.clone();
            async move { (status, headers, body) }
        });
        let shutdown = async move {
            let _ = stopped.await;
        };
        if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::warn!(%error, "the floor server failed");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_floor_answers_the_copied_bytes_with_its_own_length_and_date() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
        headers.insert(header::ETAG, header::HeaderValue::from_static("\"abc\""));
        let answer = CopiedAnswer { status: StatusCode::OK, headers, body: Bytes::from_static(b"{\"n\":1}") };
        let floor = FloorServer::start(answer).expect("the floor starts");
        let client = reqwest::Client::builder().no_proxy().build().expect("a client");
        let url = format!("http://{}/v1/seasons/x/batches", floor.addr);
        let copied = CopiedAnswer::fetch(&client, &url).await.expect("the floor answers");
        assert_eq!(copied.status, StatusCode::OK);
        assert_eq!(&copied.body[..], b"{\"n\":1}");
        assert_eq!(copied.headers.get(header::ETAG).map(|v| v.as_bytes()), Some(&b"\"abc\""[..]));
        assert!(copied.headers.get(header::CONTENT_LENGTH).is_none(), "hyper's own, not copied");
        let raw = client.get(&url).send().await.expect("a second answer");
        assert_eq!(raw.headers().get("content-length").map(|v| v.as_bytes()), Some(&b"7"[..]));
        assert_eq!(raw.headers().get_all("content-type").iter().count(), 1);
        let missing =
            CopiedAnswer { status: StatusCode::NOT_FOUND, headers: HeaderMap::new(), body: Bytes::new() };
        let floor = FloorServer::start(missing).expect("the floor starts");
        let url = format!("http://{}/v1/seasons/x/batches", floor.addr);
        assert!(CopiedAnswer::fetch(&client, &url).await.is_err(), "only a success is copied");
    }
}
