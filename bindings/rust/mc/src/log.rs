//! Process-wide logging (`mc_log_set_handler`, `mc_log_set_level`).

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::{Arc, RwLock};

use mc_sys as sys;

/// Log levels (`MC_LOG_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(i32)]
pub enum LogLevel {
    Error = sys::MC_LOG_ERROR as i32,
    Warn = sys::MC_LOG_WARN as i32,
    Info = sys::MC_LOG_INFO as i32,
    Debug = sys::MC_LOG_DEBUG as i32,
}

type Handler = Arc<dyn Fn(LogLevel, &str) + Send + Sync>;

static HANDLER: RwLock<Option<Handler>> = RwLock::new(None);

extern "C" fn trampoline(level: c_int, message: *const c_char, _user: *mut c_void) {
    let handler = match HANDLER.read() {
        Ok(h) => h.clone(),
        Err(_) => return,
    };
    if let Some(h) = handler {
        let level = match level {
            0 => LogLevel::Error,
            1 => LogLevel::Warn,
            2 => LogLevel::Info,
            _ => LogLevel::Debug,
        };
        let text = if message.is_null() {
            std::borrow::Cow::Borrowed("")
        } else {
            // SAFETY: the library passes a NUL-terminated string valid during the call.
            unsafe { CStr::from_ptr(message) }.to_string_lossy()
        };
        // A panic must not unwind into C.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h(level, &text)));
    }
}

/// Sends every log line to `handler`, called from mc threads; `None` restores stderr.
pub fn set_log_handler(handler: Option<Box<dyn Fn(LogLevel, &str) + Send + Sync>>) {
    match handler {
        Some(h) => {
            *HANDLER.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::from(h));
            // SAFETY: trampoline is a static function valid for the life of the process.
            unsafe { sys::mc_log_set_handler(Some(trampoline), std::ptr::null_mut()) }
        }
        None => {
            // SAFETY: NULL restores stderr.
            unsafe { sys::mc_log_set_handler(None, std::ptr::null_mut()) }
            *HANDLER.write().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
}

/// Sets the process-wide log level.
pub fn set_log_level(level: LogLevel) {
    // SAFETY: thread-safe, any level.
    unsafe { sys::mc_log_set_level(level as c_int) }
}
