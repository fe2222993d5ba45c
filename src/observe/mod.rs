//! Observability, beside the data path: metrics, the HTTP endpoints
//! (metrics, health, readiness, pprof), profiling, Pyroscope and the
//! startup capability check. Nothing here touches records.

pub mod metrics;
pub mod caps;
