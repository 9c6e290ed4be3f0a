//! The kernel traces of one window: lock contention and a CPU profile, attached before the
//! window opens and ended together when it closes, so both cover the same span. Used by the
//! agent's captures of a target and by one-off captures of the whole node.

use crate::kallsyms::KernelSymbols;
use crate::lockprobe::SourceChoice;
use crate::lockstat::{LockCapture, LockReport, LockstatError, probe_options};
use crate::profile::{CpuProfile, ProfileError, Profiler};

/// What to trace over a window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceRequest {
    pub lock_contention: bool,
    /// Where lock contention is seen.
    pub lock_source: SourceChoice,
    /// Sampling frequency of the CPU profile; 0 for no profile.
    pub cpu_profile_hz: u32,
    /// Keep only these processes' samples; every CPU's when `None`.
    pub profile_processes: Option<Vec<u32>>,
}

/// Traces that are running. A trace that could not start holds its reason: the window goes on
/// without it.
#[derive(Debug)]
pub struct Traces {
    locks: Option<Result<LockCapture, LockstatError>>,
    profile: Option<Result<Profiler, ProfileError>>,
}

/// What the traces of a window found; `None` for a trace that was not asked for.
#[derive(Debug)]
pub struct TraceResults {
    pub locks: Option<Result<LockReport, LockstatError>>,
    pub profile: Option<Result<CpuProfile, ProfileError>>,
}

impl Traces {
    /// Starts what `request` asks for and returns once every trace is attached, so the window
    /// starts traced. `symbols` tell what the kernel lets the lock capture count besides
    /// contention (epoll calls, `epmutex` acquisitions); without lock contention they are not
    /// read and may be empty.
    pub async fn start(request: &TraceRequest, symbols: &KernelSymbols) -> Self {
        let locks = if request.lock_contention {
            let attaching = std::time::Instant::now();
            let capture = LockCapture::start(probe_options(symbols, request.lock_source)).await;
            match &capture {
                Ok(_) => tracing::debug!(took = ?attaching.elapsed(), "lock probe attached"),
                Err(error) => tracing::warn!(error = %error, "lock contention not collected"),
            }
            Some(capture)
        } else {
            None
        };
        let profile = if request.cpu_profile_hz > 0 {
            let attaching = std::time::Instant::now();
            let profiler =
                Profiler::start(request.cpu_profile_hz, request.profile_processes.as_deref()).await;
            match &profiler {
                Ok(_) => tracing::debug!(took = ?attaching.elapsed(), "CPU sampler attached"),
                Err(error) => tracing::warn!(error = %error, "CPU profile not collected"),
            }
            Some(profiler)
        } else {
            None
        };
        Self { locks, profile }
    }

    /// Whether lock contention is traced: only then do its results need the kernel's data
    /// symbols (megabytes of `kallsyms` to read).
    pub(crate) fn traces_locks(&self) -> bool {
        matches!(self.locks, Some(Ok(_)))
    }

    /// Ends every trace's window; collecting comes after, so slow collection of one trace does
    /// not lengthen another's window.
    pub async fn end_window(&mut self) {
        if let Some(Ok(profiler)) = self.profile.as_mut() {
            profiler.end_window();
        }
        if let Some(Ok(locks)) = self.locks.as_mut()
            && let Err(error) = locks.end_window()
        {
            self.locks = Some(Err(error));
        }
    }

    /// Ends the window if still open, and reads what every trace found.
    pub async fn collect(mut self, symbols: &KernelSymbols) -> TraceResults {
        self.end_window().await;
        let locks = match self.locks {
            None => None,
            Some(Err(error)) => Some(Err(error)),
            Some(Ok(capture)) => Some(capture.stop(symbols).await),
        };
        let profile = match self.profile {
            None => None,
            Some(Err(error)) => Some(Err(error)),
            Some(Ok(profiler)) => Some(profiler.stop().await),
        };
        TraceResults { locks, profile }
    }
}
