//! What libbpf says while loading and attaching the agent's BPF programs: forwarded to the
//! agent's log, and its last lines kept per thread for the error they explain.

/// Lines of libbpf's last warnings on this thread: a refusal names its cause with them.
const REMEMBERED_LINES: usize = 12;

thread_local! {
    static LIBBPF_SAID: std::cell::RefCell<std::collections::VecDeque<String>> =
        const { std::cell::RefCell::new(std::collections::VecDeque::new()) };
}

/// libbpf's warnings (a verifier log, a missing kernel feature) go to the agent's log rather
/// than to stderr unannounced, and the last lines are kept for the error they explain.
pub(crate) fn forward_libbpf_messages() {
    fn forward(level: libbpf_rs::PrintLevel, message: String) {
        let message = message.trim_end();
        match level {
            libbpf_rs::PrintLevel::Warn => tracing::warn!(target: "libbpf", "{message}"),
            _ => tracing::debug!(target: "libbpf", "{message}"),
        }
        LIBBPF_SAID.with(|said| {
            let mut said = said.borrow_mut();
            for line in message.lines().filter(|l| !l.trim().is_empty()) {
                if said.len() == REMEMBERED_LINES {
                    said.pop_front();
                }
                said.push_back(line.trim().to_string());
            }
        });
    }
    libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Warn, forward)));
}

/// `error`, with what libbpf last said on this thread (the verifier's verdict, say).
pub(crate) fn with_libbpf_said(error: String) -> String {
    let said = LIBBPF_SAID.with(|said| said.borrow_mut().drain(..).collect::<Vec<_>>());
    if said.is_empty() {
        error
    } else {
        format!("{error} (libbpf: {})", said.join(" | "))
    }
}
