//! Test support: the echo service (what it received is what it answers), and a gateway on an
//! ephemeral port in front of any upstreams.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use ordermesh::transport::client::Upstream;
use ordermesh_gateway::{app, server, Gateway, Settings};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status, Streaming};
use tonic_types::StatusExt;

pub mod mesh;

pub mod pb {
    tonic::include_proto!("ordermesh.echo.v1");
}

pub const ECHO_DESCRIPTOR: &[u8] = tonic::include_file_descriptor_set!("echo_descriptor");

use pb::echo_service_server::{EchoService, EchoServiceServer};
use pb::*;

/// What the echo service has seen, shared with the test.
#[derive(Clone, Default)]
pub struct Echo {
    pub calls: Arc<AtomicUsize>,
    pub streams_open: Arc<AtomicI64>,
    pub streams_cancelled: Arc<AtomicUsize>,
}

impl Echo {
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// Metadata a test may care about: everything but transport headers, `key=value`, sorted.
fn seen<T>(req: &Request<T>) -> Vec<String> {
    let skip = [
        "content-type",
        "te",
        "user-agent",
        "grpc-accept-encoding",
        "grpc-encoding",
        "accept-encoding",
    ];
    let mut out: Vec<String> = req
        .metadata()
        .clone()
        .into_headers()
        .iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .map(|(k, v)| format!("{}={}", k, v.to_str().unwrap_or("<binary>")))
        .collect();
    out.sort();
    out
}

struct CountGuard {
    echo: Echo,
    finished: bool,
}

impl CountGuard {
    fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for CountGuard {
    fn drop(&mut self) {
        self.echo.streams_open.fetch_sub(1, Ordering::SeqCst);
        if !self.finished {
            self.echo.streams_cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[tonic::async_trait]
impl EchoService for Echo {
    async fn echo(&self, req: Request<EchoMessage>) -> Result<Response<EchoMessage>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let metadata_seen = seen(&req);
        let mut msg = req.into_inner();
        msg.metadata_seen = metadata_seen;
        let mut resp = Response::new(msg);
        resp.metadata_mut().insert("x-echo", "yes".parse().unwrap());
        Ok(resp)
    }

    async fn echo_inner(&self, req: Request<EchoMessage>) -> Result<Response<EchoMessage>, Status> {
        self.echo(req).await
    }

    async fn fail(&self, req: Request<FailRequest>) -> Result<Response<()>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let r = req.into_inner();
        let code = tonic::Code::from_i32(r.code);
        Err(if r.field.is_empty() {
            Status::new(code, r.message)
        } else {
            Status::with_error_details(
                code,
                r.message.clone(),
                tonic_types::ErrorDetails::with_bad_request_violation(r.field, r.message),
            )
        })
    }

    type CountStream = Pin<Box<dyn Stream<Item = Result<CountResponse, Status>> + Send>>;

    async fn count(
        &self,
        req: Request<CountRequest>,
    ) -> Result<Response<Self::CountStream>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let r = req.into_inner();
        if r.to < 0 {
            return Err(Status::invalid_argument("to: must not be negative"));
        }
        self.streams_open.fetch_add(1, Ordering::SeqCst);
        let guard = CountGuard {
            echo: self.clone(),
            finished: false,
        };
        let interval = Duration::from_millis(r.interval_ms.max(0) as u64);
        let to = r.to;
        let s = futures::stream::unfold((1, guard), move |(n, guard)| async move {
            if n > to {
                guard.finish();
                return None;
            }
            if n > 1 {
                tokio::time::sleep(interval).await;
            }
            Some((Ok(CountResponse { n }), (n + 1, guard)))
        });
        Ok(Response::new(Box::pin(s)))
    }

    async fn sum(
        &self,
        req: Request<Streaming<SumRequest>>,
    ) -> Result<Response<SumResponse>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut s = req.into_inner();
        let mut out = SumResponse::default();
        while let Some(m) = s.message().await? {
            out.total += m.value;
            out.count += 1;
        }
        Ok(Response::new(out))
    }

    type RunningSumStream = Pin<Box<dyn Stream<Item = Result<SumResponse, Status>> + Send>>;

    async fn running_sum(
        &self,
        req: Request<Streaming<SumRequest>>,
    ) -> Result<Response<Self::RunningSumStream>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let s = futures::stream::unfold(
            (req.into_inner(), SumResponse::default()),
            |(mut s, mut acc)| async move {
                match s.message().await {
                    Ok(Some(m)) => {
                        acc.total += m.value;
                        acc.count += 1;
                        Some((Ok(acc), (s, acc)))
                    }
                    Ok(None) => None,
                    Err(e) => Some((Err(e), (s, acc))),
                }
            },
        );
        Ok(Response::new(Box::pin(s)))
    }

    async fn sleep(&self, req: Request<SleepRequest>) -> Result<Response<()>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(req.into_inner().millis.max(0) as u64)).await;
        Ok(Response::new(()))
    }
}

/// Starts the echo service (plaintext gRPC) on an ephemeral port.
pub async fn echo() -> (Echo, SocketAddr) {
    let echo = Echo::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = EchoServiceServer::new(echo.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (echo, addr)
}

pub struct Running {
    pub addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    stop: Option<oneshot::Sender<()>>,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// A gateway in front of `upstreams`, serving the shipped contracts plus the echo contract.
pub async fn gateway(upstreams: HashMap<String, Upstream>, settings: Settings) -> Running {
    let pool = app::load_pool(&[ECHO_DESCRIPTOR.to_vec()]).unwrap();
    let gateway = Gateway::new(pool, &upstreams, settings).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(server::serve(
        gateway.clone(),
        listener,
        async move {
            let _ = rx.await;
        },
        Duration::from_secs(1),
    ));
    Running {
        addr,
        gateway,
        stop: Some(tx),
    }
}

/// The echo service behind a gateway with `settings`.
pub async fn echo_gateway(settings: Settings) -> (Echo, Running) {
    let (echo, addr) = echo().await;
    let mut ups = HashMap::new();
    ups.insert("echo".to_string(), Upstream::new(format!("http://{addr}")));
    (echo, gateway(ups, settings).await)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().build().unwrap()
}
