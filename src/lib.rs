//! The `lean-events` Node.js binding: thin `#[napi]` classes over `lean-events-core`.
//! Arguments are converted, the core is called, errors become `Error`s with a stable code.
#![deny(clippy::all)]

mod bus;
mod environment;
mod error;
#[cfg(unix)]
mod event_loop;
mod keyspace;
mod scheduler;
mod subscription;
mod wake_queue;

pub use bus::NativeBus;
pub use scheduler::NativeScheduler;
pub use subscription::NativeSubscription;

/// Tokio worker threads of the addon: `LEAN_EVENTS_WORKERS` (1-64), default 1. One worker
/// measured fastest here: the store's tasks hand work to each other without waking a
/// second thread, and the JavaScript thread keeps a core to itself.
const DEFAULT_WORKERS: usize = 1;

#[napi_derive::module_init]
fn init() {
    let workers = std::env::var("LEAN_EVENTS_WORKERS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| (1..=64).contains(n))
        .unwrap_or(DEFAULT_WORKERS);
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("lean-events")
        .enable_all()
        .build()
    {
        Ok(rt) => napi::bindgen_prelude::create_custom_tokio_runtime(rt),
        // napi starts its default runtime instead
        Err(e) => eprintln!("lean-events: could not start {workers} worker threads: {e}"),
    }
}
