//! The payment service's integration tests, one binary (one link) for all of them.

mod payment;
