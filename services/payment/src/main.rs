//! Placeholder: the payment service's domain is not built yet, so the binary refuses to start
//! rather than pretending to serve.
fn main() {
    eprintln!("the payment service is not built yet; its contract is proto/ordermesh/payment/v1/payment.proto");
    std::process::exit(2);
}
