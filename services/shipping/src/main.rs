//! Placeholder: the shipping service's domain is not built yet, so the binary refuses to start
//! rather than pretending to serve.
fn main() {
    eprintln!("the shipping service is not built yet; its contract is proto/ordermesh/shipping/v1/shipping.proto");
    std::process::exit(2);
}
