//! The live view on stderr: an indicatif bar with the rate, errors, p50 and p99 of the last
//! second when stderr is a terminal; a plain line every few seconds when it is not (CI logs).

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::record::{Recorder, Totals, Window};

/// How often a line is printed when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

/// `1.2ms`, `340ms`, `2.1s`.
pub fn fmt_micros(us: u64) -> String {
    if us < 10_000 {
        format!("{:.1}ms", us as f64 / 1000.0)
    } else if us < 1_000_000 {
        format!("{}ms", us / 1000)
    } else {
        format!("{:.1}s", us as f64 / 1e6)
    }
}

/// One status line from a window of `span`.
pub fn status_line(w: &Window, span: Duration, t: &Totals) -> String {
    let rate = w.requests as f64 / span.as_secs_f64().max(1e-3);
    let (p50, p99) = if w.latency.is_empty() {
        ("-".to_string(), "-".to_string())
    } else {
        (
            fmt_micros(w.latency.value_at_quantile(0.5)),
            fmt_micros(w.latency.value_at_quantile(0.99)),
        )
    };
    format!(
        "{rate:>6.0} req/s  p50 {p50:>7}  p99 {p99:>7}  errors {} ({} now)  orders {} placed, {} final",
        t.errors, w.errors, t.orders_placed, t.orders_final
    )
}

impl Progress {
    /// Starts drawing; `load_for` is how long shoppers keep arriving (the bar's length).
    pub fn start(recorder: Arc<Recorder>, start: Instant, load_for: Duration) -> Self {
        let (tx, mut rx) = oneshot::channel();
        let tty = std::io::stderr().is_terminal();
        let task = tokio::spawn(async move {
            let bar = tty.then(|| {
                let bar = ProgressBar::with_draw_target(
                    Some(load_for.as_secs().max(1)),
                    ProgressDrawTarget::stderr(),
                );
                bar.set_style(
                    ProgressStyle::with_template("{elapsed:>4} [{bar:24}] {pos}/{len}s {msg}")
                        .expect("a valid template")
                        .progress_chars("=> "),
                );
                bar
            });
            let every = if tty {
                Duration::from_secs(1)
            } else {
                LINE_EVERY
            };
            let mut tick = tokio::time::interval_at(Instant::now() + every, every);
            let mut last = Instant::now();
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = &mut rx => break,
                }
                let now = Instant::now();
                let (w, totals) = recorder.take_window();
                let mut line = status_line(&w, now - last, &totals);
                last = now;
                let elapsed = now.saturating_duration_since(start);
                if elapsed > load_for {
                    line = format!("draining (shoppers under way finish)  {line}");
                }
                match &bar {
                    Some(bar) => {
                        bar.set_position(elapsed.as_secs().min(load_for.as_secs()));
                        bar.set_message(line);
                    }
                    None => eprintln!("loadgen [{:>4}s] {line}", elapsed.as_secs()),
                }
            }
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
        });
        Self {
            stop: Some(tx),
            task,
        }
    }

    /// Stops drawing and clears the bar.
    pub async fn finish(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(fmt_micros(1_234), "1.2ms");
        assert_eq!(fmt_micros(340_000), "340ms");
        assert_eq!(fmt_micros(2_100_000), "2.1s");
    }
}
