use ordermesh::config::{EnvReads, ServiceConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `order projections rebuild <name>`: rebuild a read model while the service serves.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("projections") {
        let code = order_service::cli::projections(&args[1..]).await;
        std::process::exit(code);
    }
    let config = ServiceConfig::load(order_service::SERVICE, order_service::DEFAULT_PORT)?;
    let env = EnvReads::default();
    let participants = order_service::participants_from(&config, &env)?;
    let writer = order_service::writer_from(&env)?;
    if config.check_only {
        println!("{}", config.check_report(&env));
        return Ok(());
    }
    let telemetry = ordermesh::telemetry::init(config.service, config.log_format);
    let mut app = order_service::App::build_with(&config, writer).await?;
    match participants {
        Some(parts) => app = app.with_participants(parts),
        None => tracing::warn!(
            "no saga participants configured (MESH_DNS, or INVENTORY_URL/PAYMENT_URL/SHIPPING_URL): orders stay PENDING"
        ),
    }
    let listener = ordermesh::transport::server::bind("LISTEN_ADDR", config.listen).await?;
    let served = app
        .serve(listener, ordermesh::transport::shutdown::signal())
        .await;
    telemetry.shutdown().await;
    served
}
