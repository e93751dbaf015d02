//! The gateway's `GET /health`: its own checks and every ETL instance's answer, circuit
//! and ejection.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use pulse_core::health::{Health, HealthAggregator, check_fn};
use pulse_etl::client::EtlClient;

use super::super::upstream::{health_instances, health_response};
use super::{EtlTransport, Gateway, etl_transport, retry_after, retry_after_value};

/// `GET /health` of every ETL instance, at once.
#[derive(Clone, Debug)]
pub struct EtlProbe {
    clients: Arc<Vec<(String, EtlClient<EtlTransport>)>>,
}

impl EtlProbe {
    pub(super) fn new(urls: &[String], tls: &rustls::ClientConfig) -> anyhow::Result<Self> {
        let clients = urls
            .iter()
            .map(|url| {
                Ok((
                    url.clone(),
                    EtlClient::new(url, etl_transport(tls))?.with_timeout(Duration::from_secs(2)),
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            clients: Arc::new(clients),
        })
    }

    /// Each instance's answer (`None`: unreachable), in order.
    pub(super) async fn probe(&self) -> Vec<Option<pulse_etl::client::EtlHealth>> {
        futures_util::future::join_all(self.clients.iter().map(|(url, client)| async move {
            match client.health().await {
                Ok(health) => Some(health),
                Err(error) => {
                    tracing::warn!(%error, instance = %url, "ETL health check failed");
                    None
                }
            }
        }))
        .await
    }
}

/// An instance answered its health check: it is up (its store is the `database` check).
fn answered(health: &pulse_etl::client::EtlHealth) -> bool {
    health.status.is_success() || health.status == StatusCode::SERVICE_UNAVAILABLE
}

/// backend_service (this process), etl_service (`GET /health` of the ETL instances:
/// healthy while one answers) and database (as an answering instance reports its store).
pub(super) fn health_checks(probe: &EtlProbe) -> HealthAggregator {
    let etl_probe = probe.clone();
    let db_probe = probe.clone();
    HealthAggregator::new()
        .with_timeout(Duration::from_secs(3))
        .with_check("backend_service", check_fn(|| async { Health::Healthy }))
        .with_check(
            "etl_service",
            check_fn(move || {
                let probe = etl_probe.clone();
                async move {
                    let answers = probe.probe().await;
                    if answers.iter().flatten().any(answered) {
                        Health::Healthy
                    } else if answers.iter().any(Option::is_some) {
                        Health::unhealthy("unexpected answer")
                    } else {
                        Health::unhealthy("unreachable")
                    }
                }
            }),
        )
        .with_check(
            "database",
            check_fn(move || {
                let probe = db_probe.clone();
                async move {
                    let answers = probe.probe().await;
                    if answers.iter().all(Option::is_none) {
                        return Health::unhealthy("unknown: ETL unreachable");
                    }
                    let healthy = answers.iter().flatten().any(|health| {
                        health.report["services"]["database"]["status"].as_str() == Some("healthy")
                    });
                    if healthy {
                        Health::Healthy
                    } else {
                        Health::unhealthy("store unavailable")
                    }
                }
            }),
        )
}

pub(super) async fn health(State(gateway): State<Gateway>) -> Response {
    let (report, answers) = tokio::join!(gateway.health.check(), gateway.probe.probe());
    let healthy = report.is_healthy();
    let status = report.status_code();
    let mut body: serde_json::Value =
        serde_json::from_slice(&report.to_json()).unwrap_or_else(|_| serde_json::json!({}));
    // Every ETL instance: whether it answered, its circuit, whether it is ejected.
    let up = answers
        .iter()
        .map(|answer| answer.as_ref().is_some_and(answered));
    body["instances"] = serde_json::json!({ "etl": health_instances(&gateway.etl, up) });
    let retry_after = (!healthy).then(|| retry_after_value(retry_after(&gateway.etl)));
    health_response(status, &body, retry_after)
}
