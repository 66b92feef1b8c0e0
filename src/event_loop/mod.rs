//! The event-loop transport (Node on Unix): a bus's appends and its live connection go over
//! Redis connections that Node's own event loop drives (`napi_get_uv_event_loop` and libuv's
//! TCP handle), instead of crossing to a Tokio worker and back. An emit is written from the
//! JavaScript call (the first onto an idle connection at once, the rest of a turn by `flush`),
//! its reply is decoded in the read callback, and in the check phase of the same iteration the
//! emits' promises are settled inside a callback scope, so their `await` continuations run at
//! once and what they emit joins the next write.
//!
//! Only the socket lives here; the core encodes the script calls and decodes the replies
//! (`lean_events_core::store::redis::wire`). While this connection is down (lost, or Redis
//! restarting) emits take the Tokio path (`Bus::commit`), and they come back here only once
//! everything sent that way has settled, so emits keep their call order across the switch.

mod appends;
mod js;
pub mod live;
pub mod uv;

pub use appends::EventLoopAppends;
pub use js::JsCall;

use std::cell::Cell;
use std::ffi::{c_int, c_void};
use std::ptr;
use std::rc::Rc;

use lean_events_core::{Error, ErrorCode};
use napi::sys;

thread_local! {
    /// Set while a callback of this module settles emits: the settle queue then does not wake
    /// JavaScript through its thread-safe function, because the callback calls it directly.
    static SETTLING: Cell<bool> = const { Cell::new(false) };
}

/// True while this thread is inside a callback that hands outcomes to JavaScript itself.
pub fn settling_here() -> bool {
    SETTLING.with(Cell::get)
}

/// `SETTLING` for the life of the guard (then as it was before).
pub(crate) struct Settling(bool);

impl Settling {
    pub(crate) fn enter() -> Settling {
        Settling(SETTLING.with(|s| s.replace(true)))
    }
}

impl Drop for Settling {
    fn drop(&mut self) {
        SETTLING.with(|s| s.set(self.0));
    }
}

/// Bytes read from the socket at most per read callback.
pub(crate) const READ_BUFFER: usize = 64 * 1024;

#[cfg(target_os = "linux")]
const UV_EAGAIN: i32 = -11;
#[cfg(not(target_os = "linux"))]
const UV_EAGAIN: i32 = -35;
#[cfg(target_os = "linux")]
const UV_ECANCELED: i32 = -125;
#[cfg(not(target_os = "linux"))]
const UV_ECANCELED: i32 = -89;

/// An `Rc` that belongs to the JavaScript thread that made it: `get` gives it only there, and
/// dropped elsewhere it leaks its count rather than touch a non-atomic count from another
/// thread.
pub(crate) struct ThreadBound<T> {
    rc: std::mem::ManuallyDrop<Rc<T>>,
    thread: std::thread::ThreadId,
}

// SAFETY: the `Rc` and everything behind it are only touched on `thread` (`get` checks it,
// `Drop` elsewhere leaks). The napi classes that own these must be `Send` because napi-rs
// builds them on a Tokio worker before handing them to JavaScript.
unsafe impl<T> Send for ThreadBound<T> {}

impl<T> ThreadBound<T> {
    /// `rc`, bound to the calling thread.
    pub(crate) fn new(rc: Rc<T>) -> Self {
        ThreadBound {
            rc: std::mem::ManuallyDrop::new(rc),
            thread: std::thread::current().id(),
        }
    }

    /// The `Rc`, on its own thread only.
    pub(crate) fn get(&self) -> Option<&Rc<T>> {
        (std::thread::current().id() == self.thread).then_some(&*self.rc)
    }
}

impl<T> Drop for ThreadBound<T> {
    fn drop(&mut self) {
        if std::thread::current().id() == self.thread {
            // SAFETY: dropped once, here; `rc` is not used after
            unsafe { std::mem::ManuallyDrop::drop(&mut self.rc) }
        }
        // elsewhere the count is left as it is (leaked), never touched from this thread
    }
}

/// What owns libuv handles whose data is one `Rc` count of it.
pub(crate) trait HandleOwner {
    /// One of its handles finished closing.
    fn closed_one(&self);
}

/// The owner `data` (a handle's data, or a cleanup hook's argument) is one count of, as one
/// more count: the handle or hook keeps its own.
///
/// # Safety
/// `data` came from `Rc::into_raw` of an `Rc<T>` whose count it still holds.
pub(crate) unsafe fn owner_of<T>(data: *const c_void) -> Rc<T> {
    Rc::increment_strong_count(data as *const T);
    Rc::from_raw(data as *const T)
}

/// Give `handle` (initialised) one count of `owner` as its data, and let it not keep the loop
/// alive (the bus's own keep-alive does that).
///
/// # Safety
/// `handle` is an initialised handle of this thread's loop; the count goes back in `on_close`.
pub(crate) unsafe fn adopt<T>(handle: *mut c_void, owner: &Rc<T>) {
    uv::uv_handle_set_data(handle, Rc::into_raw(owner.clone()) as *mut c_void);
    uv::uv_unref(handle);
}

/// Register `hook` as `env`'s async cleanup hook, with one count of `owner` as its argument.
///
/// # Safety
/// On `env`'s thread; the hook gives the count back once it removed itself.
pub(crate) unsafe fn add_teardown_hook<T>(
    env: sys::napi_env,
    hook: unsafe extern "C" fn(sys::napi_async_cleanup_hook_handle, *mut c_void),
    owner: &Rc<T>,
) -> napi::Result<sys::napi_async_cleanup_hook_handle> {
    let mut handle = ptr::null_mut();
    check(
        sys::napi_add_async_cleanup_hook(
            env,
            Some(hook),
            Rc::into_raw(owner.clone()) as *mut c_void,
            &mut handle,
        ),
        "napi_add_async_cleanup_hook",
    )?;
    Ok(handle)
}

/// Close callback of a handle of kind `KIND` whose data is one count of `T`: frees the handle
/// block, gives the count back and tells the owner.
pub(crate) unsafe extern "C" fn on_close<T: HandleOwner, const KIND: c_int>(handle: *mut c_void) {
    let owner = Rc::from_raw(uv::uv_handle_get_data(handle) as *const T);
    uv::free_handle(handle, KIND);
    owner.closed_one();
}

/// The libuv loop of `env`'s thread.
pub(crate) fn uv_loop_of(env: sys::napi_env) -> napi::Result<*mut c_void> {
    let mut uv_loop: *mut sys::uv_loop_s = ptr::null_mut();
    // SAFETY: env is the calling thread's environment
    check(
        unsafe { sys::napi_get_uv_event_loop(env, &mut uv_loop) },
        "napi_get_uv_event_loop",
    )?;
    Ok(uv_loop as *mut c_void)
}

/// A napi status as a result.
pub(crate) fn check(status: sys::napi_status, what: &str) -> napi::Result<()> {
    if status == sys::Status::napi_ok {
        Ok(())
    } else {
        Err(napi::Error::from_reason(format!(
            "{what} failed (napi status {status})"
        )))
    }
}

/// A libuv return code as a result.
pub(crate) fn uv_check(rc: i32, what: &str) -> napi::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(napi::Error::from_reason(format!(
            "{what} failed: {}",
            uv::error_text(rc)
        )))
    }
}

/// Write `out` to the stream: at once as far as the socket takes it, the rest queued (libuv
/// keeps queued writes in order).
///
/// A write that fails later calls `failed` with the error (not for writes cancelled by closing
/// the stream).
pub(crate) fn write(
    tcp: *mut c_void,
    mut out: Vec<u8>,
    failed: impl FnOnce(Error) + 'static,
) -> Result<(), Error> {
    let buf = uv::uv_buf_t {
        base: out.as_mut_ptr().cast(),
        len: out.len(),
    };
    // SAFETY: an open stream; `buf` points into `out`, alive for the call
    let written = unsafe { uv::uv_try_write(tcp, &buf, 1) };
    let done = match written {
        n if n >= 0 => n as usize,
        UV_EAGAIN => 0,
        err => return Err(lost(err)),
    };
    if done == out.len() {
        return Ok(());
    }
    out.drain(..done);
    let req = uv::req_block(uv::UV_WRITE);
    let pending = Box::new(PendingWrite {
        req,
        data: out,
        failed: Box::new(failed),
    });
    let buf = uv::uv_buf_t {
        base: pending.data.as_ptr() as *mut _,
        len: pending.data.len(),
    };
    let raw = Box::into_raw(pending);
    // SAFETY: `raw` owns the request block and the bytes until `on_write` frees them
    let rc = unsafe {
        uv::uv_req_set_data(req, raw as *mut c_void);
        uv::uv_write(req, tcp, &buf, 1, on_write)
    };
    if rc != 0 {
        // SAFETY: libuv did not take the request
        drop(unsafe { drop_pending_write(raw) });
        return Err(lost(rc));
    }
    Ok(())
}

/// Bytes the socket did not take at once, with their write request.
struct PendingWrite {
    req: *mut c_void,
    data: Vec<u8>,
    failed: Box<dyn FnOnce(Error)>,
}

unsafe fn drop_pending_write(raw: *mut PendingWrite) -> Box<dyn FnOnce(Error)> {
    let pending = Box::from_raw(raw);
    uv::free_req(pending.req, uv::UV_WRITE);
    pending.failed
}

unsafe extern "C" fn on_write(req: *mut c_void, status: i32) {
    let failed = drop_pending_write(uv::uv_req_get_data(req) as *mut PendingWrite);
    if status < 0 && status != UV_ECANCELED {
        failed(lost(status));
    }
}

pub(crate) fn lost(rc: i32) -> Error {
    let why = if rc as isize == uv::UV_EOF {
        "Redis closed the connection".to_owned()
    } else {
        uv::error_text(rc)
    };
    Error::new(
        ErrorCode::StoreUnavailable,
        format!(
            "the connection to Redis was lost ({why}); the append may or may not have been stored"
        ),
    )
}
