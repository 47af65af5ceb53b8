//! Fault injection in the real server stack (`MeshServer`) and client stack: rules from a file
//! reloaded while serving, header overrides capped and targeted, the deadline winning over a
//! longer delay, and nothing at all while FAULTS is off.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use http::uri::PathAndQuery;
use ordermesh::config::ServiceConfig;
use ordermesh::transport::client::{MeshChannel, Upstream};
use ordermesh::transport::faults::{FaultSettings, APPLIED_HEADER};
use ordermesh::transport::server::MeshServer;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_prost::ProstCodec;

const PATH: &str = "/test.Probe/Check";
const METHOD: &str = "test.Probe/Check";

/// A unary method outside the health and reflection services (those are never faulted):
/// counts its calls and, when `next` is set, relays to it (a two-hop call).
#[derive(Clone, Default)]
struct Probe {
    hits: Arc<AtomicUsize>,
    next: Option<MeshChannel>,
}

impl NamedService for Probe {
    const NAME: &'static str = "test.Probe";
}

struct Check(Probe);

impl tonic::server::UnaryService<HealthCheckRequest> for Check {
    type Response = HealthCheckResponse;
    type Future = BoxFuture<'static, Result<Response<HealthCheckResponse>, Status>>;

    fn call(&mut self, _req: Request<HealthCheckRequest>) -> Self::Future {
        let probe = self.0.clone();
        Box::pin(async move {
            probe.hits.fetch_add(1, Ordering::SeqCst);
            if let Some(next) = probe.next {
                call(next, &[], None).await?;
            }
            Ok(Response::new(HealthCheckResponse { status: 1 }))
        })
    }
}

impl tower::Service<http::Request<Body>> for Probe {
    type Response = http::Response<Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let probe = self.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::default());
            Ok(grpc.unary(Check(probe), req).await)
        })
    }
}

/// Calls the probe with `headers` as metadata and an optional deadline; the response's
/// `x-ordermesh-fault` header comes back with the result.
async fn call<T>(
    channel: T,
    headers: &[(&'static str, &str)],
    timeout: Option<Duration>,
) -> Result<Option<String>, Status>
where
    T: tonic::client::GrpcService<Body>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
    T::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.into().to_string()))?;
    let mut req = Request::new(HealthCheckRequest::default());
    for (k, v) in headers {
        req.metadata_mut().insert(*k, v.parse().unwrap());
    }
    if let Some(t) = timeout {
        req.set_timeout(t);
    }
    let resp: Response<HealthCheckResponse> = grpc
        .unary(req, PathAndQuery::from_static(PATH), ProstCodec::default())
        .await?;
    Ok(resp
        .metadata()
        .get(APPLIED_HEADER)
        .map(|v| v.to_str().unwrap().to_string()))
}

/// One call to the probe over bare HTTP/2 with a `grpc-timeout`: the server's grpc-status and
/// grpc-message, whatever the client would have done with the deadline.
async fn raw_call(
    addr: std::net::SocketAddr,
    headers: &[(&str, &str)],
    grpc_timeout: &str,
) -> (String, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let mut req = http::Request::post(format!("http://{addr}{PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", grpc_timeout);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let (resp, mut send) = client.send_request(req.body(()).unwrap(), false).unwrap();
    // An empty HealthCheckRequest: uncompressed, zero bytes long.
    send.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .unwrap();
    let resp = resp.await.unwrap();
    let pick = |h: &http::HeaderMap| {
        h.get("grpc-status").map(|s| {
            (
                s.to_str().unwrap().to_string(),
                h.get("grpc-message")
                    .map(|m| m.to_str().unwrap().to_string())
                    .unwrap_or_default(),
            )
        })
    };
    if let Some(found) = pick(resp.headers()) {
        return found;
    }
    let mut body = resp.into_body();
    while let Some(chunk) = body.data().await {
        let _ = chunk.unwrap();
    }
    let trailers = body.trailers().await.unwrap().unwrap_or_default();
    pick(&trailers).unwrap_or_default()
}

/// A `MeshServer` named `service` serving the probe, with these fault settings.
async fn serve(service: &'static str, faults: FaultSettings, probe: Probe) -> MeshChannel {
    serve_at(service, faults, probe).await.0
}

/// `serve`, also giving the address (for a bare channel, without the client stack).
async fn serve_at(
    service: &'static str,
    faults: FaultSettings,
    probe: Probe,
) -> (MeshChannel, std::net::SocketAddr) {
    let mut cfg = ServiceConfig::for_test(service, "sqlite::memory:");
    cfg.faults = faults;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = MeshServer::new(cfg.server(), Routes::new(probe), &[]);
    tokio::spawn(server.serve(listener, std::future::pending()));
    let channel = Upstream::new(format!("http://{addr}"))
        .retry(None)
        .breaker(None)
        .stack()
        .unwrap();
    (channel, addr)
}

fn on(file: Option<&std::path::Path>) -> FaultSettings {
    FaultSettings {
        on: true,
        file: file.map(|p| p.to_path_buf()),
    }
}

fn injected(kind: &str) -> u64 {
    ordermesh::telemetry::metrics::FAULTS_INJECTED
        .with_label_values(&[kind, METHOD])
        .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_from_a_file_apply_and_a_reload_changes_them_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("faults.toml");
    std::fs::write(
        &file,
        "[[rule]]\nname = \"probe-down\"\nservice = \"payment\"\nmethod = \"test.Probe/*\"\nabort = \"UNAVAILABLE\"\n",
    )
    .unwrap();
    let probe = Probe::default();
    let channel = serve("payment", on(Some(&file)), probe.clone()).await;
    let aborts = injected("abort");
    let e = call(channel.clone(), &[], None).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.message().contains("rule=probe-down"), "{}", e.message());
    assert_eq!(
        probe.hits.load(Ordering::SeqCst),
        0,
        "an abort never reaches the handler"
    );
    assert!(injected("abort") > aborts, "the abort was counted");

    // The file changes to a delay: within the reload interval, calls are slow but succeed.
    std::fs::write(
        &file,
        "[[rule]]\nname = \"probe-slow\"\nmethod = \"test.Probe/Check\"\ndelay = \"300ms\"\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(6);
    let applied = loop {
        if let Ok(applied) = call(channel.clone(), &[], None).await {
            break applied;
        }
        assert!(Instant::now() < deadline, "the new rules were not applied");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(applied.as_deref(), Some("delay=300ms;rule=probe-slow"));
    let t = Instant::now();
    call(channel.clone(), &[], None).await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );

    // A bad file is refused (counted as such) and the delay stays.
    let refused = || {
        ordermesh::telemetry::metrics::SETTINGS_RELOADS
            .with_label_values(&["fault rules", "refused"])
            .get()
    };
    let before = refused();
    std::fs::write(&file, "[[rule]]\nabort = \"SOMETIMES\"\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(6);
    while refused() == before {
        assert!(Instant::now() < deadline, "the bad file was not refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let applied = call(channel, &[], None).await.unwrap();
    assert_eq!(applied.as_deref(), Some("delay=300ms;rule=probe-slow"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_overrides_are_capped_and_a_delay_past_the_deadline_is_deadline_exceeded() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("faults.toml");
    std::fs::write(&file, "max_delay = \"200ms\"\n").unwrap();
    let probe = Probe::default();
    let (channel, addr) = serve_at("payment", on(Some(&file)), probe.clone()).await;

    // Asked for 5s, capped at 200ms.
    let t = Instant::now();
    let applied = call(channel.clone(), &[("x-ordermesh-fault-delay", "5s")], None)
        .await
        .unwrap();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(applied.as_deref(), Some("delay=200ms;rule=header"));

    // A delay longer than the caller's deadline: the server itself answers DEADLINE_EXCEEDED
    // (asked over bare HTTP/2, which keeps no deadline of its own) and the handler never runs.
    let before = probe.hits.load(Ordering::SeqCst);
    let (status, message) = raw_call(addr, &[("x-ordermesh-fault-delay", "200ms")], "50m").await;
    assert_eq!(status, "4", "DEADLINE_EXCEEDED; {message}");
    // grpc-message is percent-encoded.
    assert!(
        message
            .replace("%20", " ")
            .contains("the caller's deadline of 50ms passed"),
        "{message}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(probe.hits.load(Ordering::SeqCst), before);

    // An abort by header, on about the asked share of calls.
    let mut failed = 0;
    for _ in 0..200 {
        match call(
            channel.clone(),
            &[
                ("x-ordermesh-fault-abort", "RESOURCE_EXHAUSTED"),
                ("x-ordermesh-fault-percent", "25"),
            ],
            None,
        )
        .await
        {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted);
                failed += 1;
            }
        }
    }
    assert!(
        (25..=75).contains(&failed),
        "{failed} of 200 aborted at 25%"
    );
    // OK is not an abort: the call goes through untouched.
    assert_eq!(
        call(channel, &[("x-ordermesh-fault-abort", "OK")], None)
            .await
            .unwrap(),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_faults_off_the_headers_do_nothing() {
    let probe = Probe::default();
    let channel = serve("payment", FaultSettings::default(), probe.clone()).await;
    let t = Instant::now();
    let applied = call(
        channel,
        &[
            ("x-ordermesh-fault-delay", "2s"),
            ("x-ordermesh-fault-abort", "UNAVAILABLE"),
        ],
        None,
    )
    .await
    .unwrap();
    assert_eq!(applied, None);
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(probe.hits.load(Ordering::SeqCst), 1);

    // Nor are they passed on: a server with FAULTS off in front of one with it on.
    let back = Probe::default();
    let back_channel = serve("payment", on(None), back.clone()).await;
    let front = Probe {
        next: Some(back_channel),
        ..Probe::default()
    };
    let channel = serve("order", FaultSettings::default(), front).await;
    call(
        channel,
        &[
            ("x-ordermesh-fault-abort", "UNAVAILABLE"),
            ("x-ordermesh-fault-target", "payment"),
        ],
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        back.hits.load(Ordering::SeqCst),
        1,
        "payment ran, unfaulted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_targeted_fault_travels_down_to_the_service_it_names() {
    let back = Probe::default();
    let back_channel = serve("payment", on(None), back.clone()).await;
    let front = Probe {
        next: Some(back_channel),
        ..Probe::default()
    };
    let channel = serve("order", on(None), front.clone()).await;

    // Targeted at payment: order serves the call, its call to payment fails by the fault.
    let e = call(
        channel.clone(),
        &[
            ("x-ordermesh-fault-abort", "UNAVAILABLE"),
            ("x-ordermesh-fault-target", "payment"),
        ],
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("fault injected"), "{}", e.message());
    assert_eq!(front.hits.load(Ordering::SeqCst), 1, "order ran");
    assert_eq!(
        back.hits.load(Ordering::SeqCst),
        0,
        "payment aborted before its handler"
    );

    // Untargeted: the first server applies it and nothing travels on.
    let e = call(
        channel.clone(),
        &[("x-ordermesh-fault-abort", "UNAVAILABLE")],
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(
        front.hits.load(Ordering::SeqCst),
        1,
        "order aborted at once"
    );

    // A plain call afterwards: both hops run, no fault anywhere.
    assert_eq!(call(channel, &[], None).await.unwrap(), None);
    assert_eq!(back.hits.load(Ordering::SeqCst), 1);
}
