//! The offset allocator (`mc_heap_*`).

use std::ptr::NonNull;

use mc_sys as sys;

use crate::error::{check, Result};

/// Counters of a [`Heap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HeapStats {
    pub capacity: u64,
    pub used: u64,
    pub free: u64,
    pub largest_free: u64,
    pub allocations: u64,
}

/// An offset allocator over `[0, capacity)` that never hands out overlapping ranges.
pub struct Heap {
    raw: NonNull<sys::mc_heap_t>,
}

// SAFETY: every mc_heap_* function is thread-safe; destroy happens in Drop (exclusive).
unsafe impl Send for Heap {}
unsafe impl Sync for Heap {}

impl Heap {
    /// A heap of `capacity` (> 0) bytes.
    pub fn new(capacity: u64) -> Result<Heap> {
        crate::check_version()?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: raw is a valid out-pointer.
        check(unsafe { sys::mc_heap_create(capacity, &mut raw) })?;
        Ok(Heap {
            raw: NonNull::new(raw).expect("mc_heap_create gave NULL"),
        })
    }

    /// The offset of `size` bytes aligned to `align` (a power of two); `NoMemory` when full.
    pub fn alloc(&self, size: u64, align: u64) -> Result<u64> {
        let mut off = 0u64;
        // SAFETY: live handle, valid out-pointer.
        check(unsafe { sys::mc_heap_alloc(self.raw.as_ptr(), size, align, &mut off) })?;
        Ok(off)
    }

    /// Frees the allocation that starts at `offset` (`NotFound` otherwise).
    pub fn free(&self, offset: u64) -> Result<()> {
        // SAFETY: live handle.
        check(unsafe { sys::mc_heap_free(self.raw.as_ptr(), offset) })
    }

    /// The heap's counters.
    pub fn stats(&self) -> Result<HeapStats> {
        // SAFETY: an all-zero mc_heap_stats_t is valid; size tells the library what fits.
        let mut st: sys::mc_heap_stats_t = unsafe { std::mem::zeroed() };
        st.size = std::mem::size_of::<sys::mc_heap_stats_t>();
        // SAFETY: live handle, valid out-pointer.
        check(unsafe { sys::mc_heap_stats(self.raw.as_ptr(), &mut st) })?;
        Ok(HeapStats {
            capacity: st.capacity,
            used: st.used,
            free: st.free,
            largest_free: st.largest_free,
            allocations: st.allocations,
        })
    }
}

impl Drop for Heap {
    fn drop(&mut self) {
        // SAFETY: the handle is live and not used again.
        unsafe { sys::mc_heap_destroy(self.raw.as_ptr()) }
    }
}
