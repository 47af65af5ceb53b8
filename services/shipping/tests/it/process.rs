//! The real binary as a process: configuration errors name the variable.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_shipping");

#[test]
fn a_bad_setting_stops_start_up_with_the_variable_named() {
    let out = Command::new(BIN)
        .env("LISTEN_ADDR", "not-an-address")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("LISTEN_ADDR"), "{err}");

    let out = Command::new(BIN)
        .env("DATABASE_URL", "mysql://localhost/x")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("DATABASE_URL"));

    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .env("TLS_DIR", empty.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("TLS_CERT") && err.contains("shipping.pem"),
        "mTLS is the default: {err}"
    );

    let out = Command::new(BIN).env("LOG_FORMAT", "xml").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("xml") && err.contains("log-format"), "{err}");
}
