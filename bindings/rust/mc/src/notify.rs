//! Notifications (`MC_NOTIFY`): [`Batch::notify`], [`Engine::notify_recv`] and the engine's
//! event fd ([`Engine::event_fd`]). A child module of `engine`, whose private fields it uses.

use std::ffi::{c_void, CStr};
use std::os::fd::RawFd;

use mc_sys as sys;

use super::{Batch, Engine, Segment};
use crate::error::{check, Error, Result};

const NOT_FOUND: i32 = sys::MC_ERR_NOT_FOUND as i32;

/// The largest message one NOTIFY carries.
pub const NOTIFY_MAX_BYTES: usize = sys::MC_NOTIFY_MAX_BYTES as usize;

/// One message an engine received (`mc_notify_recv`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// The sending engine's name.
    pub peer: String,
    /// The sender's incarnation.
    pub incarnation: u64,
    pub data: Vec<u8>,
}

impl Engine {
    /// Takes the oldest queued notification, or `None` when none is queued. Never blocks.
    pub fn notify_recv(&self) -> Result<Option<Notification>> {
        // SAFETY: mc_notification_t is plain data; all-zero is a valid value.
        let mut info: sys::mc_notification_t = unsafe { std::mem::zeroed() };
        info.size = std::mem::size_of::<sys::mc_notification_t>();
        let mut buf = vec![0u8; NOTIFY_MAX_BYTES];
        // SAFETY: live engine; info and buf are valid for the sizes given.
        let s = unsafe {
            sys::mc_notify_recv(self.ptr(), &mut info, buf.as_mut_ptr().cast::<c_void>(), buf.len())
        };
        if s == NOT_FOUND {
            return Ok(None);
        }
        check(s)?;
        buf.truncate(info.length as usize);
        // SAFETY: the library NUL-terminates peer within its 256 bytes.
        let peer = unsafe { CStr::from_ptr(info.peer.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        Ok(Some(Notification {
            peer,
            incarnation: info.incarnation,
            data: buf,
        }))
    }

    /// The engine's event fd, owned by the engine (do not close it; it closes with the
    /// engine). It polls readable after a notification was queued or a batch's requests all
    /// ended; reading 8 bytes drains it.
    pub fn event_fd(&self) -> Result<RawFd> {
        let mut fd: i32 = -1;
        // SAFETY: live engine, valid out-pointer.
        check(unsafe { sys::mc_engine_event_fd(self.ptr(), &mut fd) })?;
        Ok(fd)
    }
}

impl Batch<'_> {
    /// Submits one NOTIFY carrying `msg` (1..=[`NOTIFY_MAX_BYTES`] bytes, copied at submit) to
    /// `segment` and returns its index. It is delivered once every request submitted to this
    /// batch before it COMPLETED; if one failed it ends `Canceled`, never delivered; a full
    /// queue at the peer is `Busy`.
    pub fn notify(&self, segment: &Segment<'_>, msg: &[u8]) -> Result<usize> {
        if msg.is_empty() {
            return Err(Error::invalid("notify: the message is empty"));
        }
        let req = sys::mc_request_t {
            opcode: sys::MC_NOTIFY as u32,
            flags: 0,
            local: msg.as_ptr() as *mut c_void,
            segment: segment.handle(),
            remote: 0,
            length: msg.len() as u64,
        };
        let _g = self.submit_lock.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: live batch; the message is copied by the library during the call.
        check(unsafe { sys::mc_batch_submit(self.raw.as_ptr(), &req, 1) })?;
        Ok(self
            .submitted
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel))
    }
}
