//! Reflection serves, besides the server's own contracts, the google.rpc error details: a
//! client such as grpcurl asks for the file that defines `google.rpc.BadRequest` to print the
//! field violations of an INVALID_ARGUMENT.

use ordermesh::config::ServiceConfig;
use ordermesh::transport::server::MeshServer;
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::service::Routes;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

/// The names of the files reflection returns for `symbol` (the file and its imports).
async fn files_containing(uri: String, symbol: &str) -> Vec<String> {
    let channel = tonic::transport::Endpoint::from_shared(uri)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(symbol.to_string())),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().expect("one answer");
    match answer.message_response {
        Some(MessageResponse::FileDescriptorResponse(files)) => files
            .file_descriptor_proto
            .iter()
            .map(|raw| {
                prost_types::FileDescriptorProto::decode(raw.as_slice())
                    .unwrap()
                    .name()
                    .to_string()
            })
            .collect(),
        other => panic!("{symbol}: {other:?}"),
    }
}

#[tokio::test]
async fn reflection_serves_the_google_rpc_error_details() {
    let config = ServiceConfig::for_test("payment", "");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = MeshServer::new(config.server(), Routes::default(), &[]);
    let task = tokio::spawn(server.serve(listener, async move {
        let _ = stopped.await;
    }));

    let files = files_containing(uri.clone(), "google.rpc.BadRequest").await;
    assert!(
        files.iter().any(|f| f == "google/rpc/error_details.proto"),
        "{files:?}"
    );
    // The contracts are still there, next to it.
    let files = files_containing(uri, "ordermesh.common.v1.Money").await;
    assert!(!files.is_empty());

    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}
