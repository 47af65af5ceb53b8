//! Shutdown: the process signal, and the drain notice that long-lived streams watch.

use tokio::sync::watch;

/// Resolves on ctrl-c or SIGTERM.
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("ctrl-c received, draining"),
        _ = term => tracing::info!("SIGTERM received, draining"),
    }
}

/// Tells server-streaming handlers that the server is draining, so they end their
/// streams instead of holding the shutdown open.
#[derive(Clone, Debug)]
pub struct Drain {
    tx: std::sync::Arc<watch::Sender<bool>>,
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

impl Drain {
    pub fn new() -> Self {
        Self {
            tx: std::sync::Arc::new(watch::channel(false).0),
        }
    }

    /// Starts the drain; every `draining()` future resolves.
    pub fn start(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_draining(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once the drain has started (at once if it already has).
    pub async fn draining(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }
}
