//! Traffic management against real servers and a real DNS server: a weighted split shifted at
//! run time, zone-aware routing with failover and return, consistent-hash affinity, and slow
//! start. Every share is counted by the servers, not by the client.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ordermesh::transport::client::{
    EjectionPolicy, MeshChannel, PolicyHandle, Routing, TrafficPolicy, Upstream,
};
use ordermesh::transport::dns::{DnsServer, Lookup, MeshZone, Resolver, Target};
use tonic::{Code, Request};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::mesh_transport::{backend, check, Backend, Probe};

const TTL: Duration = Duration::from_secs(1);

struct Fixture {
    zone: MeshZone,
    dns: DnsServer,
}

impl Fixture {
    async fn new() -> Self {
        let zone = MeshZone::new("mesh.test.", TTL.as_secs() as u32).unwrap();
        let dns = zone.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        Self { zone, dns }
    }

    async fn set(&self, name: &str, backends: &[&Backend]) {
        let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
        self.zone.set_endpoints(name, &addrs).await.unwrap();
    }

    /// The `payment` upstream under `policy`, calling from `local_zone`.
    fn upstream(&self, policy: PolicyHandle, local_zone: Option<&str>) -> Upstream {
        Upstream::dns(
            "payment",
            Resolver::new(Some(self.dns.local_addr())).unwrap(),
            Target {
                name: self.zone.fqdn("payment"),
                lookup: Lookup::Srv,
            },
        )
        .routing(Some(Routing {
            policy,
            local_zone: local_zone.map(str::to_string),
        }))
    }
}

fn policy(text: &str) -> PolicyHandle {
    PolicyHandle::fixed(TrafficPolicy::parse(text).unwrap())
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// `n` calls from eight concurrent callers; every one must succeed.
async fn calls(channel: &MeshChannel, n: usize) {
    let mut tasks = Vec::new();
    for t in 0..8 {
        let mut c = HealthClient::new(channel.clone());
        let share = n / 8 + usize::from(t < n % 8);
        tasks.push(tokio::spawn(async move {
            for i in 0..share {
                check(&mut c)
                    .await
                    .unwrap_or_else(|e| panic!("call {i} failed: {e:?}"));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn hits(backends: &[&Backend]) -> usize {
    backends.iter().map(|b| b.hits()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_weighted_split_shifts_at_run_time_without_dropping_a_call_and_a_pin_always_lands() {
    let f = Fixture::new().await;
    let (stable, canary) = (
        backend(Probe::default()).await,
        backend(Probe::default()).await,
    );
    f.set("payment", &[&stable]).await;
    f.set("payment-canary", &[&canary]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("traffic.toml");
    write(
        &file,
        "[upstream.payment]\nbackends = { payment = 90, payment-canary = 10 }\n",
    );
    let handle = PolicyHandle::watch_file(file.clone(), Duration::from_millis(50)).unwrap();
    let channel = f.upstream(handle.clone(), None).stack().unwrap();

    calls(&channel, 2000).await;
    let share = canary.hits() as f64 / 2000.0;
    println!(
        "90/10 split: the canary served {:.1}% of 2000 calls",
        share * 100.0
    );
    assert!((0.07..=0.13).contains(&share), "canary share {share:.3}");

    // Shift to 50/50 while eight callers keep calling: no call fails across the reload.
    let (s0, c0) = (stable.hits(), canary.hits());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut running = Vec::new();
    for _ in 0..8 {
        let mut c = HealthClient::new(channel.clone());
        let stop = stop.clone();
        running.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                check(&mut c)
                    .await
                    .expect("a call failed across the reload");
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    write(
        &file,
        "[upstream.payment]\nbackends = { payment = 50, payment-canary = 50 }\n",
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while handle.route("payment").unwrap().backends[0].1 != 50 {
        assert!(Instant::now() < deadline, "the reload was not applied");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (s1, c1) = (stable.hits(), canary.hits());
    // At least 2,000 calls after the reload was applied.
    let deadline = Instant::now() + Duration::from_secs(20);
    while stable.hits() + canary.hits() < s1 + c1 + 2000 {
        assert!(Instant::now() < deadline, "the callers stalled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for r in running {
        r.await.unwrap();
    }
    let after = (canary.hits() - c1) as f64 / (stable.hits() - s1 + canary.hits() - c1) as f64;
    println!(
        "shifted to 50/50 mid-run: {} calls before the reload applied, canary share after it {:.1}%",
        s1 - s0 + c1 - c0,
        after * 100.0
    );
    assert!(
        (0.4..=0.6).contains(&after),
        "canary share after the shift {after:.3}"
    );

    // A pinned call always reaches its backend; an unknown pin is refused by name.
    let c_before = canary.hits();
    let mut client = HealthClient::new(channel.clone());
    for _ in 0..200 {
        let mut req = Request::new(HealthCheckRequest::default());
        req.metadata_mut()
            .insert("x-ordermesh-backend", "payment-canary".parse().unwrap());
        client.check(req).await.unwrap();
    }
    assert_eq!(canary.hits() - c_before, 200);
    let mut req = Request::new(HealthCheckRequest::default());
    req.metadata_mut()
        .insert("x-ordermesh-backend", "payment-beta".parse().unwrap());
    let e = client.check(req).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("payment-beta") && e.message().contains("payment-canary"),
        "{}",
        e.message()
    );
}

/// Two endpoints in each of zone a (`payment-zone-a`) and zone b (`payment-zone-b`).
async fn two_zones() -> (Fixture, [Backend; 2], [Backend; 2]) {
    let f = Fixture::new().await;
    let a = [
        backend(Probe::default()).await,
        backend(Probe::default()).await,
    ];
    let b = [
        backend(Probe::default()).await,
        backend(Probe::default()).await,
    ];
    f.set("payment-zone-a", &[&a[0], &a[1]]).await;
    f.set("payment-zone-b", &[&b[0], &b[1]]).await;
    (f, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zone_routing_stays_local_fails_over_and_comes_back() {
    let (f, a, b) = two_zones().await;
    let (a_refs, b_refs) = ([&a[0], &a[1]], [&b[0], &b[1]]);
    let upstream = f
        .upstream(
            policy("[upstream.payment]\nzones = [\"zone-a\", \"zone-b\"]\n"),
            Some("zone-a"),
        )
        .ejection(EjectionPolicy {
            consecutive: 2,
            base: Duration::from_secs(2),
            max: Duration::from_secs(2),
        });
    let channel = upstream.stack().unwrap();
    // Until the local zone's name has answered, calls go wherever endpoints are known.
    let mut client = HealthClient::new(channel.clone());
    let deadline = Instant::now() + Duration::from_secs(3);
    while hits(&a_refs) == 0 {
        assert!(Instant::now() < deadline, "zone a was never discovered");
        check(&mut client).await.unwrap();
    }

    let (a0, b0) = (hits(&a_refs), hits(&b_refs));
    calls(&channel, 400).await;
    assert_eq!(
        hits(&a_refs) - a0,
        400,
        "all calls stay in the caller's zone"
    );
    assert_eq!(hits(&b_refs), b0);
    assert!(
        a[0].hits() > 0 && a[1].hits() > 0,
        "both local endpoints serve"
    );

    // Zone a's records removed: once the TTL passes, every call goes to zone b.
    f.set("payment-zone-a", &[]).await;
    tokio::time::sleep(TTL + Duration::from_millis(700)).await;
    let (a0, b0) = (hits(&a_refs), hits(&b_refs));
    calls(&channel, 200).await;
    assert_eq!(hits(&a_refs), a0, "no call reaches a removed zone");
    assert_eq!(hits(&b_refs) - b0, 200);

    // Back: zone a returns and takes every call again.
    f.set("payment-zone-a", &a_refs).await;
    tokio::time::sleep(TTL + Duration::from_millis(700)).await;
    let (a0, b0) = (hits(&a_refs), hits(&b_refs));
    calls(&channel, 200).await;
    assert_eq!(
        hits(&a_refs) - a0,
        200,
        "calls come back to the caller's zone"
    );
    assert_eq!(hits(&b_refs), b0);

    // Ejected rather than removed: both local endpoints fail, are ejected, and calls spill
    // to zone b (retries hide the failures that eject them).
    for e in &a {
        e.probe.failing.store(true, Ordering::SeqCst);
    }
    let mut failed = 0;
    for _ in 0..40 {
        failed += usize::from(check(&mut client).await.is_err());
    }
    let b0 = hits(&b_refs);
    calls(&channel, 200).await;
    assert_eq!(
        hits(&b_refs) - b0,
        200,
        "with zone a ejected, zone b serves"
    );
    println!("zone a ejected after {failed} failed calls of 40");
    // Healed and back from ejection: local again.
    for e in &a {
        e.probe.failing.store(false, Ordering::SeqCst);
    }
    tokio::time::sleep(Duration::from_millis(2300)).await;
    // The first calls after the ejection ends re-admit the endpoints.
    calls(&channel, 16).await;
    let (a0, b0) = (hits(&a_refs), hits(&b_refs));
    calls(&channel, 200).await;
    assert_eq!(hits(&a_refs) - a0, 200, "back in zone a after the ejection");
    assert_eq!(hits(&b_refs), b0);
}

/// Which backend served each key (by the keys the servers saw, last call wins).
fn owners(backends: &[&Backend]) -> BTreeMap<String, usize> {
    let mut owner = BTreeMap::new();
    for (i, b) in backends.iter().enumerate() {
        for k in b.probe.keys.lock().unwrap().iter() {
            owner.insert(k.clone(), i);
        }
    }
    owner
}

async fn keyed_calls(channel: &MeshChannel, keys: &[String]) {
    let mut client = HealthClient::new(channel.clone());
    for k in keys {
        let mut req = Request::new(HealthCheckRequest::default());
        req.metadata_mut()
            .insert("x-customer-id", k.parse().unwrap());
        client.check(req).await.unwrap();
    }
}

fn clear_keys(backends: &[&Backend]) {
    for b in backends {
        b.probe.keys.lock().unwrap().clear();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hash_affinity_keeps_each_key_on_one_endpoint_and_a_new_one_takes_few() {
    let f = Fixture::new().await;
    let all = [
        backend(Probe::default()).await,
        backend(Probe::default()).await,
        backend(Probe::default()).await,
        backend(Probe::default()).await,
    ];
    let refs: Vec<&Backend> = all.iter().collect();
    f.set("payment", &refs[..3]).await;
    let channel = f
        .upstream(
            policy("[upstream.payment]\nhash_header = \"x-customer-id\"\n"),
            None,
        )
        .stack()
        .unwrap();
    let keys: Vec<String> = (0..1000).map(|i| format!("customer-{i}")).collect();
    // Until discovery has delivered all three, the ring is smaller: wait for them (calls
    // without a key are balanced over every known endpoint).
    let mut client = HealthClient::new(channel.clone());
    let deadline = Instant::now() + Duration::from_secs(3);
    while refs[..3].iter().any(|b| b.hits() == 0) {
        assert!(
            Instant::now() < deadline,
            "not every endpoint was discovered"
        );
        check(&mut client).await.unwrap();
    }

    // The same key always lands on the same endpoint.
    keyed_calls(&channel, &keys).await;
    keyed_calls(&channel, &keys).await;
    for (i, b) in refs[..3].iter().enumerate() {
        let seen = b.probe.keys.lock().unwrap().clone();
        for k in &seen {
            assert_eq!(
                seen.iter().filter(|s| *s == k).count(),
                2,
                "{k} went to endpoint {i} only once"
            );
        }
    }
    let before = owners(&refs);
    assert_eq!(before.len(), 1000);
    let per: Vec<usize> = (0..3)
        .map(|i| before.values().filter(|o| **o == i).count())
        .collect();
    assert!(per.iter().all(|n| *n > 200), "keys per endpoint {per:?}");

    // A fourth endpoint joins: only keys that move to it move, at most ~30% of them.
    clear_keys(&refs);
    f.set("payment", &refs).await;
    let deadline = Instant::now() + TTL + Duration::from_secs(3);
    while all[3].hits() == 0 {
        assert!(Instant::now() < deadline, "the fourth endpoint got no keys");
        keyed_calls(&channel, &keys[..50]).await;
    }
    clear_keys(&refs);
    keyed_calls(&channel, &keys).await;
    let after = owners(&refs);
    let moved: Vec<&String> = keys.iter().filter(|k| before[*k] != after[*k]).collect();
    for k in &moved {
        assert_eq!(after[*k], 3, "{k} moved between old endpoints");
    }
    println!(
        "consistent hash: a fourth endpoint took {} of 1000 keys ({:.1}%); none moved between the other three",
        moved.len(),
        moved.len() as f64 / 10.0
    );
    // A quarter is the ideal; 1,000 keys sample it within about 1.4 points either way.
    assert!(
        (150..=320).contains(&moved.len()),
        "{} keys moved",
        moved.len()
    );

    // An ejected endpoint's keys go elsewhere; everyone else's stay put.
    all[1].probe.failing.store(true, Ordering::SeqCst);
    let victim = keys.iter().find(|k| after[*k] == 1).unwrap().clone();
    for _ in 0..10 {
        let mut req = Request::new(HealthCheckRequest::default());
        req.metadata_mut()
            .insert("x-customer-id", victim.parse().unwrap());
        let _ = client.check(req).await;
    }
    clear_keys(&refs);
    keyed_calls(&channel, &keys).await;
    let ejected = owners(&refs);
    for k in &keys {
        if after[k] == 1 {
            assert_ne!(ejected[k], 1, "{k} still went to the ejected endpoint");
        } else {
            assert_eq!(ejected[k], after[k], "{k} moved although its owner is fine");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_start_ramps_a_new_endpoints_share_over_the_window() {
    let f = Fixture::new().await;
    let old = [
        backend(Probe::default()).await,
        backend(Probe::default()).await,
    ];
    let new = backend(Probe::default()).await;
    f.set("payment", &[&old[0], &old[1]]).await;
    let window = Duration::from_secs(4);
    let channel = f
        .upstream(
            policy("[upstream.payment]\nslow_start = \"4s\"\nslow_start_min_percent = 5\n"),
            None,
        )
        .stack()
        .unwrap();
    // The first endpoints ramp up too: let their window pass before the new one joins.
    calls(&channel, 200).await;
    tokio::time::sleep(window).await;

    // Eight callers run throughout; the new endpoint joins and its share is sampled.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut c = HealthClient::new(channel.clone());
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                check(&mut c).await.unwrap();
            }
        }));
    }
    f.set("payment", &[&old[0], &old[1], &new]).await;
    let deadline = Instant::now() + TTL + Duration::from_secs(3);
    while new.hits() == 0 {
        assert!(Instant::now() < deadline, "the new endpoint got no calls");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut curve = Vec::new();
    let step = Duration::from_millis(500);
    let mut last = (new.hits(), old[0].hits() + old[1].hits());
    for _ in 0..((window + Duration::from_secs(2)).as_millis() / step.as_millis()) {
        tokio::time::sleep(step).await;
        let now = (new.hits(), old[0].hits() + old[1].hits());
        let (n, o) = (now.0 - last.0, now.1 - last.1);
        curve.push(n as f64 / (n + o).max(1) as f64);
        last = now;
    }
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    let pretty: Vec<String> = curve.iter().map(|s| format!("{:.0}%", s * 100.0)).collect();
    println!(
        "slow start ({window:?}): the new endpoint's share per 500ms: {}",
        pretty.join(" ")
    );
    let early = (curve[0] + curve[1]) / 2.0;
    let late = (curve[curve.len() - 1] + curve[curve.len() - 2]) / 2.0;
    // Its fair share is a third; in its first second its weight is 5% to 25% of a full one.
    assert!(early < 0.12, "first second share {early:.3}: {pretty:?}");
    assert!(late > 0.25, "share after the window {late:.3}: {pretty:?}");
    assert!(late > early * 2.0, "no ramp: {pretty:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_weighted_zone_rule_spills_in_proportion_to_the_local_zones_health() {
    let (f, a, b) = two_zones().await;
    let (a_refs, b_refs) = ([&a[0], &a[1]], [&b[0], &b[1]]);
    let channel = f
        .upstream(
            policy(
                "[upstream.payment]\nzones = [\"zone-a\", \"zone-b\"]\nzone_rule = \"weighted\"\n",
            ),
            Some("zone-a"),
        )
        .ejection(EjectionPolicy {
            consecutive: 1,
            base: Duration::from_secs(60),
            max: Duration::from_secs(60),
        })
        .stack()
        .unwrap();
    let mut client = HealthClient::new(channel.clone());
    let deadline = Instant::now() + Duration::from_secs(3);
    while hits(&a_refs) == 0 {
        assert!(Instant::now() < deadline, "zone a was never discovered");
        check(&mut client).await.unwrap();
    }
    // One of the two local endpoints fails and is ejected: zone a is half healthy, so it
    // keeps min(1, 1.4 x 0.5) = 70% of the calls and 30% spill to zone b.
    a[0].probe.failing.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(5);
    let before = a[0].hits();
    while a[0].hits() == before {
        assert!(
            Instant::now() < deadline,
            "the failing endpoint got no call"
        );
        let _ = check(&mut client).await;
    }
    let (a0, b0) = (hits(&a_refs), hits(&b_refs));
    calls(&channel, 2000).await;
    let local = (hits(&a_refs) - a0) as f64 / 2000.0;
    println!(
        "weighted zone rule, zone a half healthy: {:.1}% of 2000 calls stayed local",
        local * 100.0
    );
    assert!((0.64..=0.76).contains(&local), "local share {local:.3}");
    assert_eq!(
        hits(&b_refs) - b0,
        2000 - (hits(&a_refs) - a0),
        "the rest went to zone b"
    );
    assert_eq!(a[0].hits(), before + 1, "an ejected endpoint got calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backend_without_endpoints_is_skipped_until_it_has_some() {
    let f = Fixture::new().await;
    let (stable, canary) = (
        backend(Probe::default()).await,
        backend(Probe::default()).await,
    );
    f.set("payment", &[&stable]).await;
    // payment-canary has no records yet: its half of the calls goes to payment, at once.
    let channel = f
        .upstream(
            policy("[upstream.payment]\nbackends = { payment = 50, payment-canary = 50 }\n"),
            None,
        )
        .default_timeout(Duration::from_secs(2))
        .stack()
        .unwrap();
    let t = Instant::now();
    calls(&channel, 200).await;
    assert_eq!(stable.hits(), 200);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "calls waited: {:?}",
        t.elapsed()
    );
    // The canary appears: it takes its half once discovered.
    f.set("payment-canary", &[&canary]).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while canary.hits() == 0 {
        assert!(Instant::now() < deadline, "the canary was never discovered");
        calls(&channel, 8).await;
    }
    let (s0, c0) = (stable.hits(), canary.hits());
    calls(&channel, 1000).await;
    let share = (canary.hits() - c0) as f64 / (stable.hits() - s0 + canary.hits() - c0) as f64;
    assert!((0.4..=0.6).contains(&share), "canary share {share:.3}");
}
