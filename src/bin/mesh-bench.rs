//! One-hop benchmark of the mesh client stack (`make bench`): the same mTLS server is called
//! with a bare tonic channel (mTLS connector only) and with the full stack (balancer, ejection,
//! retry, circuit breaker, deadline), in alternating rounds, and the report gives requests/s
//! and p50/p99 latency of each and the stack's cost as ratios. `--policies` instead measures
//! each traffic policy (split, zones, hash affinity, slow start) against bare tonic and the
//! same DNS-discovered stack without a policy, in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use ordermesh::transport::client::Upstream;
use ordermesh::transport::dns::{Lookup, MeshZone, Resolver, Target};
use ordermesh::transport::tls::{ensure_dev_certs, tls_incoming, CertPaths, MeshIdentity};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

#[derive(Parser, Debug)]
#[command(about = "Bare tonic channel vs the ordermesh client stack, one hop over mTLS")]
struct Args {
    /// Concurrent callers.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Calls per round and client kind.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Rounds; the kinds alternate so drift hits both alike.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Balancer of the stack: peak-ewma, least-requests or round-robin.
    #[arg(long, default_value = "peak-ewma")]
    balancer: ordermesh::transport::client::Balancer,
    /// Find the server through a DNS zone served in-process (discovery + balancer), instead of
    /// a fixed address.
    #[arg(long)]
    via_dns: bool,
    /// Leave retries and the circuit breaker out of the stack (to see what they cost).
    #[arg(long)]
    no_resilience: bool,
    /// Trace the hop: `off` (no OpenTelemetry), `context` (W3C context propagated and in the
    /// logs, no exporter, so no spans), or the percentage of calls sampled (`100`, `1`),
    /// exported over OTLP/gRPC to a receiver in this process. With this flag the server
    /// also runs the mesh's RPC server layer, as every `MeshServer` does. Tracing is global to
    /// a process, so compare modes across runs: `scripts/bench-tracing.sh`.
    #[arg(long)]
    tracing: Option<String>,
    /// Measure the traffic policies instead: two endpoints of one server process found
    /// through DNS, the stack without a policy and with each policy, against bare tonic.
    #[arg(long)]
    policies: bool,
}

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

/// An OTLP/gRPC receiver that counts spans and drops them.
#[derive(Clone, Default)]
struct SpanSink(Arc<std::sync::atomic::AtomicU64>);

#[tonic::async_trait]
impl TraceService for SpanSink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let n: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(tonic::Response::new(Default::default()))
    }
}

/// Starts telemetry for `--tracing MODE`; returns the receiver's span counter.
async fn tracing_mode(mode: &str) -> anyhow::Result<(ordermesh::telemetry::Telemetry, SpanSink)> {
    let sink = SpanSink::default();
    let ratio = match mode {
        "off" => None,
        "context" => Some(1.0),
        pct => Some(
            pct.trim_end_matches('%')
                .parse::<f64>()
                .ok()
                .filter(|p| (0.0..=100.0).contains(p))
                .ok_or_else(|| anyhow::anyhow!("--tracing: '{mode}' is not off or a percentage"))?
                / 100.0,
        ),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(sink.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let settings = ordermesh::telemetry::TraceSettings {
        disabled: ratio.is_none(),
        endpoint: (mode != "context").then_some(endpoint),
        service_name: "mesh-bench".into(),
        ratio: ratio.unwrap_or(0.0),
        parent_based: true,
    };
    if std::env::var_os("RUST_LOG").is_none() {
        // The runtime's threads are up already; a bench binary accepts that (see clippy.toml).
        #[allow(clippy::disallowed_methods)]
        std::env::set_var("RUST_LOG", "warn");
    }
    let t = ordermesh::telemetry::init_with(&settings, ordermesh::telemetry::LogFormat::Json);
    Ok((t, sink))
}

#[derive(Default)]
struct Sample {
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Sample {
    fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn add(&mut self, other: Sample) {
        self.latencies.extend(other.latencies);
        self.elapsed += other.elapsed;
    }

    fn quantile(&mut self, q: f64) -> Duration {
        self.latencies.sort_unstable();
        let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        self.latencies.get(i).copied().unwrap_or_default()
    }
}

/// Runs `requests` health checks over `concurrency` callers; `deadline` sets each request's
/// own `grpc-timeout` (what a tonic caller does with `Request::set_timeout`); with `keyed`, each
/// call carries `x-customer-id` (its caller's number).
async fn run<T>(
    client: HealthClient<T>,
    concurrency: usize,
    requests: usize,
    deadline: Option<Duration>,
    keyed: bool,
) -> Sample
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone + Send + 'static,
    T::Future: Send,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
    T::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let per_task = requests / concurrency;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for caller in 0..concurrency {
        let mut c = client.clone();
        let key: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
            format!("customer-{caller}").parse().expect("an ASCII key");
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_task);
            for _ in 0..per_task {
                let t = Instant::now();
                let mut req = tonic::Request::new(HealthCheckRequest::default());
                if let Some(d) = deadline {
                    req.set_timeout(d);
                }
                if keyed {
                    req.metadata_mut().insert("x-customer-id", key.clone());
                }
                if c.check(req).await.is_ok() {
                    lat.push(t.elapsed());
                }
            }
            lat
        }));
    }
    let mut sample = Sample::default();
    for t in tasks {
        sample.latencies.extend(t.await.unwrap_or_default());
    }
    sample.elapsed = started.elapsed();
    sample
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let traced = match &args.tracing {
        Some(mode) => Some(tracing_mode(mode).await?),
        None => None,
    };
    let dir = tempfile_dir()?;
    ensure_dev_certs(&dir, "ordermesh.local", "default", &["inventory", "order"])?;
    if args.policies {
        let result = policies(&args, &dir).await;
        let _ = std::fs::remove_dir_all(&dir);
        return result;
    }
    let server_id = MeshIdentity::load(CertPaths::in_dir(&dir, "inventory"))?;
    let client_id = MeshIdentity::load(CertPaths::in_dir(&dir, "order"))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (_reporter, health) = tonic_health::server::health_reporter();
    let incoming = tls_incoming(listener, server_id, Duration::from_secs(10));
    if traced.is_some() {
        tokio::spawn(
            tonic::transport::Server::builder()
                .layer(ordermesh::telemetry::rpc::ServerLayer::default())
                .add_service(health)
                .serve_with_incoming(incoming),
        );
    } else {
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming(incoming),
        );
    }

    let upstream =
        Upstream::new(format!("http://{addr}")).mesh(Arc::clone(&client_id), "inventory");
    let bare = HealthClient::new(
        upstream
            .connect()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let zone = MeshZone::new("mesh.bench.", 30)?;
    zone.set_endpoints("inventory", &[addr]).await?;
    let dns = zone.serve("127.0.0.1:0".parse()?).await?;
    let base = if args.via_dns {
        Upstream::dns(
            "inventory",
            Resolver::new(Some(dns.local_addr()))?,
            Target {
                name: zone.fqdn("inventory"),
                lookup: Lookup::Srv,
            },
        )
        .mesh(Arc::clone(&client_id), "inventory")
    } else {
        upstream.clone()
    };
    let stacked = if args.no_resilience {
        base.retry(None).breaker(None)
    } else {
        base
    }
    .balancer(args.balancer);
    let stack = HealthClient::new(stacked.stack().map_err(|e| anyhow::anyhow!("{e}"))?);
    // The stack sends every call with a deadline (`grpc-timeout`, the upstream's default when
    // the caller has none), which makes the server arm a timer per call; the second baseline
    // is a bare client that sets the same deadline on each request, as a careful tonic caller
    // does.
    let deadline = Some(upstream.default_timeout);
    // Warm all paths up (connections, EWMA).
    run(bare.clone(), args.concurrency, 2_000, None, false).await;
    run(stack.clone(), args.concurrency, 2_000, None, false).await;

    let mut bare_all = Sample::default();
    let mut timed_all = Sample::default();
    let mut stack_all = Sample::default();
    for round in 0..args.rounds {
        let b = run(bare.clone(), args.concurrency, args.requests, None, false).await;
        let t = run(
            bare.clone(),
            args.concurrency,
            args.requests,
            deadline,
            false,
        )
        .await;
        let s = run(stack.clone(), args.concurrency, args.requests, None, false).await;
        println!(
            "round {}: bare {:.0} req/s, bare with deadline {:.0} req/s, stack {:.0} req/s",
            round + 1,
            b.rps(),
            t.rps(),
            s.rps()
        );
        bare_all.add(b);
        timed_all.add(t);
        stack_all.add(s);
    }
    let s_rps = stack_all.rps();
    let (s50, s99) = (stack_all.quantile(0.5), stack_all.quantile(0.99));
    println!(
        "\none hop over mTLS, {} callers, {} rounds of {} calls each, stack: {}{}",
        args.concurrency,
        args.rounds,
        args.requests,
        if args.via_dns {
            format!("DNS discovery + {:?} balancer", args.balancer)
        } else {
            "fixed address".to_string()
        },
        if args.no_resilience {
            ", no retry/breaker"
        } else {
            ""
        }
    );
    println!("{:<22}{:>10}{:>12}{:>12}", "client", "req/s", "p50", "p99");
    for (name, sample) in [
        ("bare tonic", &mut bare_all),
        ("bare tonic + deadline", &mut timed_all),
        ("mesh stack", &mut stack_all),
    ] {
        let (p50, p99) = (sample.quantile(0.5), sample.quantile(0.99));
        println!("{name:<22}{:>10.0}{p50:>12.2?}{p99:>12.2?}", sample.rps());
    }
    for (name, base) in [("bare", &mut bare_all), ("bare+deadline", &mut timed_all)] {
        println!(
            "stack/{name}: throughput {:.3}, p50 {:.3}, p99 {:.3}",
            s_rps / base.rps(),
            s50.as_secs_f64() / base.quantile(0.5).as_secs_f64(),
            s99.as_secs_f64() / base.quantile(0.99).as_secs_f64()
        );
    }
    if let (Some(mode), Some((telemetry, sink))) = (&args.tracing, traced) {
        telemetry.shutdown().await;
        let spans = sink.0.load(std::sync::atomic::Ordering::Relaxed);
        let calls = (args.rounds * args.requests * 3 + 4_000) as f64;
        println!(
            "tracing {mode}: mesh stack {s_rps:.0} req/s, p50 {:.1}us, p99 {:.1}us; {spans} spans exported ({:.2} per call)",
            s50.as_secs_f64() * 1e6,
            s99.as_secs_f64() * 1e6,
            spans as f64 / calls
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// `--policies`: one server process listening on two ports, found through DNS under every
/// name the policies use; bare tonic calls one port, each stack both.
async fn policies(args: &Args, dir: &std::path::Path) -> anyhow::Result<()> {
    use ordermesh::transport::client::{PolicyHandle, Routing, TrafficPolicy};
    let server_id = MeshIdentity::load(CertPaths::in_dir(dir, "inventory"))?;
    let client_id = MeshIdentity::load(CertPaths::in_dir(dir, "order"))?;
    let (_reporter, health) = tonic_health::server::health_reporter();
    let mut addrs = Vec::new();
    for _ in 0..2 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        addrs.push(listener.local_addr()?);
        let incoming = tls_incoming(listener, server_id.clone(), Duration::from_secs(10));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health.clone())
                .serve_with_incoming(incoming),
        );
    }
    let zone = MeshZone::new("mesh.bench.", 30)?;
    for name in ["inventory", "inventory-canary", "inventory-zone-a"] {
        zone.set_endpoints(name, &addrs).await?;
    }
    zone.set_endpoints("inventory-zone-b", &addrs[..1]).await?;
    let dns = zone.serve("127.0.0.1:0".parse()?).await?;
    let fixed = Upstream::new(format!("http://{}", addrs[0])).mesh(client_id.clone(), "inventory");
    let bare = HealthClient::new(fixed.connect().await.map_err(|e| anyhow::anyhow!("{e}"))?);
    let stack = |policy: Option<&str>| -> anyhow::Result<_> {
        let upstream = Upstream::dns(
            "inventory",
            Resolver::new(Some(dns.local_addr()))?,
            Target {
                name: zone.fqdn("inventory"),
                lookup: Lookup::Srv,
            },
        )
        .mesh(client_id.clone(), "inventory")
        .routing(match policy {
            None => None,
            Some(text) => Some(Routing {
                policy: PolicyHandle::fixed(
                    TrafficPolicy::parse(text).map_err(|e| anyhow::anyhow!("{e}"))?,
                ),
                local_zone: Some("zone-a".into()),
            }),
        });
        Ok(HealthClient::new(
            upstream.stack().map_err(|e| anyhow::anyhow!("{e}"))?,
        ))
    };
    // (name, client, calls carry a hash key)
    let kinds = vec![
        ("dns, no policy", stack(None)?, false),
        (
            "split 90/10",
            stack(Some(
                "[upstream.inventory]\nbackends = { inventory = 90, inventory-canary = 10 }",
            ))?,
            false,
        ),
        (
            "zones (local a)",
            stack(Some(
                "[upstream.inventory]\nzones = [\"zone-a\", \"zone-b\"]",
            ))?,
            false,
        ),
        (
            "hash affinity",
            stack(Some(
                "[upstream.inventory]\nhash_header = \"x-customer-id\"",
            ))?,
            true,
        ),
        (
            // A window longer than the run: every call takes the slow-start draw.
            "slow start (ramping)",
            stack(Some("[upstream.inventory]\nslow_start = \"60m\""))?,
            false,
        ),
    ];
    let n = args.concurrency;
    run(bare.clone(), n, 2_000, None, false).await;
    for (_, c, keyed) in &kinds {
        run(c.clone(), n, 2_000, None, *keyed).await;
    }
    let mut bare_all = Sample::default();
    let mut all: Vec<Sample> = kinds.iter().map(|_| Sample::default()).collect();
    // Each round starts one further along (bare tonic is slot 0), so a drift of the machine's
    // speed during a round does not always hit the same clients.
    let slots = kinds.len() + 1;
    for round in 0..args.rounds {
        let mut line = format!("round {}:", round + 1);
        for k in 0..slots {
            let slot = (round + k) % slots;
            if slot == 0 {
                let b = run(bare.clone(), n, args.requests, None, false).await;
                line += &format!(" bare {:.0},", b.rps());
                bare_all.add(b);
            } else {
                let (name, c, keyed) = &kinds[slot - 1];
                let s = run(c.clone(), n, args.requests, None, *keyed).await;
                line += &format!(" {name} {:.0},", s.rps());
                all[slot - 1].add(s);
            }
        }
        println!("{} req/s", line.trim_end_matches(','));
    }
    println!(
        "\ntraffic policies, one hop over mTLS, {n} callers, {} rounds of {} calls each \
         (bare tonic: one port; stacks: both ports through DNS)",
        args.rounds, args.requests
    );
    println!(
        "{:<22}{:>10}{:>12}{:>12}{:>10}{:>12}",
        "client", "req/s", "p50", "p99", "/bare", "/no policy"
    );
    let bare_rps = bare_all.rps();
    let (b50, b99) = (bare_all.quantile(0.5), bare_all.quantile(0.99));
    println!(
        "{:<22}{bare_rps:>10.0}{b50:>12.2?}{b99:>12.2?}{:>10.3}{:>12}",
        "bare tonic", 1.0, "-"
    );
    let plain_rps = all[0].rps();
    for ((name, _, _), sample) in kinds.iter().zip(all.iter_mut()) {
        let (p50, p99) = (sample.quantile(0.5), sample.quantile(0.99));
        println!(
            "{name:<22}{:>10.0}{p50:>12.2?}{p99:>12.2?}{:>10.3}{:>12.3}",
            sample.rps(),
            sample.rps() / bare_rps,
            sample.rps() / plain_rps
        );
    }
    Ok(())
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("mesh-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
