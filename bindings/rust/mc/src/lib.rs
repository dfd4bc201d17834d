//! Safe Rust API for mc, a transfer engine for AI infrastructure, over libmc's C ABI
//! (`mc-sys`).
//!
//! ```no_run
//! let eng = mc::Engine::new([("listen", "127.0.0.1:0")])?;
//! let mut buf = eng.alloc(1 << 20)?;             // registered, page-aligned memory
//! let seg = eng.open("127.0.0.1:15000")?;        // a peer's segment
//! let remote = seg.buffers()?[0].addr;           // the peer's address
//! eng.write(&buf, &seg, remote, None)?;          // sync one-sided WRITE
//! eng.read(&mut buf, &seg, remote, None)?;
//! # Ok::<(), mc::Error>(())
//! ```
//!
//! Local memory is passed as `&[u8]` (WRITE) and `&mut [u8]` (READ); it must lie in memory
//! registered with the engine ([`Engine::alloc`], [`Engine::register`]), or the library refuses
//! the request with [`ErrorCode::OutOfRange`]. Remote addresses are the peer's raw `u64`s.
//!
//! Registered memory is published: peers may read and write it at any time, as with RDMA, so
//! what this process sees of it can change under a shared borrow while a peer writes it.
//! [`Engine::set_access`] narrows what peers may do with one buffer (a forbidden request fails
//! with [`ErrorCode::Denied`]); engines with different `auth_token`s refuse each other likewise.
//! A [`Batch`] borrows the memory of its requests for its whole life and waits for them when
//! dropped; leaking a batch with `mem::forget` while requests run leaves them racing with later
//! uses of that memory (the memory itself stays mapped: a buffer waits for its requests to end
//! before it is freed).

mod engine;
mod error;
mod heap;
mod log;

pub use engine::{
    Access, Batch, Buffer, BufferInfo, Config, Engine, Notification, Registered, Request,
    RequestState, RequestStatus, Segment, SegmentEvent, SegmentInfo, SegmentState,
    NOTIFY_MAX_BYTES,
};
pub use error::{status_str, Error, ErrorCode, Result};
pub use heap::{Heap, HeapStats};
pub use log::{set_log_handler, set_log_level, LogLevel};

/// Raw bindings, for what the safe API does not cover.
pub use mc_sys as sys;

use std::ffi::CStr;

/// The loaded library's version: (major, minor, patch).
pub fn version() -> (u32, u32, u32) {
    // SAFETY: no arguments; thread-safe.
    let v = unsafe { sys::mc_version() };
    (v >> 16, (v >> 8) & 0xff, v & 0xff)
}

/// The loaded library's version text, e.g. "0.1.0".
pub fn version_string() -> &'static str {
    // SAFETY: static text owned by the library, never NULL.
    unsafe { CStr::from_ptr(sys::mc_version_string()) }
        .to_str()
        .unwrap_or("?")
}

/// Fails when the loaded library's major version is not the one these bindings were made for.
pub(crate) fn check_version() -> Result<()> {
    let (major, _, _) = version();
    if major != sys::MC_VERSION_MAJOR {
        return Err(Error::new(
            sys::MC_ERR_UNSUPPORTED as i32,
            format!(
                "libmc {} is loaded; these bindings need {}.x",
                version_string(),
                sys::MC_VERSION_MAJOR
            ),
        ));
    }
    Ok(())
}
