//! Core errors to JavaScript errors, and panics kept out of Node.
//!
//! A core error becomes an `Error` whose message is the core's message and whose `cause` is
//! an `Error` carrying the whole error as JSON: `{code, message, lastId?, firstId?, detail?}`.
//! The JavaScript layer (`lib/errors.js`) turns that into a `LeanEventsError` with `code`,
//! `lastId`, `firstId` and `detail` as fields. The same JSON is what `takeSettled()` gives for
//! a failed emit.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use lean_events_core::{Error, ErrorCode};

/// The whole error as JSON: `{"code","message","lastId"?,"firstId"?,"detail"?}` (`detail` as
/// the JSON it is — kept as text, so what JavaScript wrote comes back as it was, lone
/// surrogates included — or as a string when it is not JSON).
pub fn error_json(e: &Error) -> String {
    let mut v = serde_json::json!({ "code": e.code.as_str(), "message": e.message });
    if let Some(id) = &e.last_id {
        v["lastId"] = id.clone().into();
    }
    if let Some(id) = &e.first_id {
        v["firstId"] = id.clone().into();
    }
    let mut out = v.to_string();
    if let Some(d) = &e.detail {
        let detail = match serde_json::value::RawValue::from_string(d.clone()) {
            Ok(raw) => raw.get().to_owned(),
            Err(_) => serde_json::Value::from(d.as_str()).to_string(),
        };
        out.pop();
        out.push_str(",\"detail\":");
        out.push_str(&detail);
        out.push('}');
    }
    out
}

/// A core error as a JavaScript `Error` (see the module's doc).
pub fn to_napi(e: Error) -> napi::Error {
    let mut err = napi::Error::new(napi::Status::GenericFailure, e.message.clone());
    err.cause = Some(Box::new(napi::Error::new(
        napi::Status::GenericFailure,
        error_json(&e),
    )));
    err
}

fn panicked() -> Error {
    Error::new(
        ErrorCode::Internal,
        "a bug in lean-events (a panic was caught); please report it",
    )
}

/// Run a future, turning a panic into an `INTERNAL` error instead of unwinding into Node.
pub async fn guarded<T>(fut: impl Future<Output = Result<T, Error>>) -> napi::Result<T> {
    match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(r) => r.map_err(to_napi),
        Err(_) => Err(to_napi(panicked())),
    }
}

/// The synchronous counterpart of [`guarded`].
pub fn guarded_sync<T>(f: impl FnOnce() -> Result<T, Error>) -> napi::Result<T> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(to_napi),
        Err(_) => Err(to_napi(panicked())),
    }
}

/// Run `fut` as a promise, panics caught. `fut` must own everything it uses: the JavaScript
/// object that started it may be collected, or its environment torn down, before it ends (an
/// `async fn` on `&self` would keep a reference to that object's native half instead).
pub fn spawn<T, F>(
    env: napi::Env,
    fut: F,
) -> napi::Result<napi::bindgen_prelude::PromiseRaw<'static, T>>
where
    T: 'static + Send + napi::bindgen_prelude::ToNapiValue,
    F: 'static + Send + Future<Output = Result<T, Error>>,
{
    use napi::bindgen_prelude::JsValue;
    let promise = env.spawn_future(guarded(fut))?;
    Ok(napi::bindgen_prelude::PromiseRaw::new(
        env.raw(),
        promise.raw(),
    ))
}
