//! The shipping service's integration tests, one binary (one link) for all of them.

mod broker;
mod events;
mod helpers;
mod process;
mod shipping;
