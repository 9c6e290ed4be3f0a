//! What the benchmarks share: a child process measured from outside (CPU time from the kernel's
//! child rusage, peak memory from VmHWM), medians and spreads, and a scratch database.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::resource::{UsageWho, getrusage};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// One tool's run, as measured from outside.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Measured {
    pub(super) connections: f64,
    pub(super) per_second: f64,
    pub(super) errors: f64,
    pub(super) user_seconds: f64,
    pub(super) system_seconds: f64,
    pub(super) peak_rss_kib: u64,
}

impl Measured {
    pub(super) fn cpu_ms_per_thousand(&self) -> (f64, f64) {
        let thousands = (self.connections / 1000.0).max(1e-9);
        (
            self.user_seconds * 1000.0 / thousands,
            self.system_seconds * 1000.0 / thousands,
        )
    }
}

/// Runs a child to its end, measuring its CPU time and peak resident memory.
pub(super) async fn measure_child(mut command: Command) -> anyhow::Result<(String, Measured)> {
    let before = getrusage(UsageWho::RUSAGE_CHILDREN)?;
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id().context("child has no pid")?;
    let mut stdout = child.stdout.take().context("no stdout")?;
    let mut stderr = child.stderr.take().context("no stderr")?;
    let reading = tokio::spawn(async move {
        let mut out = String::new();
        let mut err = String::new();
        let _ = stdout.read_to_string(&mut out).await;
        let _ = stderr.read_to_string(&mut err).await;
        (out, err)
    });
    let mut peak_rss_kib = 0;
    // VmHWM only grows, so its last reading before the child exits is its peak.
    let mut sample = tokio::time::interval(Duration::from_millis(100));
    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
            _ = sample.tick() => {
                if let Some(kib) = vm_hwm_kib(pid) {
                    peak_rss_kib = kib;
                }
            }
        }
    };
    let after = getrusage(UsageWho::RUSAGE_CHILDREN)?;
    let (out, err) = reading.await?;
    if !status.success() {
        bail!("{command:?} failed ({status}): {}", err.trim());
    }
    let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Ok((
        out,
        Measured {
            user_seconds: seconds(after.user_time()) - seconds(before.user_time()),
            system_seconds: seconds(after.system_time()) - seconds(before.system_time()),
            peak_rss_kib,
            ..Measured::default()
        },
    ))
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub(super) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The lowest, the median and the highest of `values`.
pub(super) fn spread(values: &mut [f64]) -> (f64, f64, f64) {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, median(values), max)
}

/// A scratch database for a benchmark's child runs (`DATABASE_URL`), so they store nothing in
/// the user's.
pub(crate) async fn scratch_database_url() -> anyhow::Result<String> {
    let database = loadlab_results::Database::from_env();
    database
        .scratch_url()
        .await
        .with_context(|| format!("a scratch database on {}", database.describe()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
        assert_eq!(spread(&mut [1.2, 0.9, 1.0]), (0.9, 1.0, 1.2));
    }
}
