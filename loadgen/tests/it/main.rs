//! loadgen's integration tests, one binary: the command line refusing bad flags (`cli`), and
//! whole runs against the mesh spawned in this process, over gRPC and through the gateway
//! (`e2e`, with `helpers` to spawn them and run the binary).

mod cli;
mod e2e;
mod helpers;
