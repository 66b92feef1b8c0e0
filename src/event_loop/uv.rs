//! The few libuv functions the event-loop transport calls, from the libuv Node links in and
//! exports to addons (Node's docs, "C++ addons" → "Linking to libraries included with
//! Node.js"). Handles and requests are opaque blocks of `uv_handle_size` / `uv_req_size`
//! bytes, so nothing here depends on libuv's struct layouts beyond `uv_buf_t` (Unix).

#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, c_uint, c_void};

/// `uv_loop_t`, `uv_handle_t`, `uv_stream_t` and `uv_req_t`: only ever behind pointers.
pub type uv_loop_t = c_void;
pub type uv_handle_t = c_void;
pub type uv_req_t = c_void;

/// `uv_buf_t` as libuv lays it out on Unix (`base`, then `len`).
#[repr(C)]
pub struct uv_buf_t {
    pub base: *mut c_char,
    pub len: usize,
}

/// `uv_handle_type` values (libuv's `UV_HANDLE_TYPE_MAP` order).
pub const UV_ASYNC: c_int = 1;
pub const UV_CHECK: c_int = 2;
pub const UV_IDLE: c_int = 6;
pub const UV_TCP: c_int = 12;
pub const UV_TIMER: c_int = 13;
/// `uv_req_type` value of a write request.
pub const UV_WRITE: c_int = 3;
/// `UV_EOF` on every platform libuv supports.
pub const UV_EOF: isize = -4095;

pub type uv_alloc_cb = unsafe extern "C" fn(*mut uv_handle_t, usize, *mut uv_buf_t);
pub type uv_read_cb = unsafe extern "C" fn(*mut uv_handle_t, isize, *const uv_buf_t);
pub type uv_write_cb = unsafe extern "C" fn(*mut uv_req_t, c_int);
pub type uv_close_cb = unsafe extern "C" fn(*mut uv_handle_t);
pub type uv_timer_cb = unsafe extern "C" fn(*mut uv_handle_t);
pub type uv_async_cb = unsafe extern "C" fn(*mut uv_handle_t);
pub type uv_check_cb = unsafe extern "C" fn(*mut uv_handle_t);

extern "C" {
    pub fn uv_handle_size(kind: c_int) -> usize;
    pub fn uv_req_size(kind: c_int) -> usize;
    pub fn uv_handle_set_data(handle: *mut uv_handle_t, data: *mut c_void);
    pub fn uv_handle_get_data(handle: *const uv_handle_t) -> *mut c_void;
    pub fn uv_req_set_data(req: *mut uv_req_t, data: *mut c_void);
    pub fn uv_req_get_data(req: *const uv_req_t) -> *mut c_void;
    pub fn uv_unref(handle: *mut uv_handle_t);
    pub fn uv_close(handle: *mut uv_handle_t, cb: uv_close_cb);
    pub fn uv_tcp_init(lp: *mut uv_loop_t, handle: *mut uv_handle_t) -> c_int;
    pub fn uv_tcp_open(handle: *mut uv_handle_t, sock: c_int) -> c_int;
    pub fn uv_read_start(stream: *mut uv_handle_t, alloc: uv_alloc_cb, read: uv_read_cb) -> c_int;
    pub fn uv_read_stop(stream: *mut uv_handle_t) -> c_int;
    pub fn uv_try_write(stream: *mut uv_handle_t, bufs: *const uv_buf_t, n: c_uint) -> c_int;
    pub fn uv_write(
        req: *mut uv_req_t,
        stream: *mut uv_handle_t,
        bufs: *const uv_buf_t,
        n: c_uint,
        cb: uv_write_cb,
    ) -> c_int;
    pub fn uv_timer_init(lp: *mut uv_loop_t, handle: *mut uv_handle_t) -> c_int;
    pub fn uv_timer_start(
        handle: *mut uv_handle_t,
        cb: uv_timer_cb,
        timeout: u64,
        repeat: u64,
    ) -> c_int;
    pub fn uv_timer_stop(handle: *mut uv_handle_t) -> c_int;
    pub fn uv_async_init(lp: *mut uv_loop_t, handle: *mut uv_handle_t, cb: uv_async_cb) -> c_int;
    pub fn uv_async_send(handle: *mut uv_handle_t) -> c_int;
    pub fn uv_check_init(lp: *mut uv_loop_t, handle: *mut uv_handle_t) -> c_int;
    pub fn uv_check_start(handle: *mut uv_handle_t, cb: uv_check_cb) -> c_int;
    pub fn uv_check_stop(handle: *mut uv_handle_t) -> c_int;
    pub fn uv_idle_init(lp: *mut uv_loop_t, handle: *mut uv_handle_t) -> c_int;
    pub fn uv_idle_start(handle: *mut uv_handle_t, cb: uv_check_cb) -> c_int;
    pub fn uv_idle_stop(handle: *mut uv_handle_t) -> c_int;
    pub fn uv_strerror(err: c_int) -> *const c_char;
}

/// libuv's message for an error number.
pub fn error_text(err: c_int) -> String {
    // SAFETY: uv_strerror returns a static NUL-terminated string for any value
    unsafe { std::ffi::CStr::from_ptr(uv_strerror(err)) }
        .to_string_lossy()
        .into_owned()
}

/// Memory for one handle of `kind`, zeroed; freed with `free_block`.
pub fn handle_block(kind: c_int) -> *mut c_void {
    // SAFETY: uv_handle_size is a pure lookup
    alloc_block(unsafe { uv_handle_size(kind) })
}

/// Memory for one request of `kind`, zeroed; freed with `free_block`.
pub fn req_block(kind: c_int) -> *mut c_void {
    // SAFETY: uv_req_size is a pure lookup
    alloc_block(unsafe { uv_req_size(kind) })
}

fn alloc_block(size: usize) -> *mut c_void {
    let words = size.div_ceil(8).max(1);
    Box::into_raw(vec![0u64; words].into_boxed_slice()) as *mut c_void
}

/// Free a block from `handle_block(kind)` once its handle is closed.
///
/// # Safety
/// `block` came from `handle_block(kind)` and libuv is done with it.
pub unsafe fn free_handle(block: *mut c_void, kind: c_int) {
    free_block(block, uv_handle_size(kind));
}

/// Free a block from `req_block(kind)` once its request completed.
///
/// # Safety
/// `block` came from `req_block(kind)` and libuv is done with it.
pub unsafe fn free_req(block: *mut c_void, kind: c_int) {
    free_block(block, uv_req_size(kind));
}

unsafe fn free_block(block: *mut c_void, size: usize) {
    let words = size.div_ceil(8).max(1);
    drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
        block as *mut u64,
        words,
    )));
}
