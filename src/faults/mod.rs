//! Faults on purpose: named crash points that the crash matrices arm to kill a process at an
//! exact step boundary.

pub mod crash;
