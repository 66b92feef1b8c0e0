//! The `lean-events` Node.js binding: thin `#[napi]` classes over `lean-events-core`.
//! Arguments are converted, the core is called, errors become `Error`s with a stable code.
#![deny(clippy::all)]

mod bus;
mod error;
mod scheduler;
mod subscription;

pub use bus::NativeBus;
pub use scheduler::NativeScheduler;
pub use subscription::NativeSubscription;
