//! Errors: every failed call returns an [`Error`] with the library's status and the message of
//! `mc_last_error()`, read on the calling thread right after the call.

use std::ffi::CStr;
use std::fmt;

use mc_sys as sys;

/// The kind of a failure: one variant per `MC_ERR_*` status, [`ErrorCode::Other`] for codes this
/// crate does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    InvalidArg,
    NoMemory,
    NotFound,
    OutOfRange,
    Exists,
    Busy,
    Timeout,
    PeerDown,
    Transport,
    Unsupported,
    Metadata,
    Internal,
    BufferTooSmall,
    Canceled,
    Denied,
    Other,
}

impl ErrorCode {
    /// The code for a status (negative `MC_ERR_*`).
    pub fn from_status(status: i32) -> ErrorCode {
        match status {
            s if s == sys::MC_ERR_INVALID_ARG as i32 => ErrorCode::InvalidArg,
            s if s == sys::MC_ERR_NO_MEMORY as i32 => ErrorCode::NoMemory,
            s if s == sys::MC_ERR_NOT_FOUND as i32 => ErrorCode::NotFound,
            s if s == sys::MC_ERR_OUT_OF_RANGE as i32 => ErrorCode::OutOfRange,
            s if s == sys::MC_ERR_EXISTS as i32 => ErrorCode::Exists,
            s if s == sys::MC_ERR_BUSY as i32 => ErrorCode::Busy,
            s if s == sys::MC_ERR_TIMEOUT as i32 => ErrorCode::Timeout,
            s if s == sys::MC_ERR_PEER_DOWN as i32 => ErrorCode::PeerDown,
            s if s == sys::MC_ERR_TRANSPORT as i32 => ErrorCode::Transport,
            s if s == sys::MC_ERR_UNSUPPORTED as i32 => ErrorCode::Unsupported,
            s if s == sys::MC_ERR_METADATA as i32 => ErrorCode::Metadata,
            s if s == sys::MC_ERR_INTERNAL as i32 => ErrorCode::Internal,
            s if s == sys::MC_ERR_BUFFER_TOO_SMALL as i32 => ErrorCode::BufferTooSmall,
            s if s == sys::MC_ERR_CANCELED as i32 => ErrorCode::Canceled,
            s if s == sys::MC_ERR_DENIED as i32 => ErrorCode::Denied,
            _ => ErrorCode::Other,
        }
    }
}

/// A failed mc call: the status (`MC_ERR_*`, negative) and its message.
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    status: i32,
    message: String,
}

/// `Result<T, mc::Error>`.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error with a status and message of the caller's choice.
    pub fn new(status: i32, message: impl Into<String>) -> Error {
        Error {
            status,
            message: message.into(),
        }
    }

    /// The error of the call that just failed with status on this thread (reads mc_last_error).
    pub(crate) fn last(status: i32) -> Error {
        // SAFETY: mc_last_error never returns NULL; the text is valid until this thread's next
        // mc call, and it is copied at once.
        let message = unsafe { CStr::from_ptr(sys::mc_last_error()) }
            .to_string_lossy()
            .into_owned();
        Error { status, message }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Error {
        Error::new(sys::MC_ERR_INVALID_ARG as i32, message)
    }

    /// The status, a negative `MC_ERR_*` code.
    pub fn status(&self) -> i32 {
        self.status
    }

    /// The status as an [`ErrorCode`].
    pub fn code(&self) -> ErrorCode {
        ErrorCode::from_status(self.status)
    }

    /// The library's message ("" when it gave none).
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// The library's name for a status ("invalid argument", ...), also for unknown codes.
pub fn status_str(status: i32) -> &'static str {
    // SAFETY: mc_status_str returns static text, never NULL.
    unsafe { CStr::from_ptr(sys::mc_status_str(status)) }
        .to_str()
        .unwrap_or("?")
}

/// Turns a returned status into a Result, reading the message right after the failing call.
#[inline]
pub(crate) fn check(status: sys::mc_status_t) -> Result<()> {
    if status == sys::MC_OK as i32 {
        Ok(())
    } else {
        Err(Error::last(status))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{} ({})", status_str(self.status), self.status)
        } else {
            write!(
                f,
                "{} ({}, {})",
                self.message,
                status_str(self.status),
                self.status
            )
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("code", &self.code())
            .field("status", &self.status)
            .field("message", &self.message)
            .finish()
    }
}

impl std::error::Error for Error {}
