//! Placeholder: the order service's domain is not built yet, so the binary refuses to start
//! rather than pretending to serve.
fn main() {
    eprintln!(
        "the order service is not built yet; its contract is proto/ordermesh/order/v1/order.proto"
    );
    std::process::exit(2);
}
