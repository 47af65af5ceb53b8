//! The command line: flags as clap parses them, then the checks clap cannot make, into a
//! [`Plan`] that only holds runnable settings. Every refusal names its flag.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use reqwest::Url;
use serde::Serialize;

use crate::scenario::ScenarioKind;

/// make run's gRPC ports for the three services shoppers call.
pub const DEFAULT_GRPC: &str =
    "order=127.0.0.1:50051,inventory=127.0.0.1:50053,shipping=127.0.0.1:50054";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// REST/JSON through the edge gateway.
    Rest,
    /// gRPC over mTLS straight to the services.
    Grpc,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A fixed arrival rate of shoppers (--rate), whatever the answers' latency.
    Open,
    /// A fixed number of shoppers (--shoppers), each starting a new session when one ends.
    Closed,
}

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    about = "Load ordermesh with shopper scenarios and write an HDR/SVG/HTML report",
    after_help = "Targets must be loopback addresses unless --allow-remote is given.",
    // A later flag wins, so a script's defaults can be overridden by its caller's arguments.
    args_override_self = true
)]
pub struct Args {
    /// The gateway's base URL (--transport rest).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080")]
    pub target_rest: String,
    /// The services' gRPC addresses (--transport grpc): `service=host:port`, comma-separated,
    /// for order, inventory and shipping; services not named keep these defaults.
    #[arg(long, value_name = "SVC=ADDR,...", default_value = DEFAULT_GRPC)]
    pub target_grpc: String,
    #[arg(long, value_enum, default_value_t = TransportKind::Rest)]
    pub transport: TransportKind,
    /// Mesh certificates for gRPC: ca.pem, <identity>.pem and <identity>-key.pem.
    #[arg(long, value_name = "DIR", default_value = "var/certs")]
    pub certs: PathBuf,
    /// The mesh identity gRPC calls are made as; it must be allowed to call CreateItem
    /// (deploy/local/authz.toml allows operator and gateway).
    #[arg(long, value_name = "NAME", default_value = "gateway")]
    pub identity: String,
    #[arg(long, value_enum, default_value_t = Mode::Open)]
    pub mode: Mode,
    /// Open loop: shoppers arriving per second (default 20).
    #[arg(long, value_name = "PER_SEC", value_parser = positive_rate, allow_negative_numbers = true)]
    pub rate: Option<f64>,
    /// Closed loop: concurrent shoppers (default 32).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub shoppers: Option<u32>,
    /// How long new shoppers keep arriving, e.g. 60s, 2m, 500ms.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = positive_duration)]
    pub duration: Duration,
    /// Stop after this many requests.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_requests: Option<u64>,
    /// Stop after this many placed orders.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_orders: Option<u64>,
    #[arg(long, value_enum, default_value_t = ScenarioKind::BlackFriday)]
    pub scenario: ScenarioKind,
    /// Catalog size: items LG-0000.. are created (if missing) before the run.
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub skus: u32,
    /// Report folder (default var/loadgen/<UTC timestamp>).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Allow targets outside the loopback range.
    #[arg(long)]
    pub allow_remote: bool,
    /// Seed of the shoppers' choices (default: random, printed in the summary).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Open loop: shoppers in flight at most; later arrivals wait (counted late, latency
    /// still measured from their intended start).
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_in_flight: u32,
    /// How long a placed order may take to reach a final status before it counts as timed out.
    #[arg(long, value_name = "DURATION", default_value = "45s", value_parser = positive_duration)]
    pub order_timeout: Duration,
}

fn positive_rate(s: &str) -> Result<f64, String> {
    let r: f64 = s
        .trim()
        .parse()
        .map_err(|_| "must be a number of shoppers per second, e.g. 20 or 2.5".to_string())?;
    if r.is_finite() && r > 0.0 {
        Ok(r)
    } else {
        Err("must be > 0".into())
    }
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = ordermesh::types::time::parse_duration(s)?;
    if d.is_zero() {
        return Err("must be more than 0".into());
    }
    Ok(d)
}

/// A refused combination or value, naming the flag.
#[derive(Debug, PartialEq, Eq)]
pub struct ArgError {
    pub flag: &'static str,
    pub message: String,
}

impl std::fmt::Display for ArgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ArgError {}

fn refuse(flag: &'static str, message: impl Into<String>) -> ArgError {
    ArgError {
        flag,
        message: message.into(),
    }
}

/// Where the load goes.
#[derive(Clone, Debug)]
pub enum Target {
    Rest { base: Url },
    Grpc(Box<GrpcTarget>),
}

/// The three services shoppers call, and who calls them.
#[derive(Clone, Debug)]
pub struct GrpcTarget {
    pub order: Url,
    pub inventory: Url,
    pub shipping: Url,
    pub certs: PathBuf,
    pub identity: String,
}

impl Target {
    pub fn transport(&self) -> TransportKind {
        match self {
            Target::Rest { .. } => TransportKind::Rest,
            Target::Grpc(_) => TransportKind::Grpc,
        }
    }

    /// One line for the summary and the report.
    pub fn describe(&self) -> String {
        match self {
            Target::Rest { base } => base.as_str().trim_end_matches('/').to_string(),
            Target::Grpc(g) => format!(
                "order={} inventory={} shipping={} as {}",
                hostport(&g.order),
                hostport(&g.inventory),
                hostport(&g.shipping),
                g.identity
            ),
        }
    }
}

fn hostport(u: &Url) -> String {
    format!(
        "{}:{}",
        u.host_str().unwrap_or_default(),
        u.port_or_known_default().unwrap_or_default()
    )
}

/// How the shoppers arrive.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Load {
    Open { rate: f64, max_in_flight: usize },
    Closed { shoppers: u32 },
}

/// What bounds the run: no new shopper after `duration`, nor past either count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub duration: Duration,
    pub max_requests: Option<u64>,
    pub max_orders: Option<u64>,
}

/// A checked run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub target: Target,
    pub load: Load,
    pub bounds: Bounds,
    pub scenario: ScenarioKind,
    pub skus: u32,
    pub seed: u64,
    pub out: PathBuf,
    pub order_timeout: Duration,
}

impl Plan {
    /// Parses a command line (the binary's name first) and checks it.
    pub fn parse_from<I, T>(argv: I) -> Result<Self, PlanError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args = Args::try_parse_from(argv).map_err(PlanError::Clap)?;
        Plan::try_from(args).map_err(PlanError::Arg)
    }
}

/// Why a command line was refused: clap's own errors, or ours.
#[derive(Debug)]
pub enum PlanError {
    Clap(clap::Error),
    Arg(ArgError),
}

impl TryFrom<Args> for Plan {
    type Error = ArgError;

    fn try_from(a: Args) -> Result<Self, ArgError> {
        let load = match a.mode {
            Mode::Open => {
                if a.shoppers.is_some() {
                    return Err(refuse(
                        "--shoppers",
                        "--shoppers is for --mode closed; an open-loop run sets --rate",
                    ));
                }
                Load::Open {
                    rate: a.rate.unwrap_or(20.0),
                    max_in_flight: a.max_in_flight as usize,
                }
            }
            Mode::Closed => {
                if a.rate.is_some() {
                    return Err(refuse(
                        "--rate",
                        "--rate is for --mode open; a closed-loop run sets --shoppers",
                    ));
                }
                Load::Closed {
                    shoppers: a.shoppers.unwrap_or(32),
                }
            }
        };
        let target = match a.transport {
            TransportKind::Rest => {
                let base = parse_url("--target-rest", &a.target_rest)?;
                if base.scheme() != "http" {
                    return Err(refuse(
                        "--target-rest",
                        format!(
                            "--target-rest {}: only http:// is supported (the gateway serves plain HTTP/1.1 and h2c)",
                            a.target_rest
                        ),
                    ));
                }
                check_loopback("--target-rest", &a.target_rest, &base, a.allow_remote)?;
                Target::Rest { base }
            }
            TransportKind::Grpc => {
                let [order, inventory, shipping] = parse_grpc_targets(&a.target_grpc)?;
                for (svc, url) in [
                    ("order", &order),
                    ("inventory", &inventory),
                    ("shipping", &shipping),
                ] {
                    check_loopback(
                        "--target-grpc",
                        &format!("{svc}={}", hostport(url)),
                        url,
                        a.allow_remote,
                    )?;
                }
                check_certs(&a.certs, &a.identity)?;
                Target::Grpc(Box::new(GrpcTarget {
                    order,
                    inventory,
                    shipping,
                    certs: a.certs,
                    identity: a.identity,
                }))
            }
        };
        let out = a.out.unwrap_or_else(|| {
            PathBuf::from("var/loadgen")
                .join(chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string())
        });
        Ok(Plan {
            target,
            load,
            bounds: Bounds {
                duration: a.duration,
                max_requests: a.max_requests,
                max_orders: a.max_orders,
            },
            scenario: a.scenario,
            skus: a.skus,
            seed: a.seed.unwrap_or_else(rand::random),
            out,
            order_timeout: a.order_timeout,
        })
    }
}

fn parse_url(flag: &'static str, s: &str) -> Result<Url, ArgError> {
    let with_scheme = if s.contains("://") {
        s.to_string()
    } else {
        format!("http://{s}")
    };
    let url = Url::parse(&with_scheme)
        .map_err(|e| refuse(flag, format!("{flag} {s}: not an address ({e})")))?;
    if url.host().is_none() || url.port_or_known_default().is_none() {
        return Err(refuse(flag, format!("{flag} {s}: needs a host and a port")));
    }
    Ok(url)
}

/// `order=..,inventory=..,shipping=..` over the defaults; each service once at most.
fn parse_grpc_targets(s: &str) -> Result<[Url; 3], ArgError> {
    const FLAG: &str = "--target-grpc";
    let names = ["order", "inventory", "shipping"];
    let mut given: [Option<String>; 3] = Default::default();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((svc, addr)) = part.split_once('=') else {
            return Err(refuse(
                FLAG,
                format!("{FLAG} {part}: expected service=host:port (order, inventory or shipping)"),
            ));
        };
        let Some(i) = names.iter().position(|n| *n == svc.trim()) else {
            return Err(refuse(
                FLAG,
                format!("{FLAG}: unknown service '{svc}' (order, inventory or shipping)"),
            ));
        };
        if given[i].replace(addr.trim().to_string()).is_some() {
            return Err(refuse(FLAG, format!("{FLAG}: {svc} is given twice")));
        }
    }
    let defaults: Vec<&str> = DEFAULT_GRPC
        .split(',')
        .map(|p| p.split_once('=').map(|(_, a)| a).unwrap_or(p))
        .collect();
    let url = |i: usize| {
        let addr = given[i].as_deref().unwrap_or(defaults[i]);
        let u = parse_url(FLAG, addr)?;
        if u.scheme() != "http" || u.path() != "/" {
            return Err(refuse(
                FLAG,
                format!("{FLAG} {}={addr}: expected host:port", names[i]),
            ));
        }
        Ok(u)
    };
    Ok([url(0)?, url(1)?, url(2)?])
}

/// Loopback is 127.0.0.0/8, ::1 and the name `localhost`; anything else needs --allow-remote.
pub fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => bare.eq_ignore_ascii_case("localhost"),
    }
}

fn check_loopback(flag: &'static str, shown: &str, url: &Url, allow: bool) -> Result<(), ArgError> {
    if allow || is_loopback(url) {
        return Ok(());
    }
    Err(refuse(
        flag,
        format!(
            "{flag} {shown} is not a loopback address; pass --allow-remote to load a remote target"
        ),
    ))
}

fn check_certs(dir: &Path, identity: &str) -> Result<(), ArgError> {
    for f in [
        "ca.pem".to_string(),
        format!("{identity}.pem"),
        format!("{identity}-key.pem"),
    ] {
        if !dir.join(&f).is_file() {
            return Err(refuse(
                "--certs",
                format!(
                    "--certs {}: {f} not found (make certs or make run writes var/certs; --identity picks the leaf)",
                    dir.display()
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(args: &[&str]) -> Result<Plan, String> {
        let argv = std::iter::once("loadgen").chain(args.iter().copied());
        Plan::parse_from(argv).map_err(|e| match e {
            PlanError::Clap(e) => e.to_string(),
            PlanError::Arg(e) => format!("{}: {}", e.flag, e.message),
        })
    }

    #[test]
    fn defaults_are_an_open_loop_rest_black_friday_minute() {
        let p = plan(&[]).unwrap();
        assert_eq!(
            p.load,
            Load::Open {
                rate: 20.0,
                max_in_flight: 1024
            }
        );
        assert_eq!(p.bounds.duration, Duration::from_secs(60));
        assert_eq!(p.scenario, ScenarioKind::BlackFriday);
        assert_eq!(p.target.describe(), "http://127.0.0.1:8080");
        assert!(p.out.starts_with("var/loadgen"));
    }

    #[test]
    fn clap_refusals_name_the_flag() {
        for (args, flag) in [
            (&["--rate", "0"][..], "--rate"),
            (&["--rate", "-3"][..], "--rate"),
            (&["--rate", "fast"][..], "--rate"),
            (&["--duration", "xyz"][..], "--duration"),
            (&["--duration", "0s"][..], "--duration"),
            (&["--mode", "sideways"][..], "--mode"),
            (&["--max-requests", "0"][..], "--max-requests"),
            (&["--scenario", "cyber-monday"][..], "--scenario"),
            (&["--mode", "closed", "--shoppers", "0"][..], "--shoppers"),
        ] {
            let e = plan(args).unwrap_err();
            assert!(e.contains(flag), "{args:?}: {e}");
        }
    }

    #[test]
    fn our_refusals_name_the_flag() {
        let e = plan(&["--target-rest", "http://10.0.0.1:8080"]).unwrap_err();
        assert!(
            e.contains(
                "--target-rest http://10.0.0.1:8080 is not a loopback address; pass --allow-remote"
            ),
            "{e}"
        );
        let e = plan(&["--target-rest", "http://shop.example:80"]).unwrap_err();
        assert!(e.starts_with("--target-rest:"), "{e}");
        let e = plan(&["--mode", "closed", "--rate", "5"]).unwrap_err();
        assert!(e.starts_with("--rate:"), "{e}");
        let e = plan(&["--shoppers", "5"]).unwrap_err();
        assert!(e.starts_with("--shoppers:"), "{e}");
        let e = plan(&["--target-rest", "https://127.0.0.1:8443"]).unwrap_err();
        assert!(e.contains("only http://"), "{e}");
        let e = plan(&[
            "--transport",
            "grpc",
            "--target-grpc",
            "payment=127.0.0.1:1",
        ])
        .unwrap_err();
        assert!(e.contains("unknown service 'payment'"), "{e}");
        let e = plan(&[
            "--transport",
            "grpc",
            "--target-grpc",
            "order=192.168.1.5:50051",
        ])
        .unwrap_err();
        assert!(
            e.contains("--target-grpc order=192.168.1.5:50051 is not a loopback"),
            "{e}"
        );
        let e = plan(&["--transport", "grpc", "--certs", "/nonexistent"]).unwrap_err();
        assert!(
            e.starts_with("--certs:") && e.contains("ca.pem not found"),
            "{e}"
        );
    }

    #[test]
    fn loopback_and_explicit_remote_targets_are_accepted() {
        for t in [
            "http://127.0.0.1:8080",
            "http://127.3.2.1:1",
            "http://localhost:8080",
            "http://[::1]:8080",
        ] {
            assert!(plan(&["--target-rest", t]).is_ok(), "{t}");
        }
        assert!(plan(&["--target-rest", "http://10.0.0.1:8080", "--allow-remote"]).is_ok());
    }

    #[test]
    fn grpc_targets_override_the_defaults_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["ca.pem", "gateway.pem", "gateway-key.pem"] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        let certs = dir.path().to_str().unwrap();
        let p = plan(&[
            "--transport",
            "grpc",
            "--certs",
            certs,
            "--target-grpc",
            "order=127.0.0.1:41051",
            "--mode",
            "closed",
        ])
        .unwrap();
        assert_eq!(
            p.target.describe(),
            "order=127.0.0.1:41051 inventory=127.0.0.1:50053 shipping=127.0.0.1:50054 as gateway"
        );
        assert_eq!(p.load, Load::Closed { shoppers: 32 });
    }
}
