//! Kubernetes Events on experiments: whatever stops or degrades an experiment is a condition
//! on its status and also an Event, so `kubectl describe experiment` and `kubectl get events`
//! both tell it. Publishing is best effort: an Event that cannot be written is logged, never an
//! error of the reconcile that found the problem.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

/// The reporting controller, as Events name it.
pub(crate) const REPORTER: &str = "loadlab-controller";
/// What the Events API takes in a note.
const MAX_NOTE_BYTES: usize = 1024;

#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Events")
    }
}

impl Events {
    /// Events reported by this replica (`instance`: its pod name).
    pub fn new(client: Client, instance: Option<String>) -> Self {
        Self {
            recorder: Recorder::new(
                client,
                Reporter {
                    controller: REPORTER.into(),
                    instance,
                },
            ),
        }
    }

    /// A Warning on `object`: `reason` as the condition's, `action` what was being done.
    pub async fn warn(&self, object: &ObjectReference, action: &str, reason: &str, note: &str) {
        let event = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(shortened(note)),
            action: action.into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, object).await {
            tracing::warn!(%error, %reason, "publishing an Event");
        }
    }
}

/// At most `MAX_NOTE_BYTES`, cut at a character boundary.
fn shortened(note: &str) -> String {
    if note.len() <= MAX_NOTE_BYTES {
        return note.to_string();
    }
    let mut end = MAX_NOTE_BYTES - 3;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &note[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_notes_are_cut_to_what_the_events_api_takes() {
        assert_eq!(shortened("short"), "short");
        let long = "é".repeat(MAX_NOTE_BYTES);
        let cut = shortened(&long);
        assert!(
            cut.len() <= MAX_NOTE_BYTES && cut.ends_with("..."),
            "{}",
            cut.len()
        );
    }
}
