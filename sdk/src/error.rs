//! The one error type of the crate.

use std::fmt;

/// Why a job, a main-thread call or a runtime operation did not produce its value.
///
/// `Error` is returned by job closures (`ctx.check()?` propagates [`Error::Cancelled`]), stored as a
/// job's result, and returned by runtime calls such as [`Handle::pump`](crate::Handle::pump).
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The job was cancelled (by [`Job::cancel`](crate::Job::cancel), its group, a newer
    /// [`spawn_latest`](crate::Handle::spawn_latest) with the same key, or shutdown).
    Cancelled,
    /// User code panicked; the payload's message (or a placeholder if it was not a string).
    Panicked(String),
    /// The job returned an error of its own.
    Failed(Box<dyn std::error::Error + Send + Sync + 'static>),
    /// A main-thread-only call was made from another thread, or a blocking wait was attempted on
    /// the main thread (which must never block on a job).
    WrongThread,
    /// `pump` (or `run_until`) was called from inside a main-thread item that `pump` is
    /// running, or from `run_until`'s `until` condition; or an operation was re-entered from
    /// inside itself (a sink emitting into itself, a plugin reloaded from its own callbacks).
    Reentrant,
    /// [`call_on_main`](crate::Handle::call_on_main) waited its whole timeout and the host did not
    /// pump: the closure was not run.
    HostBusy,
    /// The host has not pumped and the runtime's main-thread backlog is at its limit
    /// ([`Builder::main_backlog_limit`](crate::Builder::main_backlog_limit) items, or
    /// [`main_backlog_bytes`](crate::Builder::main_backlog_bytes) of emitted payloads): a
    /// `post`, `post_event`, `emit` or `spawn` queued nothing. Retry once the host pumps.
    Backlog,
    /// The runtime is shut down (or shutting down) and accepts no more work.
    ShutDown,
    /// A wait ran out of time before the awaited value was ready.
    Timeout,
    /// An argument was out of range or inconsistent; the text says which.
    InvalidArgument(&'static str),
    /// The job's result was already taken (by `try_result`, `wait_timeout` or an `on_main`
    /// continuation).
    ResultTaken,
}

impl Error {
    /// Wraps any error type as [`Error::Failed`]: `std::fs::read(p).map_err(Error::failed)?`.
    pub fn failed<E>(err: E) -> Self
    where
        E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    {
        Error::Failed(err.into())
    }

    /// Whether this is [`Error::Cancelled`].
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Error::Cancelled)
    }

    pub(crate) fn from_panic(payload: Box<dyn std::any::Any + Send>) -> Self {
        Error::Panicked(panic_message(payload.as_ref()))
    }
}

/// The message of a panic payload: the `&str` or `String` given to `panic!`, else a placeholder.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Cancelled => f.write_str("cancelled"),
            Error::Panicked(msg) => write!(f, "panicked: {msg}"),
            Error::Failed(err) => write!(f, "failed: {err}"),
            Error::WrongThread => f.write_str("called from the wrong thread"),
            Error::Reentrant => f.write_str(
                "re-entrant call: pump, or an operation, called from inside its own callback",
            ),
            Error::HostBusy => f.write_str("the host did not pump within the timeout"),
            Error::Backlog => f.write_str(
                "the host has not pumped and the main-thread backlog is at its limit: nothing was queued",
            ),
            Error::ShutDown => f.write_str("the runtime is shut down"),
            Error::Timeout => f.write_str("timed out"),
            Error::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            Error::ResultTaken => f.write_str("the result was already taken"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Failed(err) => Some(err.as_ref()),
            _ => None,
        }
    }
}

impl From<String> for Error {
    fn from(msg: String) -> Self {
        Error::Failed(msg.into())
    }
}

impl From<&str> for Error {
    fn from(msg: &str) -> Self {
        Error::Failed(msg.into())
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        Error::Failed(Box::new(err))
    }
}

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
