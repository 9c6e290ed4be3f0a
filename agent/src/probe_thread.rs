//! A BPF probe on a thread of its own for one window: libbpf's objects are not `Send`, and
//! loading, attaching, polling and reading maps block, which the async runtime should not. The
//! thread attaches, says so, then takes two requests: end the window, and hand over what was
//! found. Dropping the handle without reading detaches the probe when the thread sees its
//! sender gone.

use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::oneshot;

/// How long loading and attaching may take: the verifier is quick, but an emulated node is
/// slow at everything.
const ATTACH_DEADLINE: Duration = Duration::from_secs(60);
/// How long reading what the probe found may take once the window ends.
const READ_DEADLINE: Duration = Duration::from_secs(60);

/// What the probe's thread is asked.
pub enum Request<R> {
    EndWindow,
    Read(oneshot::Sender<Result<R, String>>),
}

/// The thread's side: say whether attaching worked, then serve requests.
pub struct ProbeSide<R> {
    pub attached: oneshot::Sender<Result<(), String>>,
    pub requests: mpsc::Receiver<Request<R>>,
}

/// A probe attached on its own thread.
pub struct ProbeThread<R> {
    /// The probe, as messages name it ("the lock probe").
    what: &'static str,
    requests: mpsc::Sender<Request<R>>,
}

impl<R> std::fmt::Debug for ProbeThread<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbeThread")
            .field("what", &self.what)
            .finish_non_exhaustive()
    }
}

impl<R: Send + 'static> ProbeThread<R> {
    /// Starts `run` on a thread named `thread` and returns once it says it attached.
    pub async fn start(
        what: &'static str,
        thread: &str,
        run: impl FnOnce(ProbeSide<R>) + Send + 'static,
    ) -> Result<Self, String> {
        let (attached, attaching) = oneshot::channel();
        let (requests, received) = mpsc::channel();
        std::thread::Builder::new()
            .name(thread.into())
            .spawn(move || {
                run(ProbeSide {
                    attached,
                    requests: received,
                });
            })
            .map_err(|e| format!("cannot start {what}'s thread: {e}"))?;
        match tokio::time::timeout(ATTACH_DEADLINE, attaching).await {
            Ok(Ok(Ok(()))) => Ok(Self { what, requests }),
            Ok(Ok(Err(why))) => Err(why),
            Ok(Err(_)) => Err(format!("{what}'s thread ended while attaching")),
            Err(_) => Err(format!(
                "{what} did not attach within {} s",
                ATTACH_DEADLINE.as_secs()
            )),
        }
    }

    /// Ends the window: nothing after this counts.
    pub fn end_window(&self) {
        let _ = self.requests.send(Request::EndWindow);
    }

    /// Ends the window if still open and returns what the probe found.
    pub async fn stop(self) -> Result<R, String> {
        let what = self.what;
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Read(reply))
            .map_err(|_| format!("{what}'s thread is gone"))?;
        match tokio::time::timeout(READ_DEADLINE, answer).await {
            Ok(Ok(found)) => found,
            Ok(Err(_)) => Err(format!(
                "{what}'s thread ended before handing over its results"
            )),
            Err(_) => Err(format!(
                "{what}'s results were not read within {} s",
                READ_DEADLINE.as_secs()
            )),
        }
    }
}
