//! The gateway over real HTTP in front of the echo service: one test per transcoding feature.

use crate::helpers;

use std::time::Duration;

use crate::helpers::{client, echo_gateway};
use ordermesh_gateway::Settings;
use serde_json::{json, Value};

mod mapping;
mod passthrough;
mod streams;

async fn get(url: &str) -> (u16, Value) {
    let r = client().get(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}
