//! Crash points for crash tests: a named place in the code where the process kills itself with
//! SIGKILL, the way a power cut or the OOM killer would (no destructors, no flushing, no
//! goodbye), when the environment variable `ORDERMESH_CRASH_AT` names it. Unset in normal runs,
//! where a point costs one comparison.

use std::sync::OnceLock;

/// The environment variable naming the crash point, e.g. `payment.authorize:after` (every
/// `idempotency::execute` scope is a point, and every saga step).
pub const CRASH_AT_ENV: &str = "ORDERMESH_CRASH_AT";

fn armed() -> Option<&'static str> {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    AT.get_or_init(|| std::env::var(CRASH_AT_ENV).ok().filter(|v| !v.is_empty()))
        .as_deref()
}

/// Dies here if `ORDERMESH_CRASH_AT` is `<name>:<when>`.
pub fn point(name: &str, when: &str) {
    let Some(at) = armed() else {
        return;
    };
    if at.split_once(':') == Some((name, when)) {
        tracing::warn!(name, when, "crash point reached: SIGKILL");
        // SAFETY: kill(2) on our own pid with a valid signal number has no memory effects.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// For a participant operation: dies `before` it does anything, or `after` its transaction
/// committed and before the caller gets the answer (the effect applied, the answer lost).
pub async fn around<T, E, F>(name: &str, op: F) -> Result<T, E>
where
    F: std::future::Future<Output = Result<T, E>>,
{
    point(name, "before");
    let out = op.await;
    if out.is_ok() {
        point(name, "after");
    }
    out
}
