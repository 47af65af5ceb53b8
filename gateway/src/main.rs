use ordermesh_gateway::{app, server, Gateway, GatewayConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = GatewayConfig::load()?;
    if config.check_only {
        println!("{}", config.check_report());
        return Ok(());
    }
    let telemetry = ordermesh::telemetry::init("gateway", config.log_format);
    let extra = config
        .descriptors
        .iter()
        .map(|p| {
            std::fs::read(p)
                .map_err(|e| anyhow::anyhow!("GATEWAY_DESCRIPTORS: {}: {e}", p.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let pool = app::load_pool(&extra)?;
    let gateway = Gateway::new(pool, &config.upstreams, config.settings.clone())?;
    if let Some(addr) = config.metrics_listen {
        let metrics = ordermesh::transport::server::bind("METRICS_ADDR", addr).await?;
        tokio::spawn(server::serve_metrics(gateway.clone(), metrics));
    }
    let listener = ordermesh::transport::server::bind("GATEWAY_LISTEN", config.listen).await?;
    tracing::info!(addr = %config.listen, routes = gateway.router().routes().len(), "gateway listening");
    let served = server::serve(
        gateway,
        listener,
        ordermesh::transport::shutdown::signal(),
        config.shutdown_grace,
    )
    .await;
    telemetry.shutdown().await;
    served
}
