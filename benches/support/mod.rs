//! Shared by the benchmarks: an allocator that counts allocations, so a
//! benchmark can report allocations per record (the target is zero), and
//! where the fixture captures are: the tests' own lookup, so a benchmark
//! run by `cargo test --all-targets` under CI fails without them as a
//! test does.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

#[path = "../../tests/support/prerequisites.rs"]
#[allow(dead_code)] // the benchmarks use only the fixture lookup
mod prerequisites;

pub use prerequisites::fixtures_dir;

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
