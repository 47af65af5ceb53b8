//! loadgen: shoppers against ordermesh, over REST through the gateway or over mTLS gRPC to
//! the services, in an open loop (a fixed arrival rate, latency from each shopper's intended
//! start) or a closed loop (N shoppers); HDR percentiles, outcomes and a static report.
//!
//! - `args`: the flags and their checks, into a `Plan`;
//! - `scenario`: the catalog and the weighted shopper sessions;
//! - `shop`: the calls over either transport, one error shape;
//! - `schedule`: when shoppers start (open and closed loop);
//! - `record`: histograms, failures, orders, the timeline;
//! - `progress`: the live line on stderr;
//! - `report`: summary.json, the SVG plots, report.html;
//! - `run`: one run from the catalog to the report.

pub mod args;
pub mod progress;
pub mod record;
pub mod report;
pub mod run;
pub mod scenario;
pub mod schedule;
pub mod shop;
