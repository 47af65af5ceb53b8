//! The client stack against real servers and a real DNS server: discovery follows record
//! changes, a dead endpoint is ejected, p2c over peak-EWMA avoids a slow endpoint, and a
//! caller's deadline bounds a two-hop call.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ordermesh::transport::client::{
    Balancer, BreakerPolicy, BreakerState, EjectionPolicy, MeshChannel, RetryPolicy, Upstream,
};
use ordermesh::transport::dns::{Lookup, MeshZone, Resolver, Target};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// What a backend does on Check: wait, count, maybe call another upstream.
#[derive(Clone, Default)]
pub(crate) struct Probe {
    pub(crate) delay: Duration,
    pub(crate) hits: Arc<AtomicUsize>,
    /// The `x-customer-id` of each call, for the affinity tests.
    pub(crate) keys: Arc<Mutex<Vec<String>>>,
    /// The grpc-timeout each call arrived with.
    timeouts: Arc<Mutex<Vec<String>>>,
    /// When set, Check relays to this upstream (a two-hop call).
    next: Option<MeshChannel>,
    /// While true, Check answers UNAVAILABLE.
    pub(crate) failing: Arc<std::sync::atomic::AtomicBool>,
}

#[tonic::async_trait]
impl Health for Probe {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        // Decided before the hit is counted, so a test that heals the probe after the first
        // hit cannot heal the first attempt itself.
        let failing = self.failing.load(Ordering::SeqCst);
        self.hits.fetch_add(1, Ordering::SeqCst);
        if let Some(k) = request.metadata().get("x-customer-id") {
            if let Ok(mut all) = self.keys.lock() {
                all.push(k.to_str().unwrap_or("?").to_string());
            }
        }
        if let Some(t) = request.metadata().get("grpc-timeout") {
            if let Ok(mut all) = self.timeouts.lock() {
                all.push(t.to_str().unwrap_or("?").to_string());
            }
        }
        tokio::time::sleep(self.delay).await;
        if failing {
            return Err(Status::unavailable("probe is failing on purpose"));
        }
        if let Some(next) = &self.next {
            return HealthClient::new(next.clone())
                .check(HealthCheckRequest::default())
                .await;
        }
        Ok(Response::new(HealthCheckResponse { status: 1 }))
    }

    type WatchStream = tokio_stream::Empty<Result<HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("this probe answers Check only"))
    }
}

pub(crate) struct Backend {
    pub(crate) addr: SocketAddr,
    pub(crate) probe: Probe,
    _stop: oneshot::Sender<()>,
}

impl Backend {
    pub(crate) fn hits(&self) -> usize {
        self.probe.hits.load(Ordering::SeqCst)
    }
}

pub(crate) async fn backend(probe: Probe) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let svc = HealthServer::new(probe.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(ordermesh::transport::deadline::ServerDeadlineLayer)
            .add_service(svc)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = rx.await;
            }),
    );
    Backend {
        addr,
        probe,
        _stop: tx,
    }
}

fn delayed(ms: u64) -> Probe {
    Probe {
        delay: Duration::from_millis(ms),
        ..Probe::default()
    }
}

pub(crate) async fn check(c: &mut HealthClient<MeshChannel>) -> Result<(), Status> {
    c.check(HealthCheckRequest::default()).await.map(|_| ())
}

/// A port nothing listens on.
async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn discovery_follows_dns_and_ejects_a_dead_endpoint() {
    let ttl = Duration::from_secs(1);
    let zone = MeshZone::new("mesh.test.", ttl.as_secs() as u32).unwrap();
    let a = backend(delayed(0)).await;
    let b = backend(delayed(0)).await;
    zone.set_endpoints("inventory", &[a.addr, b.addr])
        .await
        .unwrap();
    let dns = zone.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let resolver = Resolver::new(Some(dns.local_addr())).unwrap();
    let target = Target {
        name: zone.fqdn("inventory"),
        lookup: Lookup::Srv,
    };
    let upstream = Upstream::dns("inventory", resolver, target).ejection(EjectionPolicy {
        consecutive: 3,
        base: Duration::from_secs(30),
        max: Duration::from_secs(30),
    });
    let mut client = HealthClient::new(upstream.stack().unwrap());
    for _ in 0..40 {
        check(&mut client).await.unwrap();
    }
    assert!(
        a.hits() > 0 && b.hits() > 0,
        "a={} b={}",
        a.hits(),
        b.hits()
    );

    // A new record: traffic reaches the new endpoint within one TTL (plus the polling slack).
    let c = backend(delayed(0)).await;
    zone.set_endpoints("inventory", &[a.addr, b.addr, c.addr])
        .await
        .unwrap();
    let added = Instant::now();
    while c.hits() == 0 && added.elapsed() < ttl + Duration::from_millis(1500) {
        check(&mut client).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = added.elapsed();
    assert!(c.hits() > 0, "new endpoint got no traffic in {took:?}");
    println!("new endpoint reached after {took:?} (TTL {ttl:?})");

    // A removed record drains: no new calls reach it once the TTL has passed.
    zone.set_endpoints("inventory", &[b.addr, c.addr])
        .await
        .unwrap();
    tokio::time::sleep(ttl + Duration::from_millis(600)).await;
    let a_before = a.hits();
    for _ in 0..40 {
        check(&mut client).await.unwrap();
    }
    assert_eq!(a.hits(), a_before, "a removed endpoint still got calls");

    // A dead endpoint still in DNS: a few calls fail, then it is ejected and every call
    // succeeds on the live ones.
    let dead = dead_addr().await;
    zone.set_endpoints("inventory", &[b.addr, c.addr, dead])
        .await
        .unwrap();
    tokio::time::sleep(ttl + Duration::from_millis(600)).await;
    let mut failed = 0;
    for _ in 0..30 {
        if check(&mut client).await.is_err() {
            failed += 1;
        }
    }
    assert!(
        failed <= 3,
        "{failed} calls failed before the dead endpoint was ejected"
    );
    for i in 0..60 {
        check(&mut client)
            .await
            .unwrap_or_else(|e| panic!("call {i} after ejection failed: {e:?}"));
    }
    println!("dead endpoint: {failed} failed calls before ejection");

    // A resolution failure keeps the last good set.
    dns.shutdown().await;
    tokio::time::sleep(ttl + Duration::from_millis(600)).await;
    for _ in 0..20 {
        check(&mut client).await.unwrap();
    }
}

async fn slow_share(balancer: Balancer) -> f64 {
    let fast1 = backend(delayed(2)).await;
    let fast2 = backend(delayed(2)).await;
    let slow = backend(delayed(20)).await;
    let zone = MeshZone::new("mesh.test.", 30).unwrap();
    zone.set_endpoints("payment", &[fast1.addr, fast2.addr, slow.addr])
        .await
        .unwrap();
    let dns = zone.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let upstream = Upstream::dns(
        "payment",
        Resolver::new(Some(dns.local_addr())).unwrap(),
        Target {
            name: zone.fqdn("payment"),
            lookup: Lookup::Srv,
        },
    )
    .balancer(balancer);
    let channel = upstream.stack().unwrap();
    // Eight callers, 60 calls each.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut c = HealthClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..60 {
                check(&mut c).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = (fast1.hits() + fast2.hits() + slow.hits()) as f64;
    assert_eq!(total, 480.0);
    dns.shutdown().await;
    slow.hits() as f64 / total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn p2c_peak_ewma_sends_a_slow_endpoint_well_under_a_third() {
    let share = slow_share(Balancer::PeakEwma).await;
    println!(
        "peak-EWMA: the 10x slower endpoint served {:.1}% of calls",
        share * 100.0
    );
    assert!(share < 0.2, "slow endpoint share {share:.3}");
    let share = slow_share(Balancer::LeastRequests).await;
    println!(
        "least-requests: the 10x slower endpoint served {:.1}% of calls",
        share * 100.0
    );
    assert!(share < 1.0 / 3.0, "slow endpoint share {share:.3}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_callers_deadline_bounds_a_two_hop_call() {
    // inner answers after 2s; outer relays to inner with a 10s default deadline.
    let inner = backend(delayed(2_000)).await;
    let to_inner = Upstream::new(format!("http://{}", inner.addr))
        .default_timeout(Duration::from_secs(10))
        .stack()
        .unwrap();
    let outer = backend(Probe {
        next: Some(to_inner),
        ..Probe::default()
    })
    .await;
    let mut client = HealthClient::new(
        Upstream::new(format!("http://{}", outer.addr))
            .stack()
            .unwrap(),
    );
    let mut req = Request::new(HealthCheckRequest::default());
    req.set_timeout(Duration::from_millis(200));
    let started = Instant::now();
    let err = client.check(req).await.unwrap_err();
    let took = started.elapsed();
    println!("two-hop call with a 200ms deadline failed after {took:?}: {err:?}");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(
        took < Duration::from_millis(800),
        "took {took:?}, not bounded by the caller's 200ms"
    );
    // The inner hop was told how long it had: at most what the caller gave.
    let seen = inner.probe.timeouts.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let t = ordermesh::transport::deadline::parse_grpc_timeout(&seen[0].parse().unwrap()).unwrap();
    assert!(t <= Duration::from_millis(200), "inner hop got {t:?}");

    // Without a caller deadline, the upstream default applies.
    let quick = Upstream::new(format!("http://{}", inner.addr))
        .default_timeout(Duration::from_millis(150))
        .stack()
        .unwrap();
    let started = Instant::now();
    let err = HealthClient::new(quick)
        .check(HealthCheckRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert!(started.elapsed() < Duration::from_millis(800));
}

fn failing() -> Probe {
    let p = Probe::default();
    p.failing.store(true, Ordering::SeqCst);
    p
}

/// A check marked safe to retry, as saga participants' calls are (they carry a key).
fn keyed(key: &str) -> Request<HealthCheckRequest> {
    let mut r = Request::new(HealthCheckRequest::default());
    r.metadata_mut()
        .insert("idempotency-key", key.parse().unwrap());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_breaker_opens_fails_fast_half_opens_and_closes() {
    let b = backend(failing()).await;
    let policy = BreakerPolicy {
        window: 10,
        min_calls: 5,
        failure_rate: 0.5,
        slow_call: Duration::from_secs(5),
        slow_rate: 2.0,
        reset_timeout: Duration::from_millis(300),
        probes: 2,
    };
    let (channel, handle) = Upstream::new(format!("http://{}", b.addr))
        .retry(None)
        .breaker(Some(policy))
        .build()
        .unwrap();
    let breaker = handle.unwrap();
    let mut c = HealthClient::new(channel);
    for i in 0..5 {
        assert_eq!(breaker.state(), BreakerState::Closed, "call {i}");
        let e = c.check(HealthCheckRequest::default()).await.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
    }
    assert_eq!(
        breaker.state(),
        BreakerState::Open,
        "opens after 5 of 5 failed"
    );
    assert_eq!(b.hits(), 5);

    // Open: fails fast without reaching the upstream, naming it.
    let started = Instant::now();
    for _ in 0..20 {
        let e = c.check(HealthCheckRequest::default()).await.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
        assert!(
            e.message().contains("circuit breaker") && e.message().contains(&b.addr.to_string()),
            "{}",
            e.message()
        );
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(b.hits(), 5, "an open breaker sent calls upstream");
    assert_eq!(breaker.fast_failures(), 20);

    // After the reset timeout: half-open; a failed probe opens it again.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(c.check(HealthCheckRequest::default()).await.is_err());
    assert_eq!(b.hits(), 6, "one probe went through");
    assert_eq!(breaker.state(), BreakerState::Open);

    // The upstream recovers: two good probes close the breaker.
    b.probe.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(350)).await;
    check(&mut c).await.unwrap();
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    check(&mut c).await.unwrap();
    assert_eq!(breaker.state(), BreakerState::Closed);
    for _ in 0..10 {
        check(&mut c).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_storm_stays_within_the_budget() {
    let b = backend(failing()).await;
    let policy = RetryPolicy {
        max_attempts: 3,
        base_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
        budget_ratio: 0.1,
        budget_floor_per_sec: 1,
        budget_window: Duration::from_secs(10),
    };
    let channel = Upstream::new(format!("http://{}", b.addr))
        .retry(Some(policy))
        .breaker(None)
        .stack()
        .unwrap();
    let calls = 200;
    let mut c = HealthClient::new(channel);
    for i in 0..calls {
        let e = c.check(keyed(&format!("k{i}"))).await.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
    }
    let attempts = b.hits();
    // Unbudgeted, 3 attempts each would be 600. The budget allows 10% of requests plus a floor
    // of 1/s over the 10s window.
    let allowed = calls + calls / 10 + 10;
    println!("retry storm: {calls} failing calls made {attempts} attempts (budget allows {allowed}, unbudgeted 600)");
    assert!(attempts > calls, "some retries were made");
    assert!(
        attempts <= allowed,
        "{attempts} attempts exceed the budget of {allowed}"
    );

    // A call that is not safe to repeat is sent once.
    let before = b.hits();
    assert!(c.check(HealthCheckRequest::default()).await.is_err());
    assert_eq!(b.hits(), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_hide_a_transient_failure() {
    let b = backend(failing()).await;
    let channel = Upstream::new(format!("http://{}", b.addr))
        .breaker(None)
        .stack()
        .unwrap();
    let mut c = HealthClient::new(channel);
    // Heal the upstream shortly after the first attempt fails.
    let flag = b.probe.failing.clone();
    let hits = b.probe.hits.clone();
    tokio::spawn(async move {
        while hits.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        flag.store(false, Ordering::SeqCst);
    });
    c.check(keyed("once")).await.expect("the retry succeeds");
    assert!(b.hits() >= 2, "{} attempts", b.hits());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_robin_takes_turns() {
    let backends = [
        backend(delayed(0)).await,
        backend(delayed(0)).await,
        backend(delayed(0)).await,
    ];
    let zone = MeshZone::new("mesh.test.", 30).unwrap();
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    zone.set_endpoints("shipping", &addrs).await.unwrap();
    let dns = zone.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let upstream = Upstream::dns(
        "shipping",
        Resolver::new(Some(dns.local_addr())).unwrap(),
        Target {
            name: zone.fqdn("shipping"),
            lookup: Lookup::Srv,
        },
    )
    .balancer("round-robin".parse().unwrap());
    let mut c = HealthClient::new(upstream.stack().unwrap());
    // Wait until all three endpoints have answered once, then count a clean set of turns.
    let started = Instant::now();
    while !backends.iter().all(|b| b.hits() > 0) && started.elapsed() < Duration::from_secs(5) {
        check(&mut c).await.unwrap();
    }
    let before: Vec<usize> = backends.iter().map(|b| b.hits()).collect();
    for _ in 0..30 {
        check(&mut c).await.unwrap();
    }
    let turns: Vec<usize> = backends
        .iter()
        .zip(&before)
        .map(|(b, n)| b.hits() - n)
        .collect();
    assert_eq!(turns, [10, 10, 10], "calls per endpoint");
    dns.shutdown().await;
}
