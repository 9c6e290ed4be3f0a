pub mod agent;
pub mod bench;
pub mod bench_api;
pub mod compare;
pub mod db;
pub mod flamegraph;
pub mod loadgen;
pub mod run;
pub mod serve;
pub mod storm;

use tokio_util::sync::CancellationToken;

/// A token cancelled on Ctrl-C or SIGTERM, so every long task can stop in order.
pub fn interrupt_token() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let sigterm = async {
            match terminate.as_mut() {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = sigterm => {}
        }
        cancel.cancel();
    });
    token
}
