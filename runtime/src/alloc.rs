//! 64-byte-aligned, zero-initialised host allocations for buffers, the arena and scratch.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;

use crate::error::RuntimeError;

/// The alignment of every buffer the runtime allocates (a cache line, an AVX-512 vector).
pub const ALIGN: usize = 64;

/// An owned, zeroed, [`ALIGN`]-aligned block of at least one cache line.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: plain owned memory.
unsafe impl Send for AlignedBuf {}
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// `bytes` zeroed bytes (rounded up to a multiple of [`ALIGN`], at least one line).
    pub fn zeroed(bytes: u64) -> Result<AlignedBuf, RuntimeError> {
        let fail = RuntimeError::Alloc { bytes };
        let size = usize::try_from(bytes)
            .ok()
            .and_then(|b| b.max(1).checked_next_multiple_of(ALIGN))
            .ok_or_else(|| fail.clone())?;
        let layout = Layout::from_size_align(size, ALIGN).map_err(|_| fail.clone())?;
        // SAFETY: `layout` has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc_zeroed(layout) }).ok_or(fail)?;
        Ok(AlignedBuf { ptr, layout })
    }

    pub fn ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Usable bytes.
    pub fn capacity(&self) -> usize {
        self.layout.size()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this layout.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_zeroed() {
        for n in [0u64, 1, 63, 64, 65, 1000] {
            let b = AlignedBuf::zeroed(n).unwrap();
            assert_eq!(b.ptr() as usize % ALIGN, 0);
            assert!(b.capacity() as u64 >= n.max(1));
            let s = unsafe { std::slice::from_raw_parts(b.ptr(), b.capacity()) };
            assert!(s.iter().all(|&x| x == 0));
        }
        assert!(AlignedBuf::zeroed(u64::MAX).is_err());
    }
}
