//! Shared by the benchmarks: an allocator that counts allocations, so a
//! benchmark can report allocations per record (the target is zero), and
//! where the fixture captures are.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Counts every allocation and reallocation made by this process.
pub struct CountingAllocator;

pub static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to `System` with the same arguments, so the
// allocator contract is System's; the counter is a relaxed atomic add.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same layout, forwarded.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same layout, forwarded.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: ptr was allocated by System with this layout (all our
        // allocations are), forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr was allocated by System with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// The fixture folder (`../shared/fixtures/inet_diag`, or `XTCP2_FIXTURES`);
/// `None`, after printing that nothing was measured, when it is absent.
pub fn fixtures_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("XTCP2_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/inet_diag"));
    if dir.join("README.md").is_file() {
        Some(dir)
    } else {
        println!(
            "SKIPPED: fixture folder {} is absent (set XTCP2_FIXTURES); nothing was measured",
            dir.display()
        );
        None
    }
}
