//! The agent against this machine's kernel, as one test binary: lock contention and CPU
//! profiles traced (root, BPF, tracefs). Two tests are binaries of their own because they look
//! at the whole process: the quiet-node tests (`tests/quiet_node.rs`) pin every thread of it and
//! measure the node's other work, and the abandoned-capture test (`tests/abandoned.rs`) counts
//! its sampler and probe threads, which another test's captures would add to.

mod kernel_evidence;
