//! Core errors to JavaScript errors, and panics kept out of Node.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use lean_events_core::{Error, ErrorCode};

/// A core error as a JavaScript `Error`. The message starts with the stable code
/// (`"EVENT_INVALID: ..."`); the JavaScript layer moves it to `err.code`.
pub fn to_napi(e: Error) -> napi::Error {
    napi::Error::new(napi::Status::GenericFailure, e.to_string())
}

/// Run a future, turning a panic into an `INTERNAL` error instead of unwinding into Node.
pub async fn guarded<T>(fut: impl Future<Output = Result<T, Error>>) -> napi::Result<T> {
    match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(r) => r.map_err(to_napi),
        Err(_) => Err(to_napi(Error::new(
            ErrorCode::Internal,
            "a bug in lean-events (a panic was caught); please report it",
        ))),
    }
}

/// The synchronous counterpart of [`guarded`].
pub fn guarded_sync<T>(f: impl FnOnce() -> Result<T, Error>) -> napi::Result<T> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(to_napi),
        Err(_) => Err(to_napi(Error::new(
            ErrorCode::Internal,
            "a bug in lean-events (a panic was caught); please report it",
        ))),
    }
}
