//! Domain events: recorded with the state change that caused them (`outbox`), delivered
//! at-least-once over a transport (the producer's own gRPC log stream in `grpc_log`, or
//! RabbitMQ in `amqp`), and applied once by each consumer (`inbox`). `envelope` is what every
//! transport carries.

pub mod amqp;
pub mod envelope;
#[cfg(feature = "events")]
pub mod grpc_log;
#[cfg(feature = "events")]
pub mod inbox;
#[cfg(feature = "events")]
pub mod outbox;
