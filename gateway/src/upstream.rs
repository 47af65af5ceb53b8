//! Calls to the services: dynamic messages over the mesh client stack (mTLS, discovery,
//! balancing, retries, breaker, deadlines), and native gRPC passed through unchanged.

use std::collections::HashMap;
use tokio::time::Instant;

use ordermesh::transport::client::MeshChannel;
use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataMap;
use tonic::{Status, Streaming};
use tower::ServiceExt;

use crate::routes::Route;

/// Encodes any dynamic message; decodes into the message type it was made for.
#[derive(Clone)]
pub struct DynamicCodec {
    output: MessageDescriptor,
}

impl DynamicCodec {
    pub fn new(output: MessageDescriptor) -> Self {
        Self { output }
    }
}

pub struct DynamicEncoder;
pub struct DynamicDecoder(MessageDescriptor);

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;
    fn encoder(&mut self) -> DynamicEncoder {
        DynamicEncoder
    }
    fn decoder(&mut self) -> DynamicDecoder {
        DynamicDecoder(self.output.clone())
    }
}

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = Status;
    fn encode(&mut self, item: DynamicMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.encoded_len());
        item.encode_raw(dst);
        Ok(())
    }
}

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Status> {
        let mut msg = DynamicMessage::new(self.0.clone());
        msg.merge(src)
            .map_err(|e| Status::internal(format!("undecodable {}: {e}", self.0.full_name())))?;
        Ok(Some(msg))
    }
}

/// A channel per upstream for unary calls (the upstream's default deadline) and one for
/// streams (a long deadline: a watch may stay open for hours).
#[derive(Clone, Default)]
pub struct Upstreams {
    unary: HashMap<String, MeshChannel>,
    streaming: HashMap<String, MeshChannel>,
}

impl Upstreams {
    pub fn insert(&mut self, name: &str, unary: MeshChannel, streaming: MeshChannel) {
        self.unary.insert(name.to_string(), unary);
        self.streaming.insert(name.to_string(), streaming);
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.unary.keys().map(String::as_str)
    }

    pub fn unary(&self, name: &str) -> Result<MeshChannel, Status> {
        self.unary
            .get(name)
            .cloned()
            .ok_or_else(|| Status::unavailable(format!("no upstream '{name}' is configured")))
    }

    fn streaming(&self, name: &str) -> Result<MeshChannel, Status> {
        self.streaming
            .get(name)
            .cloned()
            .ok_or_else(|| Status::unavailable(format!("no upstream '{name}' is configured")))
    }

    async fn ready(
        &self,
        channel: MeshChannel,
    ) -> Result<tonic::client::Grpc<MeshChannel>, Status> {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("upstream not ready: {e}")))?;
        Ok(grpc)
    }

    /// One unary call; `deadline` (from the REST request) bounds it besides the upstream default.
    pub async fn unary_call(
        &self,
        route: &Route,
        msg: DynamicMessage,
        metadata: MetadataMap,
        deadline: Option<Instant>,
    ) -> Result<(MetadataMap, DynamicMessage), Status> {
        let mut grpc = self.ready(self.unary(&route.upstream)?).await?;
        let codec = DynamicCodec::new(route.method.output());
        let req = tonic::Request::from_parts(metadata, Default::default(), msg);
        let call = grpc.unary(req, route.grpc_path.clone(), codec);
        let resp = match deadline {
            Some(d) => ordermesh::transport::deadline::scope(d, call).await?,
            None => call.await?,
        };
        let (md, msg, _) = resp.into_parts();
        Ok((md, msg))
    }

    pub async fn server_streaming_call(
        &self,
        route: &Route,
        msg: DynamicMessage,
        metadata: MetadataMap,
        deadline: Option<Instant>,
    ) -> Result<(MetadataMap, Streaming<DynamicMessage>), Status> {
        let mut grpc = self.ready(self.streaming(&route.upstream)?).await?;
        let codec = DynamicCodec::new(route.method.output());
        let req = tonic::Request::from_parts(metadata, Default::default(), msg);
        let call = grpc.server_streaming(req, route.grpc_path.clone(), codec);
        let resp = match deadline {
            Some(d) => ordermesh::transport::deadline::scope(d, call).await?,
            None => call.await?,
        };
        let (md, stream, _) = resp.into_parts();
        Ok((md, stream))
    }

    pub async fn client_streaming_call(
        &self,
        route: &Route,
        msgs: Vec<DynamicMessage>,
        metadata: MetadataMap,
        deadline: Option<Instant>,
    ) -> Result<(MetadataMap, DynamicMessage), Status> {
        let mut grpc = self.ready(self.streaming(&route.upstream)?).await?;
        let codec = DynamicCodec::new(route.method.output());
        let req =
            tonic::Request::from_parts(metadata, Default::default(), tokio_stream::iter(msgs));
        let call = grpc.client_streaming(req, route.grpc_path.clone(), codec);
        let resp = match deadline {
            Some(d) => ordermesh::transport::deadline::scope(d, call).await?,
            None => call.await?,
        };
        let (md, msg, _) = resp.into_parts();
        Ok((md, msg))
    }

    /// A bidirectional stream fed from a finished list of messages (a REST body).
    pub async fn bidi_call(
        &self,
        route: &Route,
        msgs: Vec<DynamicMessage>,
        metadata: MetadataMap,
        deadline: Option<Instant>,
    ) -> Result<(MetadataMap, Streaming<DynamicMessage>), Status> {
        let mut grpc = self.ready(self.streaming(&route.upstream)?).await?;
        let codec = DynamicCodec::new(route.method.output());
        let req =
            tonic::Request::from_parts(metadata, Default::default(), tokio_stream::iter(msgs));
        let call = grpc.streaming(req, route.grpc_path.clone(), codec);
        let resp = match deadline {
            Some(d) => ordermesh::transport::deadline::scope(d, call).await?,
            None => call.await?,
        };
        let (md, stream, _) = resp.into_parts();
        Ok((md, stream))
    }

    /// Forwards a native gRPC request as it is to `upstream`, answering with its response.
    pub async fn forward(
        &self,
        upstream: &str,
        req: http::Request<tonic::body::Body>,
    ) -> Result<http::Response<tonic::body::Body>, Status> {
        self.streaming(upstream)?
            .oneshot(req)
            .await
            .map_err(|e| Status::unavailable(format!("{upstream}: {e}")))
    }
}
