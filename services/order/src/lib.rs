//! The order service crate. Only its contract exists so far
//! (`ordermesh::proto::order::v1`); the domain, store and API are still to be built.
