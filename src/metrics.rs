//! `GET /metrics` on a node's API: the storage node's metrics and, where the process runs validators (the
//! devnet), the chain's, in the OpenMetrics text format Prometheus scrapes. `specs/metrics.md` names each one.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chain_node::ChainApi;
use chain_node::metrics::ChainMetrics;
use huds_net::NodeHandle;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

struct Scrape {
    node: NodeHandle,
    registry: Registry,
    chain: Option<(ChainApi, ChainMetrics)>,
}

/// Every metric of `node` and, if given, of the chain and each validator this process runs (labelled with
/// the validator's address), registered once under the `huds` prefix.
fn registry(node: &NodeHandle, chain: Option<ChainApi>) -> Scrape {
    let mut registry = Registry::with_prefix("huds");
    node.metrics().register(&mut registry);
    let chain = chain.map(|api| {
        let metrics = ChainMetrics::default();
        metrics.register(&mut registry);
        for v in api.validators() {
            let sub = registry
                .sub_registry_with_label(("validator".into(), v.signer().to_string().into()));
            v.metrics().register(sub);
        }
        (api, metrics)
    });
    Scrape {
        node: node.clone(),
        registry,
        chain,
    }
}

/// The route, to merge into the node's API router.
pub fn router(node: &NodeHandle, chain: Option<ChainApi>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(Arc::new(registry(node, chain)))
}

async fn scrape(State(scrape): State<Arc<Scrape>>) -> Response {
    scrape.node.refresh_metrics();
    if let Some((api, metrics)) = &scrape.chain {
        metrics.refresh(api);
    }
    let mut text = String::new();
    if let Err(e) = encode(&mut text, &scrape.registry) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the metrics: {e}"),
        )
            .into_response();
    }
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}
