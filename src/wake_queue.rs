//! Items waiting for JavaScript, and the function that wakes it: the JavaScript thread is
//! woken once when the queue goes from empty to non-empty, then takes everything queued by
//! then in one call. Emit outcomes come back this way (one wake-up per group commit, not one
//! per emit), and so do the keys of subscriptions with something to take (one wake-up for a
//! burst over many subscriptions, no thread-safe function and libuv handle per subscription)
//! and warnings.

use std::sync::{Mutex, MutexGuard};

use napi::threadsafe_function::{
    ThreadsafeFunction, ThreadsafeFunctionCallMode, UnknownReturnValue,
};
use napi::Status;

/// A wake-up call into JavaScript; `WEAK` ones do not keep Node alive by themselves.
pub type WakeFn<const WEAK: bool> =
    ThreadsafeFunction<(), UnknownReturnValue, (), Status, false, WEAK>;

#[cfg(unix)]
use crate::event_loop::settling_here;

#[cfg(not(unix))]
fn settling_here() -> bool {
    false
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A queue of `T` for JavaScript and its wake-up call. The function is dropped by the
/// owner's `close()`: it refers to the JavaScript object, which refers back to this one.
pub struct WakeQueue<T, const WEAK: bool> {
    items: Mutex<Vec<T>>,
    /// Most items kept; past it new items are dropped (`None`: no bound).
    bound: Option<usize>,
    /// The event-loop transport hands items of this queue to JavaScript itself: no wake-up
    /// while it settles on this thread (see `event_loop::settling_here`).
    loop_aware: bool,
    pub wake: Mutex<Option<WakeFn<WEAK>>>,
}

impl<T, const WEAK: bool> WakeQueue<T, WEAK> {
    /// A queue that wakes JavaScript with `wake`, keeping at most `bound` items.
    pub fn new(wake: WakeFn<WEAK>, bound: Option<usize>) -> Self {
        WakeQueue {
            items: Mutex::new(Vec::new()),
            bound,
            loop_aware: false,
            wake: Mutex::new(Some(wake)),
        }
    }

    /// The same queue, not woken while the event-loop transport settles on this thread.
    pub fn loop_aware(mut self) -> Self {
        self.loop_aware = true;
        self
    }

    /// Queue an item, waking JavaScript if the queue was empty. Returns false when the queue
    /// was full and the item was dropped.
    pub fn push(&self, item: T) -> bool {
        let was_empty = {
            let mut items = lock(&self.items);
            if self.bound.is_some_and(|b| items.len() >= b) {
                return false;
            }
            items.push(item);
            items.len() == 1
        };
        if was_empty && !(self.loop_aware && settling_here()) {
            if let Some(wake) = lock(&self.wake).as_ref() {
                wake.call((), ThreadsafeFunctionCallMode::NonBlocking);
            }
        }
        true
    }

    /// Everything queued so far.
    pub fn take(&self) -> Vec<T> {
        std::mem::take(&mut *lock(&self.items))
    }
}

/// A wake-up call the core may hold (in a closure) beyond the life of the JavaScript side:
/// the thread-safe function itself stays with its owner, which empties the slot on `close()`
/// or when the environment is torn down — on the JavaScript thread, as Node requires — so
/// whatever drops the closure later drops only an empty slot.
#[derive(Clone)]
pub struct WakeSlot<const WEAK: bool>(std::sync::Arc<Mutex<Option<WakeFn<WEAK>>>>);

impl<const WEAK: bool> WakeSlot<WEAK> {
    /// A slot holding `wake`.
    pub fn new(wake: WakeFn<WEAK>) -> Self {
        WakeSlot(std::sync::Arc::new(Mutex::new(Some(wake))))
    }

    /// Call it, if it is still there (non-blocking).
    pub fn call(&self) {
        if let Some(wake) = lock(&self.0).as_ref() {
            wake.call((), ThreadsafeFunctionCallMode::NonBlocking);
        }
    }

    /// Drop the function (call on the JavaScript thread).
    pub fn empty(&self) {
        drop(lock(&self.0).take());
    }
}
