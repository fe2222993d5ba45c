//! io_uring receive path (issue 8); filled in later.
