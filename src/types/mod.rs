//! The value types every service shares: money, typed ids, addresses, page tokens, time, and
//! how errors look to callers (`status`). Leaves: they depend on the generated contracts only.

pub mod address;
pub mod ids;
pub mod money;
pub mod pagination;
pub mod status;
pub mod time;
