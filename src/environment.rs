//! What a Node environment (the main thread, or one worker thread) opened is closed when that
//! environment is torn down — `worker.terminate()` included — on its own JavaScript thread,
//! before its thread-safe functions go away: background work then finds every wake-up call
//! gone instead of calling into a dead environment.

use std::cell::RefCell;
use std::sync::Weak;

use napi::Env;

/// Something to close with its environment.
pub trait CloseWithEnvironment: Send + Sync {
    /// Close and drop every thread-safe function (called on the environment's thread).
    fn close_with_environment(&self);
}

thread_local! {
    /// This thread's environment's open items; `None` until its cleanup hook is installed.
    static OPEN: RefCell<Option<Vec<Weak<dyn CloseWithEnvironment>>>> = const { RefCell::new(None) };
}

/// Close `item` when `env` is torn down (if it still lives then).
pub fn close_with(env: &Env, item: Weak<dyn CloseWithEnvironment>) -> napi::Result<()> {
    let install = OPEN.with(|open| open.borrow().is_none());
    if install {
        env.add_env_cleanup_hook((), |()| {
            let items = OPEN
                .with(|open| open.borrow_mut().take())
                .unwrap_or_default();
            for item in items.iter().filter_map(Weak::upgrade) {
                item.close_with_environment();
            }
        })?;
    }
    OPEN.with(|open| {
        let mut open = open.borrow_mut();
        let items = open.get_or_insert_with(Vec::new);
        items.retain(|i| i.strong_count() > 0);
        items.push(item);
    });
    Ok(())
}
