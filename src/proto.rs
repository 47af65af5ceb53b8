//! Code generated from `proto/` by build.rs; hand code converts these types at the edge.

#![allow(clippy::all, missing_docs)]

pub mod google {
    pub mod api {
        tonic::include_proto!("google.api");
    }
}

pub mod ordermesh {
    pub mod common {
        pub mod v1 {
            tonic::include_proto!("ordermesh.common.v1");
        }
    }
    pub mod events {
        pub mod v1 {
            tonic::include_proto!("ordermesh.events.v1");
        }
    }
    pub mod inventory {
        pub mod v1 {
            tonic::include_proto!("ordermesh.inventory.v1");
        }
    }
    pub mod order {
        pub mod v1 {
            tonic::include_proto!("ordermesh.order.v1");
        }
    }
    pub mod payment {
        pub mod v1 {
            tonic::include_proto!("ordermesh.payment.v1");
        }
    }
    pub mod shipping {
        pub mod v1 {
            tonic::include_proto!("ordermesh.shipping.v1");
        }
    }
}

pub use ordermesh::{common, events, inventory, order, payment, shipping};

/// Encoded `FileDescriptorSet` of every contract and its imports (googleapis, well-known types).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ordermesh_descriptor");

/// Encoded `FileDescriptorSet` of `google/rpc/error_details.proto` (and its imports): served by
/// reflection so clients can decode the details a `Status` carries, e.g. `google.rpc.BadRequest`.
pub const ERROR_DETAILS_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("error_details_descriptor");
