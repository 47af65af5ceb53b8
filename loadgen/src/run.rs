//! One run: create the catalog, let the shoppers in (open or closed loop) within the bounds,
//! let the sessions under way finish, then write the report.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::args::{Load, Plan};
use crate::progress::Progress;
use crate::record::{Outcome, Recorder};
use crate::report::{self, RunInfo, Summary};
use crate::scenario::{Scenario, Step, INITIAL_STOCK};
use crate::schedule::{closed_loop, open_loop, Arrivals};
use crate::shop::{Draft, Failure, Op, Shop, ADDRESSES};

/// The request and order counts a run may not exceed, and the stop of a ctrl-c.
#[derive(Default)]
pub struct Budget {
    max_requests: Option<u64>,
    max_orders: Option<u64>,
    requests: AtomicU64,
    orders: AtomicU64,
    stopped: AtomicBool,
}

impl Budget {
    pub fn new(max_requests: Option<u64>, max_orders: Option<u64>) -> Self {
        Self {
            max_requests,
            max_orders,
            ..Self::default()
        }
    }

    fn take(used: &AtomicU64, max: Option<u64>) -> bool {
        match max {
            None => true,
            Some(max) => used.fetch_add(1, Ordering::Relaxed) < max,
        }
    }

    /// One more request, if the budget has it.
    pub fn take_request(&self) -> bool {
        !self.stopped.load(Ordering::Relaxed) && Self::take(&self.requests, self.max_requests)
    }

    /// One more order, if the budget has it.
    pub fn take_order(&self) -> bool {
        !self.stopped.load(Ordering::Relaxed) && Self::take(&self.orders, self.max_orders)
    }

    /// Whether a new shopper may start.
    pub fn left(&self) -> bool {
        let under = |used: &AtomicU64, max: Option<u64>| {
            max.is_none_or(|m| used.load(Ordering::Relaxed) < m)
        };
        !self.stopped.load(Ordering::Relaxed)
            && under(&self.requests, self.max_requests)
            && under(&self.orders, self.max_orders)
    }

    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }
}

/// What every session shares.
struct Shopping {
    shop: Shop,
    scenario: Scenario,
    recorder: Arc<Recorder>,
    budget: Budget,
    seed: u64,
    run_id: String,
    order_timeout: Duration,
}

impl Shopping {
    /// Records a call that started at `start` and answers when it ended.
    fn record<T>(&self, op: Op, start: Instant, r: &Result<T, Failure>) -> Instant {
        let end = Instant::now();
        self.recorder.record(op, start, end, r.as_ref().map(|_| ()));
        end
    }

    /// Shopper `n`'s session; its first call's latency counts from `due`.
    async fn session(self: Arc<Self>, n: u64, due: Instant) {
        // Each session's own generator: a seed replays every session's choices.
        let mut rng = StdRng::seed_from_u64(self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let steps = self.scenario.session(&mut rng);
        let address = ADDRESSES[rng.random_range(0..ADDRESSES.len())];
        let items = self.scenario.catalog.items();
        let mut start = due;
        for step in steps {
            if !self.budget.take_request() {
                return;
            }
            start = match step {
                Step::ListItems => {
                    let r = self.shop.list_items(20).await;
                    self.record(Op::ListItems, start, &r)
                }
                Step::GetItem(i) => {
                    let r = self.shop.get_item(&items[i].sku).await;
                    self.record(Op::GetItem, start, &r)
                }
                Step::Quote(lines) => {
                    let lines: Vec<(String, i32)> = lines
                        .iter()
                        .map(|(i, q)| (items[*i].sku.clone(), *q))
                        .collect();
                    let r = self.shop.quote(&address, &lines).await;
                    self.record(Op::Quote, start, &r)
                }
                Step::Buy {
                    lines,
                    card,
                    cancel,
                } => {
                    if !self.budget.take_order() {
                        return;
                    }
                    let draft = Draft {
                        customer_id: format!("lg-cust-{}", n % 1000),
                        lines: lines
                            .iter()
                            .map(|(i, q)| (items[*i].sku.clone(), *q, items[*i].price_minor))
                            .collect(),
                        card_token: card.token(),
                        idempotency_key: format!("loadgen/{}/{n}", self.run_id),
                        address,
                    };
                    self.buy(start, &draft, cancel).await;
                    return;
                }
            };
        }
    }

    /// Places the order, cancels it when asked, and follows it to its end.
    async fn buy(&self, placed_from: Instant, draft: &Draft, cancel: bool) {
        let r = self.shop.place_order(draft).await;
        self.record(Op::PlaceOrder, placed_from, &r);
        let Ok(placed) = r else { return };
        self.recorder.order_placed();
        if let Some(end) = placed.end {
            let now = Instant::now();
            self.recorder
                .order_ended(Outcome::Ended(end), now - placed_from, now);
            return;
        }
        if cancel {
            // A shopper who changes their mind: counted as a request, but the watch below
            // happens whatever the budget says, so the order's end is known.
            self.budget.take_request();
            let start = Instant::now();
            let r = self.shop.cancel_order(&placed.order_id).await;
            self.record(Op::CancelOrder, start, &r);
        }
        let start = Instant::now();
        let left = self.order_timeout.saturating_sub(start - placed_from);
        let r = self.shop.watch_order(&placed.order_id, left).await;
        let end = self.record(Op::WatchOrder, start, &r);
        let outcome = match r {
            Ok(e) => Outcome::Ended(e),
            Err(Failure::Timeout) => Outcome::TimedOut,
            Err(_) => Outcome::WatchFailed,
        };
        self.recorder.order_ended(outcome, end - placed_from, end);
    }
}

/// Creates the catalog's items (an item that exists is fine), a few at a time.
async fn create_catalog(shop: &Shop, scenario: &Scenario, target: &str) -> anyhow::Result<()> {
    let mut calls = futures::stream::iter(scenario.catalog.items())
        .map(|item| async move { (item, shop.create_item(item, INITIAL_STOCK).await) })
        .buffer_unordered(16);
    while let Some((item, r)) = calls.next().await {
        if let Err(e) = r {
            let hint = match &e {
                Failure::Transport(_) | Failure::Grpc(tonic::Code::Unavailable) => {
                    " (is the mesh running? `make run` starts it)"
                }
                Failure::Grpc(tonic::Code::PermissionDenied) | Failure::Http(403) => {
                    " (CreateItem is for operator and gateway identities: --identity)"
                }
                _ => "",
            };
            anyhow::bail!("creating item {} at {target}: {e}{hint}", item.sku);
        }
    }
    Ok(())
}

/// Waits for the sessions under way, at most `grace`; answers how many were cut off.
async fn drain(tasks: &mut JoinSet<()>, grace: Duration) -> usize {
    let deadline = Instant::now() + grace;
    loop {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(_)) => {}
            Ok(None) => return 0,
            Err(_) => {
                let n = tasks.len();
                tasks.abort_all();
                return n;
            }
        }
    }
}

/// How the flag spells a value (`black-friday`, `rest`).
fn value_name(v: impl clap::ValueEnum) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

/// Runs `plan`, writes the report into its --out folder and answers its summary.
pub async fn run(plan: Plan) -> anyhow::Result<Summary> {
    std::fs::create_dir_all(&plan.out)
        .with_context(|| format!("--out {}: cannot create it", plan.out.display()))?;
    let scenario = Scenario::new(plan.scenario, plan.skus);
    let target = plan.target.describe();
    let shop = Shop::connect(&plan.target, plan.order_timeout + Duration::from_secs(5))?;
    eprintln!("loadgen: creating {} items at {target}", plan.skus);
    create_catalog(&shop, &scenario, &target).await?;

    let started_at = chrono::Utc::now();
    let start = Instant::now();
    let duration = plan.bounds.duration;
    let recorder = Arc::new(Recorder::new(start, Recorder::bucket_for(duration)));
    let shopping = Arc::new(Shopping {
        shop,
        scenario: scenario.clone(),
        recorder: recorder.clone(),
        budget: Budget::new(plan.bounds.max_requests, plan.bounds.max_orders),
        seed: plan.seed,
        run_id: uuid::Uuid::now_v7().simple().to_string(),
        order_timeout: plan.order_timeout,
    });
    {
        let s = shopping.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\nloadgen: stopping: no new shoppers, waiting for those under way");
                s.budget.stop();
            }
        });
    }
    let progress = Progress::start(recorder.clone(), start, duration);
    let until = start + duration;
    let more = {
        let s = shopping.clone();
        move || s.budget.left()
    };
    let (punctuality, mut tasks) = match plan.load {
        Load::Open {
            rate,
            max_in_flight,
        } => {
            let arrive = |n, due| shopping.clone().session(n, due);
            let (p, tasks) = open_loop(
                Arrivals::new(start, rate),
                until,
                max_in_flight,
                more,
                arrive,
            )
            .await;
            (Some(p), tasks)
        }
        Load::Closed { shoppers } => {
            let s = shopping.clone();
            let session = move |n, now| s.clone().session(n, now);
            (None, closed_loop(shoppers, until, more, session))
        }
    };
    // Shoppers under way finish their session: an order placed just before the end gets the
    // time it needs to become final.
    let unfinished = drain(&mut tasks, plan.order_timeout + Duration::from_secs(5)).await;
    progress.finish().await;

    let recorded = recorder.finish();
    let info = RunInfo {
        scenario: value_name(plan.scenario),
        transport: value_name(plan.target.transport()),
        target,
        mode: match plan.load {
            Load::Open { .. } => "open".into(),
            Load::Closed { .. } => "closed".into(),
        },
        rate: match plan.load {
            Load::Open { rate, .. } => Some(rate),
            Load::Closed { .. } => None,
        },
        shoppers: match plan.load {
            Load::Closed { shoppers } => Some(shoppers),
            Load::Open { .. } => None,
        },
        duration_s: duration.as_secs_f64(),
        max_requests: plan.bounds.max_requests,
        max_orders: plan.bounds.max_orders,
        skus: plan.skus,
        hot_skus: scenario
            .catalog
            .hot()
            .iter()
            .map(|i| i.sku.clone())
            .collect(),
        seed: plan.seed,
        run_id: shopping.run_id.clone(),
        started_at: started_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        elapsed_s: (recorded.elapsed.as_secs_f64() * 10.0).round() / 10.0,
    };
    let summary = Summary::build(info, &recorded, punctuality, unfinished);
    report::write(&plan.out, &summary, &recorded)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_bounds_requests_and_orders() {
        let b = Budget::new(Some(3), Some(1));
        assert!(b.take_order());
        assert!(!b.take_order());
        assert!(!b.left(), "no orders left: no new shopper");
        let b = Budget::new(Some(2), None);
        assert!(b.take_request() && b.take_request());
        assert!(!b.take_request());
        assert!(!b.left());
        let b = Budget::new(None, None);
        assert!(b.left());
        b.stop();
        assert!(!b.left() && !b.take_request());
    }
}
