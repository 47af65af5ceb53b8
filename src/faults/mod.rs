//! Faults on purpose: named crash points that the crash matrices arm to kill a process at an
//! exact step boundary. (Delays and aborts injected on demand are a transport layer:
//! `transport::faults`.)

pub mod crash;
