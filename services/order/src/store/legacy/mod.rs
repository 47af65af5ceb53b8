//! The tables orders were kept in before they became event streams (`order_orders`,
//! `order_lines`). Nothing writes them any more; `store::import` reads them once.

pub mod order;
pub mod order_line;
