//! `GET /readyz`: ready when every upstream's `grpc.health.v1` check answers SERVING within
//! two seconds; the answer names each upstream's state.

use std::time::Duration;

use http::StatusCode;
use serde_json::json;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::Gateway;
use crate::body::{self, Body};

impl Gateway {
    pub(super) async fn ready(&self) -> http::Response<Body> {
        let names: Vec<String> = self.upstreams.names().map(str::to_string).collect();
        let mut checks = Vec::with_capacity(names.len());
        for name in names {
            let channel = self.upstreams.unary(&name);
            checks.push(async move {
                let result = async {
                    let mut client = HealthClient::new(channel?);
                    let check = client.check(HealthCheckRequest {
                        service: String::new(),
                    });
                    let r = tokio::time::timeout(Duration::from_secs(2), check)
                        .await
                        .map_err(|_| tonic::Status::deadline_exceeded("no answer within 2s"))??;
                    Ok::<_, tonic::Status>(r.into_inner().status)
                }
                .await;
                (name, result)
            });
        }
        let results = futures::future::join_all(checks).await;
        let serving = ServingStatus::Serving as i32;
        let all_ok = results
            .iter()
            .all(|(_, r)| matches!(r, Ok(s) if *s == serving));
        let detail: serde_json::Map<String, serde_json::Value> = results
            .into_iter()
            .map(|(n, r)| {
                let v = match r {
                    Ok(s) if s == serving => json!("SERVING"),
                    Ok(_) => json!("NOT_SERVING"),
                    Err(e) => json!(format!("{:?}: {}", e.code(), e.message())),
                };
                (n, v)
            })
            .collect();
        let mut resp = body::json(
            serde_json::to_vec(&json!({"ready": all_ok, "upstreams": detail})).unwrap_or_default(),
        );
        if !all_ok {
            *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        }
        resp
    }
}
