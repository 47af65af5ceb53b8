//! The order service's integration tests, one binary (one link) for all of them; the mesh they
//! run against comes from `test_support`.

mod crash;
mod duplicates;
mod helpers;
mod isolation;
mod order;
mod saga;
mod startup;
