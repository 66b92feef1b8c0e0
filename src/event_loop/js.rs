//! A JavaScript function called from a libuv callback the way Node calls its own: inside a
//! handle scope and a callback scope of an async resource (`napi_make_callback`), so the
//! microtasks and `process.nextTick` callbacks it queues run as it returns, and an exception
//! it throws becomes an uncaught exception of the process.

use std::cell::Cell;
use std::ptr;

use napi::sys;

use super::check;

/// A function and the async resource it is called in, released with `release` (on the
/// JavaScript thread, while the environment lives).
pub struct JsCall {
    env: sys::napi_env,
    func: Cell<sys::napi_ref>,
    resource: Cell<sys::napi_ref>,
    context: Cell<sys::napi_async_context>,
}

impl JsCall {
    /// Keep `func` to call later, in an async resource named `name` made now (so the async
    /// context of the caller is the one the calls run in).
    pub fn new(env: sys::napi_env, func: sys::napi_value, name: &str) -> napi::Result<JsCall> {
        let call = JsCall {
            env,
            func: Cell::new(ptr::null_mut()),
            resource: Cell::new(ptr::null_mut()),
            context: Cell::new(ptr::null_mut()),
        };
        // SAFETY: napi calls on the environment's own thread; what is made is kept in `call`
        // and released by `release` (or its drop)
        unsafe {
            let mut r = ptr::null_mut();
            check(
                sys::napi_create_reference(env, func, 1, &mut r),
                "napi_create_reference",
            )?;
            call.func.set(r);
            let mut resource = ptr::null_mut();
            check(
                sys::napi_create_object(env, &mut resource),
                "napi_create_object",
            )?;
            let mut r = ptr::null_mut();
            check(
                sys::napi_create_reference(env, resource, 1, &mut r),
                "napi_create_reference",
            )?;
            call.resource.set(r);
            let mut label = ptr::null_mut();
            check(
                sys::napi_create_string_utf8(
                    env,
                    name.as_ptr().cast(),
                    name.len() as isize,
                    &mut label,
                ),
                "napi_create_string_utf8",
            )?;
            let mut context = ptr::null_mut();
            check(
                sys::napi_async_init(env, resource, label, &mut context),
                "napi_async_init",
            )?;
            call.context.set(context);
        }
        Ok(call)
    }

    /// Call the function with no arguments. Must run on the JavaScript thread with no
    /// JavaScript on the stack (a libuv callback); does nothing once released.
    pub fn call(&self) {
        debug_assert!(
            !super::settling_here(),
            "JavaScript called while outcomes are queued without a wake-up"
        );
        let env = self.env;
        let (func, resource) = (self.func.get(), self.resource.get());
        if func.is_null() || resource.is_null() {
            return;
        }
        // SAFETY: on the environment's thread, with a handle scope around the values made here
        unsafe {
            let mut scope = ptr::null_mut();
            if sys::napi_open_handle_scope(env, &mut scope) != sys::Status::napi_ok {
                return;
            }
            let mut f = ptr::null_mut();
            let mut recv = ptr::null_mut();
            sys::napi_get_reference_value(env, func, &mut f);
            sys::napi_get_reference_value(env, resource, &mut recv);
            if !f.is_null() && !recv.is_null() {
                let mut result = ptr::null_mut();
                let status = sys::napi_make_callback(
                    env,
                    self.context.get(),
                    recv,
                    f,
                    0,
                    ptr::null(),
                    &mut result,
                );
                if status == sys::Status::napi_pending_exception {
                    let mut err = ptr::null_mut();
                    sys::napi_get_and_clear_last_exception(env, &mut err);
                    sys::napi_fatal_exception(env, err);
                }
            }
            sys::napi_close_handle_scope(env, scope);
        }
    }

    /// Let go of the function and the resource (JavaScript thread, environment alive; once
    /// released, dropping does nothing).
    pub fn release(&self) {
        let env = self.env;
        // SAFETY: references and context of this environment, each released once
        unsafe {
            for r in [
                self.func.replace(ptr::null_mut()),
                self.resource.replace(ptr::null_mut()),
            ] {
                if !r.is_null() {
                    sys::napi_delete_reference(env, r);
                }
            }
            let context = self.context.replace(ptr::null_mut());
            if !context.is_null() {
                sys::napi_async_destroy(env, context);
            }
        }
    }
}

impl Drop for JsCall {
    /// Released by its owner before the environment goes; this covers an owner that failed to
    /// start (dropped on the JavaScript thread, in the call that made it).
    fn drop(&mut self) {
        self.release();
    }
}
