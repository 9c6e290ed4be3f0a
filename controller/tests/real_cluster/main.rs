//! Against the real cluster `scripts/cluster.sh up` starts on this machine (real API server,
//! scheduler, controller-manager, kubelet on containerd, kube-proxy, CoreDNS), with the images
//! `scripts/cluster.sh images` built: the chart installed by `helm`, experiments applied with
//! `kubectl`, agent pods running nginx storms with lock and CPU evidence, results read through
//! the chart's Service. `scripts/test.sh` runs them; by hand:
//!   bash scripts/cluster.sh up && bash scripts/cluster.sh images
//!   KUBECONFIG=$(bash scripts/cluster.sh kubeconfig) cargo test -p loadlab-controller \
//!     --test real_cluster -- --ignored --test-threads=1 --skip faults:: --skip debian_defaults::
//! The fault tests (`faults.rs`, minutes each) run by hand: `bash scripts/fault-tests.sh`; so
//! does `debian_defaults.rs` (`bash scripts/fault-tests.sh debian_defaults::`: it says why).

mod conditions;
mod crd;
mod debian_defaults;
mod failover;
mod faults;
mod gateway;
mod harness;
mod journey;
mod kernel_node;
mod kernel_seed;
mod unreadable;
