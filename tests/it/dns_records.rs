//! `mesh-dns --records FILE`, the real binary: records change under a running zone when the file
//! does, a bad change is refused with the old records kept, and a name taken out answers
//! NXDOMAIN (what empties a zone for zone-aware routing).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ordermesh::transport::dns::{DnsError, Lookup, Resolver, Target};

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn endpoints(resolver: &Resolver, name: &str) -> Result<Vec<SocketAddr>, DnsError> {
    let target = Target {
        name: format!("{name}.mesh.test."),
        lookup: Lookup::Srv,
    };
    Ok(resolver
        .resolve(&target)
        .await?
        .endpoints
        .into_iter()
        .collect())
}

/// Waits until `name` resolves as `check` wants.
async fn until(
    resolver: &Resolver,
    name: &str,
    check: impl Fn(&Result<Vec<SocketAddr>, DnsError>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = endpoints(resolver, name).await;
        if check(&got) {
            return;
        }
        assert!(Instant::now() < deadline, "{name}: still {got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_follow_the_file_and_a_bad_change_keeps_the_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("records");
    std::fs::write(&file, "# a canary\npayment-canary=127.0.0.1:4001\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mesh-dns"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--zone",
            "mesh.test.",
            "--ttl",
            "1",
        ])
        .arg("--records")
        .arg(&file)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _child = Killed(child);
    // The line that says where it serves: `... mesh DNS serving addr=127.0.0.1:NNNN zone=...`.
    let addr: SocketAddr = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .filter(|l| l.contains("mesh DNS serving"))
        .find_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("addr=")?.parse().ok())
        })
        .expect("mesh-dns said where it serves");
    let resolver = Resolver::new(Some(addr)).unwrap();
    let at = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    assert_eq!(
        endpoints(&resolver, "payment-canary").await.unwrap(),
        vec![at(4001)]
    );

    // A changed file: the canary moves, a zone appears.
    std::fs::write(
        &file,
        "payment-canary=127.0.0.1:4002\npayment-zone-b=127.0.0.1:4003\npayment-zone-b=127.0.0.1:4004\n",
    )
    .unwrap();
    until(&resolver, "payment-canary", |r| {
        r.as_ref().is_ok_and(|e| e == &vec![at(4002)])
    })
    .await;
    assert_eq!(
        endpoints(&resolver, "payment-zone-b").await.unwrap(),
        vec![at(4003), at(4004)]
    );

    // A bad line: refused, the records stay.
    std::fs::write(&file, "payment-canary=nowhere\n").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        endpoints(&resolver, "payment-canary").await.unwrap(),
        vec![at(4002)]
    );

    // A name taken out answers "no records".
    std::fs::write(&file, "payment-canary=127.0.0.1:4002\n").unwrap();
    until(&resolver, "payment-zone-b", |r| {
        matches!(r, Err(DnsError::NoRecords { .. }))
    })
    .await;
}
