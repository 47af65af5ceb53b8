//! A bad setting stops the order binary at start-up, naming the variable.

use std::process::{Command, Output};

use crate::crash::BIN;

/// Runs the order binary in plaintext on a scratch SQLite file with `env` added.
fn start_with(dir: &tempfile::TempDir, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.env("PLAINTEXT", "true").env(
        "DATABASE_URL",
        format!("sqlite://{}?mode=rwc", dir.path().join("o.db").display()),
    );
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

const PARTICIPANTS: [(&str, &str); 4] = [
    ("LISTEN_ADDR", "127.0.0.1:0"),
    ("INVENTORY_URL", "http://127.0.0.1:1"),
    ("PAYMENT_URL", "http://127.0.0.1:2"),
    ("SHIPPING_URL", "http://127.0.0.1:3"),
];

#[test]
fn a_bad_upstream_setting_stops_start_up_with_the_variable_named() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |extra: (&str, &str), named: &str| {
        let mut env = PARTICIPANTS.to_vec();
        env.push(extra);
        let out = start_with(&dir, &env);
        assert!(!out.status.success(), "{extra:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(named), "{extra:?}: {err}");
    };
    refused(("PAYMENT_BALANCER", "random"), "PAYMENT_BALANCER");
    refused(("SAGA_STEP_BUDGET", "soon"), "SAGA_STEP_BUDGET");
    refused(("SAGA_STEP_BUDGET", "0s"), "SAGA_STEP_BUDGET");
    // One participant's address without the others (and no MESH_DNS).
    let out = start_with(&dir, &[("INVENTORY_URL", "http://127.0.0.1:1")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PAYMENT_URL"));
}
