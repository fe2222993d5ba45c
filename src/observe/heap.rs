//! The allocator's heap: what the program holds, what the allocator keeps
//! free, and giving the free pages back after each poll.
//!
//! Why after each poll: glibc gives every thread an arena and returns a
//! freed block to the arena it came from. A poll's netlinker threads build
//! the records, the delivery thread frees them later, and each poll's
//! threads are new, so free space is scattered over several arenas; glibc
//! gives an arena's pages back only from its top, so a long-running daemon's
//! resident size creeps up although what it holds does not (seen in the
//! 2-hour soak: RSS from 25 to 34 MB; `malloc_trim` on the running process
//! gave 3.6 of 20.4 MB back at once). A trim after each poll returns every
//! whole free page (madvise), so RSS follows what the daemon holds. It costs
//! a walk of the arenas' free lists, small beside a poll; the last one's duration is
//! the `xtcp2_heap_last_trim_seconds` metric.
//!
//! Only glibc has these calls; with jemalloc (the `heap-profiling` build)
//! or another libc nothing is trimmed and the heap gauges stay 0.

use std::time::Instant;

use crate::metrics::Metrics;

/// What the allocator reports after a trim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes the program holds (arena blocks in use plus blocks of their own mapping).
    pub in_use: u64,
    /// Bytes free inside the arenas that the allocator keeps (not whole pages, or at an arena's top under the trim threshold).
    pub free_held: u64,
}

/// Gives the allocator's whole free pages back to the kernel.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "heap-profiling")))]
    // SAFETY: malloc_trim takes no pointer; it releases free memory of
    // glibc's own arenas, each under its lock, and is safe from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The allocator's counts, where the allocator tells them (glibc).
pub fn stats() -> Option<HeapStats> {
    #[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "heap-profiling")))]
    {
        // SAFETY: mallinfo2 takes no argument and returns a struct by value;
        // it reads glibc's arenas under their locks.
        let info = unsafe { libc::mallinfo2() };
        Some(HeapStats {
            in_use: (info.uordblks + info.hblkhd) as u64,
            free_held: info.fordblks as u64,
        })
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu", not(feature = "heap-profiling"))))]
    {
        None
    }
}

/// After a poll: trim, then publish what the heap holds.
pub fn after_poll(metrics: &Metrics) {
    let started = Instant::now();
    release_free_memory();
    metrics.heap.last_trim_seconds.set(started.elapsed().as_secs_f64());
    if let Some(heap) = stats() {
        metrics
            .heap
            .in_use_bytes
            .set(i64::try_from(heap.in_use).unwrap_or(i64::MAX));
        metrics
            .heap
            .free_held_bytes
            .set(i64::try_from(heap.free_held).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "heap-profiling")))]
    #[test]
    fn a_held_block_counts_as_in_use_and_its_release_does_not() {
        let before = stats().expect("glibc reports its heap").in_use;
        // Large enough to get its own mapping (counted in hblkhd), and
        // far larger than what the tests running beside this one free.
        // black_box: an allocation nothing reads may be optimised away.
        let block = std::hint::black_box(vec![1u8; 64 << 20]);
        let holding = stats().expect("glibc reports its heap").in_use;
        assert!(holding >= before + (48 << 20), "before {before}, holding {holding}");
        drop(std::hint::black_box(block));
        release_free_memory();
        let after = stats().expect("glibc reports its heap").in_use;
        // Most of the block, not all of it: tests running beside this one
        // allocate too (CI saw 14 KB more in use after the release).
        assert!(after + (48 << 20) <= holding, "holding {holding}, after {after}");
    }

    #[test]
    fn after_poll_sets_the_gauges_where_the_allocator_reports() {
        let metrics = Metrics::new();
        after_poll(&metrics);
        if stats().is_some() {
            assert!(metrics.heap.in_use_bytes.get() > 0);
        }
    }
}
