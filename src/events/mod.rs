//! Domain events: recorded with the state change that caused them (`outbox`), delivered
//! at-least-once over a transport (the producer's own gRPC log stream, or RabbitMQ in `amqp`),
//! and applied once by each consumer (`inbox`).

pub mod amqp;
pub mod inbox;
pub mod outbox;
