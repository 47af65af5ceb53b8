//! The shipping service crate. Only its contract exists so far
//! (`ordermesh::proto::shipping::v1`); the domain, store and API are still to be built.
