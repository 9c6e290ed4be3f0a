//! How one connection ended, and the error kinds a storm counts separately.

use std::io;

use crate::http::ResponseError;

/// Why a connection failed. Each kind is counted on its own because each points somewhere
/// different: the server (refused, bad status), the network stack (reset, timeouts) or the
/// generator's own host (ports, file descriptors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    Refused,
    Reset,
    ConnectTimeout,
    ResponseTimeout,
    /// EADDRNOTAVAIL: no free source port (ephemeral ports or TIME_WAIT slots exhausted).
    PortExhaustion,
    /// EMFILE/ENFILE: the generator ran out of file descriptors.
    TooManyOpenFiles,
    BadStatus,
    ShortRead,
    MalformedResponse,
    Other,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::Refused,
        ErrorKind::Reset,
        ErrorKind::ConnectTimeout,
        ErrorKind::ResponseTimeout,
        ErrorKind::PortExhaustion,
        ErrorKind::TooManyOpenFiles,
        ErrorKind::BadStatus,
        ErrorKind::ShortRead,
        ErrorKind::MalformedResponse,
        ErrorKind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Refused => "refused",
            ErrorKind::Reset => "reset",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::ResponseTimeout => "response_timeout",
            ErrorKind::PortExhaustion => "port_exhaustion",
            ErrorKind::TooManyOpenFiles => "too_many_open_files",
            ErrorKind::BadStatus => "bad_status",
            ErrorKind::ShortRead => "short_read",
            ErrorKind::MalformedResponse => "malformed_response",
            ErrorKind::Other => "other",
        }
    }

    pub fn parse(name: &str) -> Option<ErrorKind> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Classifies an I/O error from connecting.
    pub(crate) fn of_connect(error: &io::Error) -> ErrorKind {
        match error.raw_os_error() {
            Some(nix_errno::EADDRNOTAVAIL) => return ErrorKind::PortExhaustion,
            Some(nix_errno::EMFILE | nix_errno::ENFILE) => return ErrorKind::TooManyOpenFiles,
            _ => {}
        }
        match error.kind() {
            io::ErrorKind::ConnectionRefused => ErrorKind::Refused,
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => ErrorKind::Reset,
            io::ErrorKind::TimedOut => ErrorKind::ConnectTimeout,
            _ => ErrorKind::Other,
        }
    }

    /// Classifies an I/O error on an established connection.
    pub(crate) fn of_exchange(error: &io::Error) -> ErrorKind {
        match error.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => ErrorKind::Reset,
            io::ErrorKind::TimedOut => ErrorKind::ResponseTimeout,
            io::ErrorKind::UnexpectedEof => ErrorKind::ShortRead,
            _ => ErrorKind::Other,
        }
    }

    pub(crate) fn of_response(error: ResponseError) -> ErrorKind {
        match error {
            ResponseError::ShortRead => ErrorKind::ShortRead,
            ResponseError::Malformed => ErrorKind::MalformedResponse,
            ResponseError::BadStatus(_) => ErrorKind::BadStatus,
        }
    }
}

/// Linux errno values the classification needs; std exposes them only as raw numbers.
mod nix_errno {
    pub(crate) const ENFILE: i32 = 23;
    pub(crate) const EMFILE: i32 = 24;
    pub(crate) const EADDRNOTAVAIL: i32 = 99;
}

/// Error counts by kind, in a fixed array so counting never allocates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorCounts([u64; ErrorKind::ALL.len()]);

impl ErrorCounts {
    pub fn add(&mut self, kind: ErrorKind, count: u64) {
        self.0[kind.index()] += count;
    }

    pub fn get(&self, kind: ErrorKind) -> u64 {
        self.0[kind.index()]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    pub fn merge(&mut self, other: &ErrorCounts) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0) {
            *mine += theirs;
        }
    }

    /// The kinds that occurred, with their counts.
    pub fn nonzero(&self) -> impl Iterator<Item = (ErrorKind, u64)> + '_ {
        ErrorKind::ALL
            .into_iter()
            .map(|kind| (kind, self.get(kind)))
            .filter(|(_, count)| *count > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(ErrorKind::parse("nonsense"), None);
    }

    #[test]
    fn source_port_exhaustion_is_its_own_kind() {
        let error = io::Error::from_raw_os_error(99);
        assert_eq!(ErrorKind::of_connect(&error), ErrorKind::PortExhaustion);
        let error = io::Error::from_raw_os_error(24);
        assert_eq!(ErrorKind::of_connect(&error), ErrorKind::TooManyOpenFiles);
        let error = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(ErrorKind::of_connect(&error), ErrorKind::Refused);
    }

    #[test]
    fn counts_merge_and_list_only_what_happened() {
        let mut a = ErrorCounts::default();
        a.add(ErrorKind::Reset, 2);
        let mut b = ErrorCounts::default();
        b.add(ErrorKind::Reset, 1);
        b.add(ErrorKind::BadStatus, 4);
        a.merge(&b);
        assert_eq!(a.total(), 7);
        let listed: Vec<_> = a.nonzero().collect();
        assert_eq!(
            listed,
            vec![(ErrorKind::Reset, 3), (ErrorKind::BadStatus, 4)]
        );
    }
}
