//! Settings files that change while the process runs (the traffic policy, the fault rules):
//! read and checked once at start-up, where a bad file stops the process, then re-read on an
//! interval and applied when their text changed and the new content passes the same checks.
//! A refused reload is logged and counted, and the settings in force stay.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// How a file's content becomes settings, and whether new settings may replace the old.
pub trait Reloadable: Sized + std::fmt::Debug + Send + Sync + 'static {
    /// What the file holds, for logs and the metric (`traffic policy`, `fault rules`).
    const WHAT: &'static str;
    /// Parses and validates the file's text; the error names the field.
    fn parse(text: &str) -> Result<Self, String>;
    /// Whether `next` may replace `self` without a restart.
    fn reloadable_as(&self, _next: &Self) -> Result<(), String> {
        Ok(())
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Reads and parses `path` once; the error names the file.
pub fn load<T: Reloadable>(path: &Path) -> Result<T, String> {
    T::parse(&read(path)?).map_err(|e| format!("{}: {e}", path.display()))
}

/// Loads `path` now (an error stops start-up) and re-reads it every `every`, applying it when
/// its text changed. Outside a Tokio runtime (a configuration check) it is read once.
pub fn watch_file<T: Reloadable>(
    path: PathBuf,
    every: Duration,
) -> Result<watch::Receiver<Arc<T>>, String> {
    let text = read(&path)?;
    let first = T::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if tokio::runtime::Handle::try_current().is_err() {
        return Ok(fixed(first));
    }
    let (tx, rx) = watch::channel(Arc::new(first));
    // The text applied is what later reads compare with, so a change made before the task
    // first runs is not mistaken for the starting point.
    tokio::spawn(reload_loop(path, every, tx, text));
    Ok(rx)
}

/// A receiver of settings that never change (tests, or no file).
pub fn fixed<T: Send + Sync + 'static>(value: T) -> watch::Receiver<Arc<T>> {
    let (tx, rx) = watch::channel(Arc::new(value));
    // Keep the sender alive so receivers never see the channel closed.
    std::mem::forget(tx);
    rx
}

async fn reload_loop<T: Reloadable>(
    path: PathBuf,
    every: Duration,
    tx: watch::Sender<Arc<T>>,
    applied: String,
) {
    // The text itself is compared: a rewrite within the file system's timestamp granularity
    // and of the same length (`90`/`10` -> `50`/`50`) would fool a modification-time check.
    let mut seen = Some(applied);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = tx.closed() => return,
        }
        let now = std::fs::read_to_string(&path).ok();
        if now == seen {
            continue;
        }
        seen = now;
        // The borrow ends before `send_replace`, which waits for it.
        let checked = load::<T>(&path).and_then(|next| {
            let current = tx.borrow().clone();
            current.reloadable_as(&next).map(|()| next)
        });
        let outcome = match checked {
            Ok(next) => {
                tracing::info!(file = %path.display(), settings = ?next, "{} reloaded", T::WHAT);
                tx.send_replace(Arc::new(next));
                "applied"
            }
            Err(e) => {
                tracing::error!(error = %e, "{} reload refused; the previous settings stay in force", T::WHAT);
                "refused"
            }
        };
        crate::telemetry::metrics::SETTINGS_RELOADS
            .with_label_values(&[T::WHAT, outcome])
            .inc();
    }
}
