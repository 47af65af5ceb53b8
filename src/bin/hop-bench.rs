//! One mTLS hop, server side (`make bench`): ordermesh's full server stack (`MeshServer`: mTLS,
//! authorization by identity, load shedding, deadlines, RPC telemetry, with the same telemetry a
//! service starts) against a grpc-go server (`bench/grpc-go-peer`), each in a process of its own,
//! called by the same client (a bare tonic channel over mTLS) with the same unary method
//! (`grpc.health.v1.Health/Check`) at each concurrency, in alternating rounds. Reports calls/s,
//! p50/p99 and the server's CPU per call (from /proc), and the ratios ordermesh/grpc-go.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use ordermesh::config::ServiceConfig;
use ordermesh::transport::authz::Policy;
use ordermesh::transport::client::Upstream;
use ordermesh::transport::tls::{
    ensure_dev_certs, CertPaths, MeshIdentity, TlsSettings, Transport,
};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const TRUST_DOMAIN: &str = "ordermesh.local";
const NAMESPACE: &str = "default";

#[derive(Parser, Debug)]
#[command(about = "ordermesh's server stack vs a grpc-go server, one unary method over mTLS")]
struct Args {
    /// Concurrent callers, comma separated; each is measured against both servers.
    #[arg(long, value_delimiter = ',', default_value = "32,256")]
    callers: Vec<usize>,
    /// Calls per round and server.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Rounds; the servers alternate so drift hits both alike.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// The grpc-go peer (built by bench/grpc-go-peer/build.sh).
    #[arg(long, default_value = "bench/grpc-go-peer/.build/grpc-go-peer")]
    peer: PathBuf,
    /// Internal: serve ordermesh's stack with the certificates in this folder and print
    /// "listening <addr>" (what the benchmark starts in a child process).
    #[arg(long, hide = true)]
    serve: Option<PathBuf>,
}

/// The child process: a `MeshServer` as a service runs it (Health/Check allowed to `order`).
async fn serve(dir: &Path) -> anyhow::Result<()> {
    let telemetry = ordermesh::telemetry::init("hop-bench", ordermesh::telemetry::LogFormat::Json);
    let policy = Policy::parse(
        "[[rules]]\nmethods = [\"grpc.health.v1.Health/Check\"]\nallow = [\"order\"]\n",
        TRUST_DOMAIN,
        NAMESPACE,
    )
    .map_err(|e| anyhow::anyhow!("policy: {e}"))?;
    let mut config = ServiceConfig::for_test("inventory", "");
    config.transport = Transport::MutualTls(TlsSettings {
        paths: CertPaths::in_dir(dir, "inventory"),
        trust_domain: TRUST_DOMAIN.into(),
        namespace: NAMESPACE.into(),
        policy,
        reload_every: Duration::from_secs(10),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening {}", listener.local_addr()?);
    let server = ordermesh::transport::server::MeshServer::new(
        config.server(),
        tonic::service::Routes::default(),
        &[],
    );
    let served = server
        .serve(listener, ordermesh::transport::shutdown::signal())
        .await;
    telemetry.shutdown().await;
    served
}

/// A server process under test; killed on drop.
struct Server {
    name: &'static str,
    child: Child,
    addr: String,
}

impl Server {
    fn start(name: &'static str, mut cmd: Command) -> anyhow::Result<Self> {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("{name}: cannot start {cmd:?}: {e}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut out = BufReader::new(stdout);
        let mut line = String::new();
        out.read_line(&mut line)?;
        // Whatever the server prints after that is read and dropped, so a full pipe never
        // stalls it mid-benchmark.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let addr = line
            .strip_prefix("listening ")
            .map(|a| a.trim().to_string())
            .ok_or_else(|| anyhow::anyhow!("{name}: expected 'listening <addr>', got {line:?}"))?;
        Ok(Self { name, child, addr })
    }

    /// CPU time the process has used so far (user + system), from /proc.
    fn cpu(&self) -> Duration {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name (which may hold spaces) start after the last ')'.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // utime and stime are fields 14 and 15 of stat, 12 and 13 after the ')'.
        let hz = clock_ticks_per_second();
        Duration::from_secs_f64((ticks(11) + ticks(12)) as f64 / hz)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

#[derive(Default)]
struct Sample {
    latencies: Vec<Duration>,
    failed: usize,
    elapsed: Duration,
    server_cpu: Duration,
}

impl Sample {
    fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn cpu_us_per_call(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 1e6 / self.latencies.len().max(1) as f64
    }

    fn add(&mut self, other: Sample) {
        self.latencies.extend(other.latencies);
        self.failed += other.failed;
        self.elapsed += other.elapsed;
        self.server_cpu += other.server_cpu;
    }

    fn quantile(&mut self, q: f64) -> Duration {
        self.latencies.sort_unstable();
        let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        self.latencies.get(i).copied().unwrap_or_default()
    }
}

async fn client(
    addr: &str,
    id: &Arc<MeshIdentity>,
) -> anyhow::Result<HealthClient<tonic::transport::Channel>> {
    let channel = Upstream::new(format!("http://{addr}"))
        .mesh(Arc::clone(id), "inventory")
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("{addr}: {e}"))?;
    Ok(HealthClient::new(channel))
}

async fn run(
    server: &Server,
    client: &HealthClient<tonic::transport::Channel>,
    callers: usize,
    requests: usize,
) -> Sample {
    let per = requests.div_ceil(callers);
    let cpu_before = server.cpu();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let mut c = client.clone();
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut failed) = (Vec::with_capacity(per), 0);
            for _ in 0..per {
                let t = Instant::now();
                // Every mesh call carries a deadline; the peer gets the same header.
                let mut req = tonic::Request::new(HealthCheckRequest::default());
                req.set_timeout(Duration::from_secs(5));
                match c.check(req).await {
                    Ok(_) => lat.push(t.elapsed()),
                    Err(_) => failed += 1,
                }
            }
            (lat, failed)
        }));
    }
    let mut sample = Sample::default();
    for t in tasks {
        let (lat, failed) = t.await.unwrap_or_default();
        sample.latencies.extend(lat);
        sample.failed += failed;
    }
    sample.elapsed = started.elapsed();
    sample.server_cpu = server.cpu().saturating_sub(cpu_before);
    sample
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(dir) = &args.serve {
        return serve(dir).await;
    }
    if args.callers.contains(&0) || args.requests == 0 || args.rounds == 0 {
        anyhow::bail!("--callers, --requests and --rounds must be at least 1");
    }
    if !args.peer.exists() {
        anyhow::bail!(
            "--peer {}: not found; build it with bench/grpc-go-peer/build.sh",
            args.peer.display()
        );
    }
    let dir = std::env::temp_dir().join(format!("hop-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    ensure_dev_certs(&dir, TRUST_DOMAIN, NAMESPACE, &["inventory", "order"])?;
    let paths = CertPaths::in_dir(&dir, "inventory");
    let mut ours = Command::new(std::env::current_exe()?);
    // Logs as a service logs by default.
    ours.arg("--serve").arg(&dir).env_remove("RUST_LOG");
    let mut peer = Command::new(&args.peer);
    peer.arg("-tls-ca")
        .arg(&paths.ca)
        .arg("-tls-cert")
        .arg(&paths.cert)
        .arg("-tls-key")
        .arg(&paths.key);
    let servers = [
        Server::start("grpc-go", peer)?,
        Server::start("ordermesh", ours)?,
    ];
    let id = MeshIdentity::load(CertPaths::in_dir(&dir, "order"))?;
    let mut clients = Vec::new();
    for s in &servers {
        let c = client(&s.addr, &id).await?;
        // Warm-up: connection, TLS session, the servers' first allocations.
        run(s, &c, 32, 4_000).await;
        clients.push(c);
    }
    println!(
        "one unary call over mTLS (grpc.health.v1.Health/Check), the same tonic client, each server in its own process, {} rounds of {} calls",
        args.rounds, args.requests
    );
    println!(
        "{:<10}{:>8}{:>11}{:>10}{:>10}{:>17}{:>8}",
        "server", "callers", "calls/s", "p50", "p99", "server CPU/call", "failed"
    );
    for &callers in &args.callers {
        let mut all: Vec<Sample> = servers.iter().map(|_| Sample::default()).collect();
        for _ in 0..args.rounds {
            for (i, s) in servers.iter().enumerate() {
                all[i].add(run(s, &clients[i], callers, args.requests).await);
            }
        }
        let mut rows = Vec::new();
        for (s, sample) in servers.iter().zip(all.iter_mut()) {
            let (p50, p99) = (sample.quantile(0.5), sample.quantile(0.99));
            println!(
                "{:<10}{callers:>8}{:>11.0}{p50:>10.2?}{p99:>10.2?}{:>15.1}us{:>8}",
                s.name,
                sample.rps(),
                sample.cpu_us_per_call(),
                sample.failed
            );
            rows.push((sample.rps(), p99, sample.cpu_us_per_call()));
        }
        let (go, om) = (rows[0], rows[1]);
        println!(
            "ordermesh/grpc-go at {callers} callers: calls/s {:.2}, p99 {:.2}, server CPU per call {:.2}",
            om.0 / go.0,
            om.1.as_secs_f64() / go.1.as_secs_f64(),
            om.2 / go.2
        );
    }
    drop(servers);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
