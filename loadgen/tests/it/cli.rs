//! Bad command lines: exit status 2 and a message naming the flag; an unreachable target:
//! status 1 and a hint.

use crate::helpers::loadgen_now;

/// Runs the binary, asserts its exit code and answers its stderr.
fn refused(args: &[&str], code: i32) -> String {
    let out = loadgen_now(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?}");
    stderr
}

#[test]
fn a_zero_rate_is_refused_naming_the_flag() {
    let e = refused(&["--rate", "0"], 2);
    assert!(e.contains("--rate") && e.contains("must be > 0"), "{e}");
}

#[test]
fn an_unreadable_duration_is_refused_naming_the_flag() {
    let e = refused(&["--duration", "xyz"], 2);
    assert!(e.contains("--duration") && e.contains("xyz"), "{e}");
}

#[test]
fn a_non_loopback_target_needs_allow_remote() {
    let e = refused(&["--target-rest", "http://10.0.0.1:8080"], 2);
    assert!(
        e.contains(
            "--target-rest http://10.0.0.1:8080 is not a loopback address; pass --allow-remote"
        ),
        "{e}"
    );
    let e = refused(
        &[
            "--transport",
            "grpc",
            "--target-grpc",
            "inventory=192.168.0.7:50053",
        ],
        2,
    );
    assert!(
        e.contains("--target-grpc inventory=192.168.0.7:50053 is not a loopback"),
        "{e}"
    );
}

#[test]
fn flags_of_the_other_mode_are_refused() {
    let e = refused(&["--mode", "closed", "--rate", "10"], 2);
    assert!(e.contains("--rate is for --mode open"), "{e}");
    let e = refused(&["--shoppers", "10"], 2);
    assert!(e.contains("--shoppers is for --mode closed"), "{e}");
}

#[test]
fn unknown_values_and_missing_certificates_name_the_flag() {
    let e = refused(&["--transport", "carrier-pigeon"], 2);
    assert!(e.contains("--transport"), "{e}");
    let e = refused(&["--max-orders", "0"], 2);
    assert!(e.contains("--max-orders"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().to_str().unwrap();
    let e = refused(&["--transport", "grpc", "--certs", certs], 2);
    assert!(
        e.contains("--certs") && e.contains("ca.pem not found"),
        "{e}"
    );
}

#[test]
fn nothing_listening_fails_with_a_hint() {
    let addr = test_support::free_addr();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    let e = refused(
        &[
            "--target-rest",
            &format!("http://{addr}"),
            "--duration",
            "1s",
            "--out",
            out.to_str().unwrap(),
        ],
        1,
    );
    assert!(e.contains("is the mesh running"), "{e}");
}
