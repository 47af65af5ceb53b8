use ordermesh::config::ServiceConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = ServiceConfig::load(payment_service::SERVICE, payment_service::DEFAULT_PORT)?;
    if config.check_only {
        println!("{}", config.check_report(&Default::default()));
        return Ok(());
    }
    let telemetry = ordermesh::telemetry::init(config.service, config.log_format);
    let app = payment_service::App::build(&config).await?;
    let listener = ordermesh::transport::server::bind("LISTEN_ADDR", config.listen).await?;
    let served = app
        .serve(listener, ordermesh::transport::shutdown::signal())
        .await;
    telemetry.shutdown().await;
    served
}
