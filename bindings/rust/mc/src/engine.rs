//! Engine, registered memory, segments, requests and batches.

use std::ffi::{c_void, CStr, CString};
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use mc_sys as sys;

use crate::error::{check, Error, Result};

#[path = "notify.rs"]
mod notify;
pub use notify::{Notification, NOTIFY_MAX_BYTES};

const BUSY: i32 = sys::MC_ERR_BUSY as i32;
const BUFFER_TOO_SMALL: i32 = sys::MC_ERR_BUFFER_TOO_SMALL as i32;

fn cstring(what: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::invalid(format!("{what} contains a NUL byte")))
}

/// `None` is the default (-1: no wall-clock limit of the call's own; every request still ends
/// within the engine's timeout_ms of no progress); durations are rounded up to milliseconds.
fn timeout_ms(timeout: Option<Duration>) -> i32 {
    match timeout {
        None => -1,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000);
            ms.min(i32::MAX as u128) as i32
        }
    }
}

// ------------------------------------------------------------------------------------- config

/// A set of config keys (`mc_config_t`), validated when set. See include/mc.h for the keys.
pub struct Config {
    raw: NonNull<sys::mc_config_t>,
}

// SAFETY: a config may move between threads; it is not Sync (mc_config_set is not thread-safe
// on one config and takes &mut self).
unsafe impl Send for Config {}

impl Config {
    /// An empty config.
    pub fn new() -> Result<Config> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: valid out-pointer.
        check(unsafe { sys::mc_config_create(&mut raw) })?;
        Ok(Config {
            raw: NonNull::new(raw).expect("mc_config_create gave NULL"),
        })
    }

    /// Sets key to value; an unknown key or bad value is `InvalidArg` and changes nothing.
    pub fn set(&mut self, key: &str, value: &str) -> Result<&mut Config> {
        let k = cstring("key", key)?;
        let v = cstring("value", value)?;
        // SAFETY: live config, NUL-terminated strings borrowed for the call.
        check(unsafe { sys::mc_config_set(self.raw.as_ptr(), k.as_ptr(), v.as_ptr()) })?;
        Ok(self)
    }
}

impl Drop for Config {
    fn drop(&mut self) {
        // SAFETY: live config, not used again.
        unsafe { sys::mc_config_destroy(self.raw.as_ptr()) }
    }
}

// ------------------------------------------------------------------------------------- engine

type SegmentCallback = Arc<dyn Fn(SegmentEvent) + Send + Sync>;

/// What the segment callback receives: a segment's state changed or its peer rejoined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentEvent {
    pub segment: u64,
    pub state: SegmentState,
    pub incarnation: u64,
}

/// An mc engine: registers memory, publishes it under [`Engine::name`] and moves bytes to and
/// from peers' segments. `Send + Sync`: every call but destroy (Drop) is thread-safe in C.
pub struct Engine {
    raw: NonNull<sys::mc_engine_t>,
    name: String,
    // The segment callback's slot: its address is the C `user` pointer, stable for the
    // engine's life; the callback itself can be swapped while engine threads read it.
    callback: Box<RwLock<Option<SegmentCallback>>>,
}

// SAFETY: include/mc.h documents every engine function used through &self as thread-safe;
// mc_engine_destroy runs in Drop, which has exclusive access.
unsafe impl Send for Engine {}
unsafe impl Sync for Engine {}

impl Engine {
    /// Creates an engine from (key, value) config pairs, e.g. `[("listen", "127.0.0.1:0")]`.
    pub fn new<K: AsRef<str>, V: AsRef<str>>(
        config: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Engine> {
        let mut cfg = Config::new()?;
        for (k, v) in config {
            cfg.set(k.as_ref(), v.as_ref())?;
        }
        Engine::with_config(&cfg)
    }

    /// Creates an engine from a [`Config`] (which it does not keep).
    pub fn with_config(config: &Config) -> Result<Engine> {
        crate::check_version()?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: live config, valid out-pointer.
        check(unsafe { sys::mc_engine_create(config.raw.as_ptr(), &mut raw) })?;
        let raw = NonNull::new(raw).expect("mc_engine_create gave NULL");
        // SAFETY: live engine; the name is valid until destroy and copied at once.
        let name = unsafe { CStr::from_ptr(sys::mc_engine_name(raw.as_ptr())) }
            .to_string_lossy()
            .into_owned();
        Ok(Engine {
            raw,
            name,
            callback: Box::new(RwLock::new(None)),
        })
    }

    fn ptr(&self) -> *mut sys::mc_engine_t {
        self.raw.as_ptr()
    }

    /// The name peers open this engine's segment by ("HOST:PORT" in p2p mode).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The engine's counters as JSON text (`mc_engine_stats_json`).
    pub fn stats_json(&self) -> Result<String> {
        let mut cap = 4096usize;
        loop {
            let mut buf = vec![0u8; cap];
            let mut needed = 0usize;
            // SAFETY: buf holds cap bytes; needed is a valid out-pointer.
            let s = unsafe {
                sys::mc_engine_stats_json(self.ptr(), buf.as_mut_ptr().cast(), cap, &mut needed)
            };
            if s == BUFFER_TOO_SMALL {
                cap = needed.max(cap * 2);
                continue;
            }
            check(s)?;
            buf.truncate(needed.saturating_sub(1));
            return String::from_utf8(buf).map_err(|_| Error::invalid("stats: not UTF-8"));
        }
    }

    /// Allocates `len` bytes of zeroed, page-aligned memory and registers it.
    pub fn alloc(&self, len: usize) -> Result<Buffer<'_>> {
        self.alloc_at(len, None)
    }

    /// [`Engine::alloc`] with a location ("cpu", "cpu:N"; `None` detects). The memory comes
    /// from `mc_buffer_alloc` (memfd-backed: same-host peers map it directly).
    pub fn alloc_at(&self, len: usize, location: Option<&str>) -> Result<Buffer<'_>> {
        if len == 0 {
            return Err(Error::invalid("alloc: length must be > 0"));
        }
        let loc = location.map(|l| cstring("location", l)).transpose()?;
        let loc_ptr = loc.as_ref().map_or(std::ptr::null(), |l| l.as_ptr());
        let mut addr: *mut c_void = std::ptr::null_mut();
        // SAFETY: live engine, valid out-pointer.
        check(unsafe { sys::mc_buffer_alloc(self.ptr(), len, loc_ptr, &mut addr) })?;
        let ptr = NonNull::new(addr.cast::<u8>()).expect("mc_buffer_alloc gave NULL");
        Ok(Buffer {
            engine: self,
            ptr,
            len,
        })
    }

    /// Registers owned memory (a `Vec<u8>` or `Box<[u8]>`) and keeps it until the returned
    /// [`Registered`] is dropped or [`Registered::into_inner`] gives it back.
    pub fn register(&self, mem: impl Into<Box<[u8]>>) -> Result<Registered<'_>> {
        let mut mem = mem.into();
        // SAFETY: the box's heap memory does not move and lives in Registered until it is
        // unregistered.
        unsafe { self.register_raw(mem.as_mut_ptr(), mem.len(), None)? };
        Ok(Registered {
            engine: self,
            mem: Some(mem),
        })
    }

    /// Registers `[ptr, ptr+len)`; `location` "cpu", "cpu:N", "cuda:N" or `None` to detect.
    ///
    /// # Safety
    /// The memory must stay valid until [`Engine::unregister_raw`] returns `Ok` or the engine is
    /// dropped, and peers may write it at any time meanwhile.
    pub unsafe fn register_raw(
        &self,
        ptr: *mut u8,
        len: usize,
        location: Option<&str>,
    ) -> Result<()> {
        let loc = location.map(|l| cstring("location", l)).transpose()?;
        let loc_ptr = loc.as_ref().map_or(std::ptr::null(), |l| l.as_ptr());
        check(sys::mc_buffer_register(
            self.ptr(),
            ptr.cast(),
            len,
            loc_ptr,
        ))
    }

    /// Registers several owned memories at once (`mc_buffer_register_batch`): all or nothing,
    /// and the descriptor is published once. Each is kept until its [`Registered`] is dropped
    /// (or [`Engine::unregister_batch`]). An error names the offending index in its message.
    pub fn register_batch<M: Into<Box<[u8]>>>(
        &self,
        mems: impl IntoIterator<Item = M>,
    ) -> Result<Vec<Registered<'_>>> {
        let mut mems: Vec<Box<[u8]>> = mems.into_iter().map(Into::into).collect();
        if mems.is_empty() {
            return Ok(Vec::new());
        }
        let descs: Vec<(*mut u8, usize, Option<&str>)> = mems
            .iter_mut()
            .map(|m| (m.as_mut_ptr(), m.len(), None))
            .collect();
        // SAFETY: each box's heap memory does not move and lives in its Registered until it is
        // unregistered.
        unsafe { self.register_batch_raw(&descs)? };
        Ok(mems
            .into_iter()
            .map(|m| Registered {
                engine: self,
                mem: Some(m),
            })
            .collect())
    }

    /// Registers several `(ptr, len, location)` ranges at once, all or nothing
    /// (`mc_buffer_register_batch`); overlaps among them or with registered memory: `Exists`.
    ///
    /// # Safety
    /// As for [`Engine::register_raw`], for every range.
    pub unsafe fn register_batch_raw(&self, bufs: &[(*mut u8, usize, Option<&str>)]) -> Result<()> {
        let locs: Vec<Option<CString>> = bufs
            .iter()
            .map(|(_, _, l)| l.map(|l| cstring("location", l)).transpose())
            .collect::<Result<_>>()?;
        let descs: Vec<sys::mc_buffer_desc_t> = bufs
            .iter()
            .zip(&locs)
            .map(|(&(ptr, len, _), loc)| sys::mc_buffer_desc_t {
                addr: ptr.cast(),
                length: len as u64,
                location: loc.as_ref().map_or(std::ptr::null(), |l| l.as_ptr()),
            })
            .collect();
        check(sys::mc_buffer_register_batch(
            self.ptr(),
            descs.as_ptr(),
            descs.len(),
        ))
    }

    /// Unregisters buffers from [`Engine::register`] / [`Engine::register_batch`] at once
    /// (`mc_buffer_unregister_batch`, retried while requests use one) and gives the memory
    /// back, in order. Buffers of another engine are `InvalidArg` (they are dropped, which
    /// unregisters them from their own engine).
    pub fn unregister_batch(&self, regs: Vec<Registered<'_>>) -> Result<Vec<Box<[u8]>>> {
        if regs.iter().any(|r| !std::ptr::eq(r.engine, self)) {
            return Err(Error::invalid(
                "unregister_batch: a buffer belongs to another engine",
            ));
        }
        let mut mems: Vec<Box<[u8]>> = regs
            .into_iter()
            .map(|mut r| r.mem.take().expect("present until dropped"))
            .collect();
        let ptrs: Vec<*mut u8> = mems.iter_mut().map(|m| m.as_mut_ptr()).collect();
        loop {
            // SAFETY: every pointer starts a buffer this crate registered with this engine.
            match unsafe { self.unregister_batch_raw(&ptrs) } {
                Err(e) if e.status() == BUSY => std::thread::sleep(Duration::from_millis(1)),
                Ok(()) => return Ok(mems),
                Err(e) => {
                    // Not expected (all were registered here); make sure none stays registered
                    // before its memory can be freed.
                    for &p in &ptrs {
                        self.unregister_wait(p);
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Unregisters the buffers that start at the pointers, all or nothing
    /// (`mc_buffer_unregister_batch`: `NotFound` for an unknown one, `Busy` while one is used).
    ///
    /// # Safety
    /// None beyond the library's own checks; unsafe because it ends what register_raw began.
    pub unsafe fn unregister_batch_raw(&self, ptrs: &[*mut u8]) -> Result<()> {
        let addrs: Vec<*mut c_void> = ptrs.iter().map(|p| p.cast()).collect();
        check(sys::mc_buffer_unregister_batch(
            self.ptr(),
            addrs.as_ptr(),
            addrs.len(),
        ))
    }

    /// Sets what peers may do with the buffer that starts at `addr` (`mc_buffer_set_access`):
    /// a forbidden request fails with `Denied`. This engine's own requests are not affected.
    /// When rights are taken away, returns once no peer request admitted under the old ones
    /// still runs. Not the start of a registered buffer: `NotFound`.
    pub fn set_access(&self, addr: u64, access: Access) -> Result<()> {
        // SAFETY: live engine; the library only looks the address up.
        check(unsafe { sys::mc_buffer_set_access(self.ptr(), addr as *mut c_void, access.0) })
    }

    /// Unregisters the buffer that starts at ptr (`Busy` while requests use it).
    ///
    /// # Safety
    /// None beyond the library's own checks; unsafe because it ends what register_raw began.
    pub unsafe fn unregister_raw(&self, ptr: *mut u8) -> Result<()> {
        check(sys::mc_buffer_unregister(self.ptr(), ptr.cast()))
    }

    /// Unregisters, retrying while requests still use the memory (each ends within the
    /// engine's timeout_ms).
    fn unregister_wait(&self, ptr: *mut u8) {
        loop {
            // SAFETY: ptr starts a buffer this crate registered.
            match unsafe { self.unregister_raw(ptr) } {
                Err(e) if e.status() == BUSY => std::thread::sleep(Duration::from_millis(1)),
                _ => return,
            }
        }
    }

    /// Opens the segment published under name (blocks at most the engine's timeout_ms).
    pub fn open(&self, name: &str) -> Result<Segment<'_>> {
        let cname = cstring("name", name)?;
        let mut handle = 0u64;
        // SAFETY: live engine, valid string and out-pointer.
        check(unsafe { sys::mc_segment_open(self.ptr(), cname.as_ptr(), &mut handle) })?;
        Ok(Segment {
            engine: self,
            handle,
            name: name.to_owned(),
        })
    }

    /// Sets (or clears with `None`) the callback for segment state changes and rejoins. It runs
    /// on an engine thread; keep it short.
    pub fn set_segment_callback(
        &self,
        callback: Option<Box<dyn Fn(SegmentEvent) + Send + Sync>>,
    ) -> Result<()> {
        let user = &*self.callback as *const RwLock<Option<SegmentCallback>> as *mut c_void;
        match callback {
            Some(cb) => {
                *self.callback.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::from(cb));
                // SAFETY: user points into self.callback, valid until after destroy in Drop.
                check(unsafe {
                    sys::mc_engine_set_segment_callback(self.ptr(), Some(segment_trampoline), user)
                })
            }
            None => {
                // SAFETY: clearing.
                check(unsafe { sys::mc_engine_set_segment_callback(self.ptr(), None, user) })?;
                *self.callback.write().unwrap_or_else(|e| e.into_inner()) = None;
                Ok(())
            }
        }
    }

    /// Copies `local` (registered) to the peer's address `remote` and waits (`timeout` as for
    /// [`Engine::transfer`]).
    pub fn write(
        &self,
        local: &[u8],
        segment: &Segment<'_>,
        remote: u64,
        timeout: Option<Duration>,
    ) -> Result<()> {
        self.transfer(&mut [Request::write(local, segment, remote)], timeout)
    }

    /// Copies `[remote, remote + local.len())` of the segment into `local` (registered) and
    /// waits (`timeout` as for [`Engine::transfer`]).
    pub fn read(
        &self,
        local: &mut [u8],
        segment: &Segment<'_>,
        remote: u64,
        timeout: Option<Duration>,
    ) -> Result<()> {
        self.transfer(&mut [Request::read(local, segment, remote)], timeout)
    }

    /// Runs the requests on an internal batch and waits. `None` is the default: no wall-clock
    /// limit of the call's own, and every request still ends within the engine's timeout_ms of
    /// no progress (so a call never hangs); `Some(d)` is a wall-clock limit on top (`Timeout`).
    /// On a timeout the rest is canceled, and this returns only once none of them can touch the
    /// memory.
    pub fn transfer(&self, requests: &mut [Request<'_>], timeout: Option<Duration>) -> Result<()> {
        if requests.is_empty() {
            return Err(Error::invalid("transfer: no requests"));
        }
        let raw: Vec<sys::mc_request_t> = requests.iter_mut().map(Request::to_raw).collect();
        // SAFETY: the memory of each request is borrowed (mutably for READs) for this call,
        // which returns only once no request can touch it.
        check(unsafe { sys::mc_transfer(self.ptr(), raw.as_ptr(), raw.len(), timeout_ms(timeout)) })
    }

    /// A new batch for up to `capacity` (1..16777216) requests.
    pub fn batch<'e>(&'e self, capacity: usize) -> Result<Batch<'e>> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: live engine, valid out-pointer.
        check(unsafe { sys::mc_batch_create(self.ptr(), capacity, &mut raw) })?;
        Ok(Batch {
            raw: NonNull::new(raw).expect("mc_batch_create gave NULL"),
            submitted: AtomicUsize::new(0),
            submit_lock: Mutex::new(()),
            _engine: PhantomData,
        })
    }
}

extern "C" fn segment_trampoline(segment: u64, state: u32, incarnation: u64, user: *mut c_void) {
    // SAFETY: user is the engine's callback slot, alive until after mc_engine_destroy.
    let slot = unsafe { &*(user as *const RwLock<Option<SegmentCallback>>) };
    let cb = match slot.read() {
        Ok(g) => g.clone(),
        Err(_) => return,
    };
    if let Some(cb) = cb {
        let ev = SegmentEvent {
            segment,
            state: SegmentState::from_raw(state),
            incarnation,
        };
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cb(ev)));
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // SAFETY: exclusive access; nothing borrows the engine any more (buffers, segments and
        // batches borrow it), so no call races with destroy.
        unsafe { sys::mc_engine_destroy(self.ptr()) }
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("name", &self.name).finish()
    }
}

// ------------------------------------------------------------------------------------- memory

/// What peers may do with a registered buffer (`MC_ACCESS_*` bits), for
/// [`Engine::set_access`]. Newly registered buffers allow [`Access::READ_WRITE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Access(u32);

impl Access {
    /// Peers may not touch the buffer.
    pub const NONE: Access = Access(0);
    /// Peers may READ from it.
    pub const READ: Access = Access(sys::MC_ACCESS_READ as u32);
    /// Peers may WRITE into it.
    pub const WRITE: Access = Access(sys::MC_ACCESS_WRITE as u32);
    /// Both (the default).
    pub const READ_WRITE: Access = Access(sys::MC_ACCESS_READ as u32 | sys::MC_ACCESS_WRITE as u32);

    /// The raw bits.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// Raw bits; the library refuses unknown ones with `InvalidArg`.
    pub fn from_bits(bits: u32) -> Access {
        Access(bits)
    }

    /// Whether every bit of `other` is set here.
    pub fn contains(self, other: Access) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Access {
    type Output = Access;
    fn bitor(self, rhs: Access) -> Access {
        Access(self.0 | rhs.0)
    }
}

/// Memory allocated and registered by [`Engine::alloc`] (`mc_buffer_alloc`); derefs to `[u8]`.
/// Dropping it frees it (`mc_buffer_free`, waiting while requests still use it).
pub struct Buffer<'e> {
    engine: &'e Engine,
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: Buffer owns its memory like a Box<[u8]>; &Engine is Send + Sync.
unsafe impl Send for Buffer<'_> {}
unsafe impl Sync for Buffer<'_> {}

impl Buffer<'_> {
    /// The address of the first byte.
    pub fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    /// What peers may do with this buffer ([`Engine::set_access`]).
    pub fn set_access(&self, access: Access) -> Result<()> {
        self.engine.set_access(self.addr(), access)
    }
}

impl Deref for Buffer<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr/len describe our live allocation.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for Buffer<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, with exclusive access through &mut self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Buffer<'_> {
    fn drop(&mut self) {
        // mc_buffer_free is Busy while requests use the buffer; each ends within timeout_ms.
        loop {
            // SAFETY: ptr starts a buffer from mc_buffer_alloc of this (live) engine.
            let s = unsafe { sys::mc_buffer_free(self.engine.ptr(), self.ptr.as_ptr().cast()) };
            if s != BUSY {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Owned memory registered by [`Engine::register`]; derefs to `[u8]`.
pub struct Registered<'e> {
    engine: &'e Engine,
    mem: Option<Box<[u8]>>,
}

impl Registered<'_> {
    /// The address of the first byte.
    pub fn addr(&self) -> u64 {
        self.mem.as_ref().map_or(0, |m| m.as_ptr() as u64)
    }

    /// What peers may do with this memory ([`Engine::set_access`]).
    pub fn set_access(&self, access: Access) -> Result<()> {
        self.engine.set_access(self.addr(), access)
    }

    /// Unregisters the memory (waiting while requests use it) and gives it back.
    pub fn into_inner(mut self) -> Box<[u8]> {
        let mut mem = self.mem.take().expect("present until dropped");
        self.engine.unregister_wait(mem.as_mut_ptr());
        mem
    }
}

impl Deref for Registered<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.mem.as_deref().expect("present until dropped")
    }
}

impl DerefMut for Registered<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.mem.as_deref_mut().expect("present until dropped")
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if let Some(mut mem) = self.mem.take() {
            self.engine.unregister_wait(mem.as_mut_ptr());
        }
    }
}

// ------------------------------------------------------------------------------------- segments

/// A segment's state (`mc_segment_state_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentState {
    Ok,
    Unreachable,
    Other(u32),
}

impl SegmentState {
    fn from_raw(s: u32) -> SegmentState {
        match s {
            x if x == sys::MC_SEGMENT_OK as u32 => SegmentState::Ok,
            x if x == sys::MC_SEGMENT_UNREACHABLE as u32 => SegmentState::Unreachable,
            x => SegmentState::Other(x),
        }
    }
}

/// What `mc_segment_query` says about a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    pub state: SegmentState,
    pub buffer_count: u32,
    pub incarnation: u64,
    pub total_bytes: u64,
    pub transport: String,
    pub rejoins: u64,
    pub state_changed_ms: u64,
}

/// One of a peer's published buffers: `addr` is the peer's address, for remote arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BufferInfo {
    pub addr: u64,
    pub length: u64,
    pub location: String,
}

fn c_text(chars: &[std::ffi::c_char]) -> String {
    let bytes: Vec<u8> = chars
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// An open handle to a peer's (or this engine's own) segment; closed on drop.
pub struct Segment<'e> {
    engine: &'e Engine,
    handle: u64,
    name: String,
}

impl Segment<'_> {
    /// The raw handle (`mc_segment_t`).
    pub fn handle(&self) -> u64 {
        self.handle
    }

    /// The name it was opened by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The segment's state and counters.
    pub fn info(&self) -> Result<SegmentInfo> {
        // SAFETY: all-zero is a valid mc_segment_info_t; size says what fits.
        let mut info: sys::mc_segment_info_t = unsafe { std::mem::zeroed() };
        info.size = std::mem::size_of::<sys::mc_segment_info_t>();
        // SAFETY: live engine, valid out-pointer.
        check(unsafe { sys::mc_segment_query(self.engine.ptr(), self.handle, &mut info) })?;
        Ok(SegmentInfo {
            state: SegmentState::from_raw(info.state),
            buffer_count: info.buffer_count,
            incarnation: info.incarnation,
            total_bytes: info.total_bytes,
            transport: c_text(&info.transport),
            rejoins: info.rejoins,
            state_changed_ms: info.state_changed_ms,
        })
    }

    /// The peer's buffers as last known.
    pub fn buffers(&self) -> Result<Vec<BufferInfo>> {
        let mut cap = 16usize;
        loop {
            // SAFETY: all-zero is a valid mc_buffer_info_t.
            let mut arr: Vec<sys::mc_buffer_info_t> = vec![unsafe { std::mem::zeroed() }; cap];
            let mut count = 0usize;
            // SAFETY: arr holds cap entries; count is a valid out-pointer.
            let s = unsafe {
                sys::mc_segment_buffers(
                    self.engine.ptr(),
                    self.handle,
                    arr.as_mut_ptr(),
                    cap,
                    &mut count,
                )
            };
            if s == BUFFER_TOO_SMALL {
                cap = count.max(cap * 2);
                continue;
            }
            check(s)?;
            arr.truncate(count);
            return Ok(arr
                .iter()
                .map(|b| BufferInfo {
                    addr: b.addr,
                    length: b.length,
                    location: c_text(&b.location),
                })
                .collect());
        }
    }
}

impl Drop for Segment<'_> {
    fn drop(&mut self) {
        // SAFETY: live engine; an unknown handle is only an error status.
        unsafe { sys::mc_segment_close(self.engine.ptr(), self.handle) };
    }
}

impl std::fmt::Debug for Segment<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("name", &self.name)
            .field("handle", &self.handle)
            .finish()
    }
}

// ------------------------------------------------------------------------------------- requests

enum Local<'a> {
    Read(&'a mut [u8]),
    Write(&'a [u8]),
}

/// One one-sided transfer between local memory (registered) and a segment's remote address.
pub struct Request<'a> {
    local: Local<'a>,
    segment: u64,
    remote: u64,
}

impl<'a> Request<'a> {
    /// READ: copies `[remote, remote + into.len())` of the segment into `into`.
    pub fn read(into: &'a mut [u8], segment: &Segment<'_>, remote: u64) -> Request<'a> {
        Request {
            local: Local::Read(into),
            segment: segment.handle,
            remote,
        }
    }

    /// WRITE: copies `from` to `[remote, remote + from.len())` of the segment.
    pub fn write(from: &'a [u8], segment: &Segment<'_>, remote: u64) -> Request<'a> {
        Request {
            local: Local::Write(from),
            segment: segment.handle,
            remote,
        }
    }

    fn to_raw(&mut self) -> sys::mc_request_t {
        let (opcode, local, length) = match &mut self.local {
            Local::Read(b) => (sys::MC_READ, b.as_mut_ptr().cast::<c_void>(), b.len()),
            Local::Write(b) => (sys::MC_WRITE, b.as_ptr() as *mut c_void, b.len()),
        };
        sys::mc_request_t {
            opcode: opcode as u32,
            flags: 0,
            local,
            segment: self.segment,
            remote: self.remote,
            length: length as u64,
        }
    }
}

/// The state of a request (`mc_request_state_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestState {
    Pending,
    Completed,
    Failed,
}

/// `mc_request_status_t`: `error` is the failure's status (0 unless Failed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestStatus {
    pub state: RequestState,
    pub error: i32,
    pub bytes: u64,
}

/// A set of up to `capacity` requests submitted in one or more calls and waited on together.
/// It borrows the memory of its requests for its whole life; dropping it waits for the
/// pending ones. `Send + Sync`: submit, wait, status and cancel are thread-safe in C; reset and
/// destroy take `&mut self` / Drop.
pub struct Batch<'e> {
    raw: NonNull<sys::mc_batch_t>,
    submitted: AtomicUsize,
    submit_lock: Mutex<()>,
    _engine: PhantomData<(&'e Engine, &'e mut [u8])>,
}

// SAFETY: see the type's documentation.
unsafe impl Send for Batch<'_> {}
unsafe impl Sync for Batch<'_> {}

impl<'e> Batch<'e> {
    /// Validates and starts the requests (none starts if any is bad) and returns the index of
    /// the first. Their memory stays borrowed until the batch is dropped.
    pub fn submit(&self, requests: impl IntoIterator<Item = Request<'e>>) -> Result<usize> {
        let raw: Vec<sys::mc_request_t> = requests.into_iter().map(|mut r| r.to_raw()).collect();
        if raw.is_empty() {
            return Err(Error::invalid("submit: no requests"));
        }
        let _g = self.submit_lock.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the memory is borrowed for 'e, which outlives the batch, and Drop waits for
        // every pending request.
        check(unsafe { sys::mc_batch_submit(self.raw.as_ptr(), raw.as_ptr(), raw.len()) })?;
        Ok(self.submitted.fetch_add(raw.len(), Ordering::AcqRel))
    }

    /// [`Batch::submit`] ordered on a CUDA stream (`mc_batch_submit_on_stream`): `stream` is a
    /// `CUstream` / `cudaStream_t` handle (null: the legacy default stream of the context
    /// current on this thread). The requests start after the work queued on the stream before
    /// the call, and work queued after waits on the GPU until they ended; this thread never
    /// waits for the GPU. Without a CUDA driver: `ErrorCode::Unsupported`, nothing submitted.
    ///
    /// # Safety
    /// `stream` must be null or a live CUDA stream, and stay alive until the requests ended.
    pub unsafe fn submit_on_stream(
        &self,
        requests: impl IntoIterator<Item = Request<'e>>,
        stream: *mut std::ffi::c_void,
    ) -> Result<usize> {
        let raw: Vec<sys::mc_request_t> = requests.into_iter().map(|mut r| r.to_raw()).collect();
        if raw.is_empty() {
            return Err(Error::invalid("submit_on_stream: no requests"));
        }
        let _g = self.submit_lock.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: as submit; the stream is the caller's promise.
        check(unsafe { sys::mc_batch_submit_on_stream(self.raw.as_ptr(), raw.as_ptr(), raw.len(), stream) })?;
        Ok(self.submitted.fetch_add(raw.len(), Ordering::AcqRel))
    }

    /// Waits until every submitted request ended (`None`: the default, as for
    /// [`Engine::transfer`]; `Some(Duration::ZERO)`: poll): `Ok` when all completed, the first
    /// failure's error, or `Timeout`.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<()> {
        // SAFETY: live batch.
        check(unsafe { sys::mc_batch_wait(self.raw.as_ptr(), timeout_ms(timeout)) })
    }

    /// The state of request `index`.
    pub fn status(&self, index: usize) -> Result<RequestStatus> {
        let mut st = sys::mc_request_status_t {
            state: 0,
            error: 0,
            bytes: 0,
        };
        // SAFETY: live batch, valid out-pointer.
        check(unsafe { sys::mc_batch_status(self.raw.as_ptr(), index, &mut st) })?;
        let state = match st.state {
            x if x == sys::MC_REQUEST_PENDING as u32 => RequestState::Pending,
            x if x == sys::MC_REQUEST_COMPLETED as u32 => RequestState::Completed,
            _ => RequestState::Failed,
        };
        Ok(RequestStatus {
            state,
            error: st.error,
            bytes: st.bytes,
        })
    }

    /// Cancels every pending request (they end Failed with `Canceled`); returns once none can
    /// touch memory any more.
    pub fn cancel(&self) -> Result<()> {
        // SAFETY: live batch.
        check(unsafe { sys::mc_batch_cancel(self.raw.as_ptr()) })
    }

    /// Requests submitted since creation or reset.
    pub fn len(&self) -> usize {
        self.submitted.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every request (`Busy` while some are pending).
    pub fn reset(&mut self) -> Result<()> {
        // SAFETY: exclusive access.
        check(unsafe { sys::mc_batch_reset(self.raw.as_ptr()) })?;
        self.submitted.store(0, Ordering::Release);
        Ok(())
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        // SAFETY: exclusive access; on Busy wait for the pending requests, then free.
        unsafe {
            if sys::mc_batch_destroy(self.raw.as_ptr()) == BUSY {
                sys::mc_batch_wait(self.raw.as_ptr(), -1);
                sys::mc_batch_destroy(self.raw.as_ptr());
            }
        }
    }
}
