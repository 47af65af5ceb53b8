//! What shoppers do: the catalog they shop from and the weighted mix of sessions of each
//! scenario. A session is drawn from a seeded generator, so a seed replays the same choices.

use clap::ValueEnum;
use rand::Rng;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScenarioKind {
    /// Mostly browsers, some buyers; most orders on a few hot SKUs; declined and failing
    /// cards; a few cancels.
    BlackFriday,
    /// Browsing and shipping quotes only: no orders.
    Browse,
    /// Every shopper buys with a good card, SKUs chosen evenly: the saga's throughput.
    Orders,
}

/// A card token of the payment simulator and what it does to an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Card {
    /// Approved: the order confirms.
    Good,
    /// Declined: the saga turns back at the authorization and the order is rejected.
    Declined,
    /// The processor is down for this card: the saga retries for its step budget (30s by
    /// default), then rejects the order.
    ProcessorDown,
}

impl Card {
    pub fn token(self) -> &'static str {
        match self {
            Card::Good => "tok_visa",
            Card::Declined => "tok_decline",
            Card::ProcessorDown => "tok_processor_down",
        }
    }
}

/// One item of the catalog the run creates before it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub sku: String,
    pub name: String,
    /// EUR cents.
    pub price_minor: i64,
}

/// Stock each item is created with: enough that no run sells out.
pub const INITIAL_STOCK: i64 = 10_000_000;

/// The items; the first `hot` of them are the hot set.
#[derive(Clone, Debug)]
pub struct Catalog {
    items: Vec<Item>,
    hot: usize,
}

impl Catalog {
    /// `n` items `LG-0000`.. with prices from 4.99 to about 100 EUR; the hot set is one in
    /// forty of them, at least one.
    pub fn new(n: u32) -> Self {
        let items = (0..n as i64)
            .map(|i| Item {
                sku: format!("LG-{i:04}"),
                name: format!("Loadgen item {i}"),
                price_minor: 499 + (i * 7_919) % 9_500,
            })
            .collect::<Vec<_>>();
        let hot = (items.len() / 40).max(1);
        Self { items, hot }
    }

    pub fn items(&self) -> &[Item] {
        &self.items
    }

    pub fn hot(&self) -> &[Item] {
        &self.items[..self.hot]
    }

    /// An item: from the hot set with probability `hot_share`, otherwise any item.
    fn pick(&self, rng: &mut impl Rng, hot_share: f64) -> usize {
        if rng.random_bool(hot_share) {
            rng.random_range(0..self.hot)
        } else {
            rng.random_range(0..self.items.len())
        }
    }
}

/// One thing a shopper does; a session is a list of them.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// The first catalog page.
    ListItems,
    /// One item's page (an index into the catalog).
    GetItem(usize),
    /// A shipping quote for these lines.
    Quote(Vec<(usize, i32)>),
    /// Place an order, then watch it to a final status; `cancel` asks to cancel it right
    /// after it is placed.
    Buy {
        lines: Vec<(usize, i32)>,
        card: Card,
        cancel: bool,
    },
}

/// The weights of a scenario.
#[derive(Clone, Copy, Debug)]
struct Mix {
    /// Share of sessions that end in an order.
    buyers: f64,
    /// Sessions that start with the catalog page.
    list_first: bool,
    /// Item pages a session looks at: 1 to this many.
    max_item_views: u32,
    /// Share of browsing sessions that ask for a quote (buyers always do, except `orders`).
    browser_quotes: f64,
    buyer_quotes: bool,
    /// Share of picks that go to the hot set.
    hot_share: f64,
    /// Shares of buyers who cancel, whose card is declined, whose card's processor is down.
    cancels: f64,
    declined: f64,
    processor_down: f64,
    /// Lines per order: 1 to this many.
    max_lines: usize,
}

impl ScenarioKind {
    fn mix(self) -> Mix {
        match self {
            ScenarioKind::BlackFriday => Mix {
                buyers: 0.30,
                list_first: true,
                max_item_views: 3,
                browser_quotes: 0.20,
                buyer_quotes: true,
                hot_share: 0.80,
                cancels: 0.05,
                declined: 0.08,
                processor_down: 0.02,
                max_lines: 2,
            },
            ScenarioKind::Browse => Mix {
                buyers: 0.0,
                list_first: true,
                max_item_views: 4,
                browser_quotes: 0.30,
                buyer_quotes: false,
                hot_share: 0.50,
                cancels: 0.0,
                declined: 0.0,
                processor_down: 0.0,
                max_lines: 1,
            },
            ScenarioKind::Orders => Mix {
                buyers: 1.0,
                list_first: false,
                max_item_views: 1,
                browser_quotes: 0.0,
                buyer_quotes: false,
                hot_share: 0.0,
                cancels: 0.0,
                declined: 0.0,
                processor_down: 0.0,
                max_lines: 1,
            },
        }
    }
}

/// A scenario over a catalog.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub kind: ScenarioKind,
    pub catalog: Catalog,
    mix: Mix,
}

impl Scenario {
    pub fn new(kind: ScenarioKind, skus: u32) -> Self {
        Self {
            kind,
            catalog: Catalog::new(skus),
            mix: kind.mix(),
        }
    }

    /// One shopper's session.
    pub fn session(&self, rng: &mut impl Rng) -> Vec<Step> {
        let m = self.mix;
        let buyer = rng.random_bool(m.buyers);
        let mut steps = Vec::with_capacity(6);
        if m.list_first {
            steps.push(Step::ListItems);
        }
        // Buyers look at what they buy; browsers look around.
        let lines: Vec<(usize, i32)> = if buyer {
            let n = rng.random_range(1..=m.max_lines.min(self.catalog.items.len()));
            let mut lines: Vec<(usize, i32)> = Vec::with_capacity(n);
            while lines.len() < n {
                let i = self.catalog.pick(rng, m.hot_share);
                if !lines.iter().any(|(j, _)| *j == i) {
                    lines.push((i, rng.random_range(1..=3)));
                }
            }
            lines
        } else {
            Vec::new()
        };
        let views = rng.random_range(1..=m.max_item_views);
        for v in 0..views as usize {
            let i = match lines.get(v) {
                Some((i, _)) => *i,
                None => self.catalog.pick(rng, m.hot_share),
            };
            steps.push(Step::GetItem(i));
        }
        if buyer {
            if m.buyer_quotes {
                steps.push(Step::Quote(lines.clone()));
            }
            let roll: f64 = rng.random();
            let card = if roll < m.declined {
                Card::Declined
            } else if roll < m.declined + m.processor_down {
                Card::ProcessorDown
            } else {
                Card::Good
            };
            let cancel = rng.random_bool(m.cancels);
            steps.push(Step::Buy {
                lines,
                card,
                cancel,
            });
        } else if rng.random_bool(m.browser_quotes) {
            let i = self.catalog.pick(rng, m.hot_share);
            steps.push(Step::Quote(vec![(i, 1)]));
        }
        steps
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    fn tally(kind: ScenarioKind, n: usize) -> (usize, usize, usize, usize, usize) {
        let s = Scenario::new(kind, 200);
        let mut rng = StdRng::seed_from_u64(7);
        let (mut buys, mut hot_lines, mut lines, mut declined, mut cancels) = (0, 0, 0, 0, 0);
        for _ in 0..n {
            for step in s.session(&mut rng) {
                if let Step::Buy {
                    lines: l,
                    card,
                    cancel,
                } = step
                {
                    buys += 1;
                    lines += l.len();
                    hot_lines += l.iter().filter(|(i, _)| *i < s.catalog.hot().len()).count();
                    declined += usize::from(card == Card::Declined);
                    cancels += usize::from(cancel);
                }
            }
        }
        (buys, lines, hot_lines, declined, cancels)
    }

    #[test]
    fn black_friday_buys_mostly_hot_skus_with_some_bad_cards_and_cancels() {
        let (buys, lines, hot, declined, cancels) = tally(ScenarioKind::BlackFriday, 10_000);
        assert!((2_700..3_300).contains(&buys), "{buys}");
        assert!(hot * 100 / lines >= 75, "{hot}/{lines}");
        assert!(declined > 0 && declined < buys / 5, "{declined}");
        assert!(cancels > 0 && cancels < buys / 10, "{cancels}");
    }

    #[test]
    fn browse_never_buys_and_orders_always_does() {
        assert_eq!(tally(ScenarioKind::Browse, 1_000).0, 0);
        let (buys, _, _, declined, cancels) = tally(ScenarioKind::Orders, 1_000);
        assert_eq!((buys, declined, cancels), (1_000, 0, 0));
    }

    #[test]
    fn a_seed_replays_the_same_sessions() {
        let s = Scenario::new(ScenarioKind::BlackFriday, 50);
        let run = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..50).map(|_| s.session(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn the_catalog_has_a_hot_set_and_unique_skus() {
        let c = Catalog::new(200);
        assert_eq!(c.hot().len(), 5);
        let mut skus: Vec<_> = c.items().iter().map(|i| &i.sku).collect();
        skus.dedup();
        assert_eq!(skus.len(), 200);
        assert_eq!(Catalog::new(3).hot().len(), 1);
    }
}
