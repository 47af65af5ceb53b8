//! The mesh in this process over mTLS (`test_support`: inventory, payment, shipping and the
//! order service with its saga, each on a fresh SQLite database and an ephemeral port), the
//! gateway in front of it, and the loadgen binary run against them.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use ordermesh::testing::Backend;
use ordermesh::transport::client::Upstream;
use ordermesh_gateway::{app, server, Gateway, Settings};
use test_support::MeshConfig;
use tokio::sync::oneshot;

pub struct Shop {
    pub services: test_support::Mesh,
    /// The gateway's base URL.
    pub rest: String,
    /// `--target-grpc` for the services.
    pub grpc: String,
    _stop_gateway: oneshot::Sender<()>,
}

impl Shop {
    pub fn certs(&self) -> &Path {
        self.services.certs_dir().expect("an mTLS mesh")
    }
}

pub async fn shop() -> Shop {
    let config = MeshConfig {
        mtls: true,
        ..MeshConfig::new(Backend::Sqlite)
    };
    let services = test_support::Mesh::participants(config)
        .await
        .with_order()
        .await;
    let as_gateway = services.identity("gateway");
    let upstreams: HashMap<String, Upstream> = services
        .names
        .iter()
        .zip(&services.servers)
        .map(|(name, s)| {
            let up = Upstream::new(s.uri()).mesh(as_gateway.clone(), name);
            (name.to_string(), up)
        })
        .collect();
    let addr_of = |name: &str| {
        let i = services.names.iter().position(|n| *n == name).unwrap();
        services.servers[i].addr
    };
    let grpc = format!(
        "order={},inventory={},shipping={}",
        addr_of("order"),
        addr_of("inventory"),
        addr_of("shipping")
    );
    let gateway = Gateway::new(
        app::load_pool(&[]).unwrap(),
        &upstreams,
        Settings::default(),
    )
    .expect("gateway");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rest = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    let stopped = async {
        let _ = rx.await;
    };
    tokio::spawn(server::serve(
        gateway,
        listener,
        stopped,
        Duration::from_secs(1),
    ));
    Shop {
        services,
        rest,
        grpc,
        _stop_gateway: tx,
    }
}

/// Runs the loadgen binary with `args` and waits for it (off the runtime's threads, which
/// serve the mesh meanwhile).
pub async fn loadgen(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args(&args)
            .output()
            .expect("run loadgen")
    })
    .await
    .unwrap()
}

/// The same, for a command line that must not get as far as any network.
pub fn loadgen_now(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .output()
        .expect("run loadgen")
}
