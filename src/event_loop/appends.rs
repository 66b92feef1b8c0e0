//! The appends of a bus on the event-loop transport (see the module above): emits written from
//! the JavaScript call, replies decoded in the read callback, the emits' promises settled in
//! the check phase that follows.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::ffi::c_void;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::ptr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lean_events_core::store::redis::wire::{ReplyReader, Wire, WIRE_GROUP_EVENTS};
use lean_events_core::{Bus, Error, ErrorCode, PreparedAppend};
use napi::sys;

use super::{
    add_teardown_hook, adopt, lost, on_close, owner_of, uv, uv_check, uv_loop_of, write, JsCall,
    Settling, ThreadBound, READ_BUFFER,
};
use crate::wake_queue::lock;

/// First wait before reconnecting, doubled up to `MAX_BACKOFF` while attempts fail.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Where the connection is.
enum Link {
    /// Reading and writing on this TCP handle.
    Up(*mut c_void),
    /// Connected by Tokio, waiting for the emits sent the Tokio way to settle.
    Ready(std::net::TcpStream),
    /// Lost or not made yet; a reconnect is under way unless the bus closed.
    Down,
}

/// One `EVALSHA` written and not answered yet: its appends, one group each.
struct Call {
    /// Empty for a `SCRIPT LOAD` sent before a retry, and once the call timed out (its reply
    /// is then not looked at).
    appends: Vec<PreparedAppend>,
    deadline: Instant,
    /// Times it was sent again after `NOSCRIPT`.
    retries: u8,
    /// Timed out: its emits were failed with `TIMEOUT`, its reply is still to come.
    timed_out: bool,
    /// A `SCRIPT LOAD` before calls sent again after `NOSCRIPT`.
    load: bool,
}

/// An emit of this turn, or one held back while Redis owes replies to calls that timed out.
struct Held {
    append: PreparedAppend,
    since: Instant,
}

/// Times a script call is sent again after `NOSCRIPT` (the script cache was flushed) before its
/// emits fail.
const NOSCRIPT_RETRIES: u8 = 2;

struct State {
    link: Link,
    /// Emits of this turn, written by the next `flush` (held while the connection is stalled).
    outbox: Vec<Held>,
    /// Events in `outbox`.
    outbox_events: usize,
    inflight: VecDeque<Call>,
    reader: ReplyReader,
    backoff: Duration,
    /// `close()` was called: nothing new is taken; the handles close once nothing is in flight.
    closed: bool,
    /// The handles were closed (or are closing).
    shut: bool,
    /// Handles whose close callback has not run yet.
    closing: usize,
    timer_armed: bool,
    cleanup_hook: sys::napi_async_cleanup_hook_handle,
}

/// What a Tokio reconnect hands to the JavaScript thread, and the handle that wakes it (`None`
/// once that handle is closed).
struct Handoff {
    result: Option<lean_events_core::Result<std::net::TcpStream>>,
    wake: Option<usize>,
}

struct Inner {
    uv_loop: *mut c_void,
    bus: Bus,
    wire: Wire,
    state: RefCell<State>,
    read_buf: RefCell<Vec<u8>>,
    /// The JavaScript function that takes the settled outcomes (`bus._settle`).
    settle: JsCall,
    timer: *mut c_void,
    wake: *mut c_void,
    /// Runs `settle`, and the deadline check the timer asked for, in the loop's check phase,
    /// after this iteration's I/O callbacks.
    check: *mut c_void,
    check_armed: std::cell::Cell<bool>,
    /// Keeps the poll phase from blocking while a deadline check waits for the check phase.
    idle: *mut c_void,
    settle_due: std::cell::Cell<bool>,
    deadlines_due: std::cell::Cell<bool>,
    handoff: Arc<Mutex<Handoff>>,
    /// Emits sent the Tokio way: how many have not settled, and whether one timed out with
    /// no later one stored (Redis may still run it).
    thread_routed: Arc<Routed>,
}

/// A bus's appends over a connection driven by Node's event loop. It belongs to the
/// JavaScript thread that made it: every method does nothing on another thread.
pub struct EventLoopAppends {
    inner: ThreadBound<Inner>,
}

impl EventLoopAppends {
    /// Start appending over `stream` (connected and readied by `Wire::connect`) on the loop of
    /// `env`; `settle` is the JavaScript function that takes settled outcomes.
    pub fn start(
        env: sys::napi_env,
        bus: Bus,
        wire: Wire,
        stream: std::net::TcpStream,
        settle: sys::napi_value,
    ) -> napi::Result<EventLoopAppends> {
        let uv_loop = uv_loop_of(env)?;
        let settle = JsCall::new(env, settle, "lean-events:emit")?;
        let timer = uv::handle_block(uv::UV_TIMER);
        let wake = uv::handle_block(uv::UV_ASYNC);
        let check_handle = uv::handle_block(uv::UV_CHECK);
        let idle = uv::handle_block(uv::UV_IDLE);
        let inner = Rc::new(Inner {
            uv_loop,
            bus,
            wire,
            state: RefCell::new(State {
                link: Link::Down,
                outbox: Vec::new(),
                outbox_events: 0,
                inflight: VecDeque::new(),
                reader: ReplyReader::default(),
                backoff: FIRST_BACKOFF,
                closed: false,
                shut: false,
                closing: 0,
                timer_armed: false,
                cleanup_hook: ptr::null_mut(),
            }),
            read_buf: RefCell::new(vec![0; READ_BUFFER]),
            settle,
            timer,
            wake,
            check: check_handle,
            check_armed: std::cell::Cell::new(false),
            idle,
            settle_due: std::cell::Cell::new(false),
            deadlines_due: std::cell::Cell::new(false),
            handoff: Arc::new(Mutex::new(Handoff {
                result: None,
                wake: Some(wake as usize),
            })),
            thread_routed: Arc::new(Routed::default()),
        });
        // SAFETY: fresh handle blocks, initialised on the loop's thread; each holds one count
        // of `inner` (released by its close callback)
        unsafe {
            uv_check(uv::uv_timer_init(uv_loop, timer), "uv_timer_init")?;
            adopt(timer, &inner);
            uv_check(uv::uv_async_init(uv_loop, wake, on_wake), "uv_async_init")?;
            adopt(wake, &inner);
            uv_check(uv::uv_check_init(uv_loop, check_handle), "uv_check_init")?;
            adopt(check_handle, &inner);
            uv_check(uv::uv_idle_init(uv_loop, idle), "uv_idle_init")?;
            adopt(idle, &inner);
            let hook = add_teardown_hook(env, on_environment_teardown, &inner)?;
            inner.state.borrow_mut().cleanup_hook = hook;
        }
        inner.attach(stream);
        Ok(EventLoopAppends {
            inner: ThreadBound::new(inner),
        })
    }

    /// Take an admitted append: into this turn's write while the connection is up, else the
    /// Tokio way.
    pub fn submit(&self, mut prepared: PreparedAppend) {
        let Some(inner) = self.inner.get() else {
            prepared.settle(Err(Error::new(
                ErrorCode::Internal,
                "emit called on another thread than the bus's",
            )));
            return;
        };
        inner.switch_back_if_drained();
        let mut st = inner.state.borrow_mut();
        if st.closed {
            drop(st);
            prepared.settle(Err(Error::closed()));
            return;
        }
        if let Link::Up(_) = st.link {
            // the first emit onto an idle connection goes out at once, and so does every full
            // script call (`WIRE_GROUP_EVENTS`), so Redis runs it while JavaScript goes on;
            // the rest of a turn goes out in one write at its end (`flush`)
            let idle = st.inflight.is_empty() && st.outbox.is_empty();
            st.outbox_events += prepared.events().len();
            st.outbox.push(Held {
                append: prepared,
                since: Instant::now(),
            });
            let full = st.outbox_events >= WIRE_GROUP_EVENTS;
            drop(st);
            if idle || full {
                inner.flush();
            }
            return;
        }
        drop(st);
        route_via_tokio(&mut prepared, &inner.thread_routed);
        inner.bus.commit(prepared);
    }

    /// Write this turn's emits: script calls of at most `WIRE_GROUP_EVENTS` events each, all in
    /// one write.
    pub fn flush(&self) {
        if let Some(inner) = self.inner.get() {
            inner.flush();
        }
    }

    /// The bus closed: this turn's emits are still written (they were made before `close()`),
    /// everything in flight settles as Redis answers, then the connection closes.
    pub fn close(&self) {
        let Some(inner) = self.inner.get() else {
            return;
        };
        inner.flush();
        let outbox = {
            let mut st = inner.state.borrow_mut();
            st.closed = true;
            take_outbox(&mut st)
        };
        if !outbox.is_empty() {
            let _settling = Settling::enter();
            for held in outbox {
                held.append.settle(Err(Error::closed()));
            }
            inner.settle_soon();
        }
        inner.shut_when_idle();
    }
}

impl super::HandleOwner for Inner {
    fn closed_one(&self) {
        Inner::closed_one(self);
    }
}

impl Inner {
    /// Use `stream` for appends from now on.
    fn attach(self: &Rc<Self>, stream: std::net::TcpStream) {
        let tcp = uv::handle_block(uv::UV_TCP);
        let fd = stream.into_raw_fd();
        // SAFETY: a fresh handle on the loop's thread; the handle owns `fd` from here on
        let rc = unsafe {
            let mut rc = uv::uv_tcp_init(self.uv_loop, tcp);
            let mut opened = false;
            if rc == 0 {
                rc = uv::uv_tcp_open(tcp, fd);
                opened = rc == 0;
                uv::uv_handle_set_data(tcp, Rc::into_raw(self.clone()) as *mut c_void);
                uv::uv_unref(tcp);
                if rc == 0 {
                    rc = uv::uv_read_start(tcp, on_alloc, on_read);
                }
                if rc != 0 {
                    self.state.borrow_mut().closing += 1;
                    uv::uv_close(tcp, on_close::<Inner, { uv::UV_TCP }>);
                }
            } else {
                uv::free_handle(tcp, uv::UV_TCP);
            }
            if rc != 0 && !opened {
                drop(std::net::TcpStream::from_raw_fd(fd));
            }
            rc
        };
        let mut st = self.state.borrow_mut();
        if rc == 0 {
            st.link = Link::Up(tcp);
            st.reader = ReplyReader::default();
            st.backoff = FIRST_BACKOFF;
        } else {
            st.link = Link::Down;
            drop(st);
            self.bus.warn(
                "LOOP_CONNECTION_FAILED",
                "the event-loop connection to Redis could not be opened; emits take the Tokio \
                 connection meanwhile",
                Some(uv::error_text(rc)),
            );
            self.reconnect_later();
        }
    }

    /// Back on this connection once a reconnect is ready and the emits sent the Tokio way
    /// meanwhile have settled.
    fn switch_back_if_drained(self: &Rc<Self>) {
        if !self.thread_routed.drained() {
            return;
        }
        let mut st = self.state.borrow_mut();
        if st.closed || !matches!(st.link, Link::Ready(_)) {
            return;
        }
        let Link::Ready(stream) = std::mem::replace(&mut st.link, Link::Down) else {
            return;
        };
        drop(st);
        self.attach(stream);
    }

    fn flush(self: &Rc<Self>) {
        let mut st = self.state.borrow_mut();
        if st.outbox.is_empty() {
            return;
        }
        let Link::Up(tcp) = st.link else {
            let outbox = take_outbox(&mut st);
            drop(st);
            for held in outbox {
                let mut p = held.append;
                route_via_tokio(&mut p, &self.thread_routed);
                self.bus.commit(p);
            }
            return;
        };
        if stalled(&st) {
            // written once Redis has answered the calls that timed out (or failed after
            // `timeoutMs` by the timer), so they reach Redis after those, in call order
            if !st.timer_armed {
                let next = next_deadline(&st, self.wire.timeout());
                self.arm_timer(&mut st, next);
            }
            return;
        }
        let deadline = Instant::now() + self.wire.timeout();
        let mut out = Vec::with_capacity(st.outbox.len() * 256);
        let mut outbox = take_outbox(&mut st)
            .into_iter()
            .map(|h| h.append)
            .peekable();
        while outbox.peek().is_some() {
            let mut appends = Vec::new();
            let mut events = 0;
            while let Some(next) = outbox.peek() {
                let n = next.events().len();
                if !appends.is_empty() && events + n > WIRE_GROUP_EVENTS {
                    break;
                }
                events += n;
                appends.extend(outbox.next());
            }
            let groups: Vec<_> = appends.iter().map(|a| a.events()).collect();
            self.wire.encode_append(&groups, &mut out);
            st.inflight.push_back(Call {
                appends,
                deadline,
                retries: 0,
                timed_out: false,
                load: false,
            });
        }
        if !st.timer_armed {
            self.arm_timer(&mut st, Some(deadline));
        }
        drop(st);
        self.write_out(tcp, out);
    }

    /// Write `out` on `tcp`; a failure (now or once queued) drops that connection.
    fn write_out(self: &Rc<Self>, tcp: *mut c_void, out: Vec<u8>) {
        let weak = Rc::downgrade(self);
        let failed = move |cause| {
            if let Some(inner) = weak.upgrade() {
                if matches!(inner.state.borrow().link, Link::Up(t) if t == tcp) {
                    inner.lose(cause);
                }
            }
        };
        if let Err(cause) = write(tcp, out, failed) {
            self.lose(cause);
        }
    }

    /// The connection failed: what is in flight fails with `cause` (it may have been stored),
    /// what is not written yet goes the Tokio way, and a reconnect starts.
    fn lose(self: &Rc<Self>, cause: Error) {
        let (inflight, outbox) = {
            let mut st = self.state.borrow_mut();
            let Link::Up(tcp) = st.link else {
                return;
            };
            st.link = Link::Down;
            st.closing += 1;
            // SAFETY: an open handle of this loop, closed once
            unsafe {
                uv::uv_read_stop(tcp);
                uv::uv_close(tcp, on_close::<Inner, { uv::UV_TCP }>);
            }
            (std::mem::take(&mut st.inflight), take_outbox(&mut st))
        };
        {
            let _settling = Settling::enter();
            for call in inflight {
                for p in call.appends {
                    p.settle(Err(cause.clone()));
                }
            }
            for held in outbox {
                let mut p = held.append;
                route_via_tokio(&mut p, &self.thread_routed);
                self.bus.commit(p);
            }
        }
        self.bus.warn(
            "LOOP_CONNECTION_LOST",
            "the event-loop connection to Redis was lost; emits take the Tokio connection until \
             it is back",
            Some(cause.message.clone()),
        );
        // never from here: `lose` runs inside JavaScript calls (a failed write of `emit`) and
        // inside reads; the check phase of this iteration hands the outcomes over
        self.settle_soon();
        if !self.state.borrow().closed {
            self.reconnect_later();
        }
    }

    /// Connect again on Tokio after the back-off; the stream comes back through `on_wake`.
    fn reconnect_later(self: &Rc<Self>) {
        let delay = {
            let mut st = self.state.borrow_mut();
            let d = st.backoff;
            st.backoff = (st.backoff * 2).min(MAX_BACKOFF);
            d
        };
        let wire = self.wire.clone();
        let handoff = self.handoff.clone();
        napi::bindgen_prelude::spawn(async move {
            tokio::time::sleep(delay).await;
            let result = wire.connect().await;
            let mut h = lock(&handoff);
            if let Some(wake) = h.wake {
                h.result = Some(result);
                // SAFETY: the async handle stays open while `wake` is set (cleared under this
                // lock before it is closed)
                unsafe { uv::uv_async_send(wake as *mut c_void) };
            }
        });
    }

    /// A reply arrived for the oldest call in flight.
    fn on_reply(self: &Rc<Self>, reply: lean_events_core::store::redis::wire::WireReply) -> bool {
        let mut st = self.state.borrow_mut();
        let Some(call) = st.inflight.pop_front() else {
            drop(st);
            self.lose(Error::new(
                ErrorCode::Internal,
                "Redis answered a call that was not made; the connection is dropped",
            ));
            return false;
        };
        if st.inflight.is_empty() && st.timer_armed {
            st.timer_armed = false;
            // SAFETY: the timer handle is open until `shut`
            unsafe { uv::uv_timer_stop(self.timer) };
        }
        drop(st);
        if call.appends.is_empty() {
            return true;
        }
        let call = match reply {
            Err(text) if text.starts_with("NOSCRIPT") && call.retries < NOSCRIPT_RETRIES => {
                return self.send_again(call);
            }
            reply => (reply, call),
        };
        let (reply, call) = call;
        match self.wire.append_results(reply, call.appends.len()) {
            Ok(results) => {
                for (p, r) in call.appends.into_iter().zip(results) {
                    p.settle(r);
                }
            }
            Err(e) => {
                for p in call.appends {
                    p.settle(Err(e.clone()));
                }
            }
        }
        true
    }

    /// Redis lost the script (`SCRIPT FLUSH`, a failover to a replica that never ran it): load
    /// it and send the call again, at the end of the pipeline. Nothing of a call refused with
    /// `NOSCRIPT` was run, and the calls behind it meet the same missing script, so they are
    /// sent again in the order they were refused and emit order holds (unless another client
    /// loads the script between two of them).
    fn send_again(self: &Rc<Self>, mut call: Call) -> bool {
        let mut st = self.state.borrow_mut();
        let Link::Up(tcp) = st.link else {
            drop(st);
            for p in call.appends {
                p.settle(Err(Error::new(
                    ErrorCode::StoreUnavailable,
                    "Redis lost the append script and the connection is gone; nothing was stored",
                )));
            }
            return true;
        };
        let deadline = Instant::now() + self.wire.timeout();
        let mut out = Vec::new();
        self.wire.encode_script_load(&mut out);
        st.inflight.push_back(Call {
            appends: Vec::new(),
            deadline,
            retries: 0,
            timed_out: false,
            load: true,
        });
        let groups: Vec<_> = call.appends.iter().map(|a| a.events()).collect();
        self.wire.encode_append(&groups, &mut out);
        call.retries += 1;
        call.deadline = deadline;
        st.inflight.push_back(call);
        if !st.timer_armed {
            self.arm_timer(&mut st, Some(deadline));
        }
        drop(st);
        self.write_out(tcp, out);
        true
    }

    /// Start the timer for `at` (nothing to wait for: leave it stopped).
    fn arm_timer(&self, st: &mut State, at: Option<Instant>) {
        let Some(at) = at else {
            return;
        };
        st.timer_armed = true;
        let wait = at.saturating_duration_since(Instant::now()).as_millis() as u64 + 1;
        // SAFETY: the timer handle is open until `shut`, which happens on this thread
        unsafe { uv::uv_timer_start(self.timer, on_timer, wait, 0) };
    }

    /// The timer fired: the deadlines are checked in this iteration's check phase, after the
    /// poll phase has read what arrived (a JavaScript thread that was busy past a deadline
    /// finds the replies waiting in the socket, and they count), with the poll kept from
    /// blocking meanwhile.
    fn on_timer(self: &Rc<Self>) {
        self.state.borrow_mut().timer_armed = false;
        self.deadlines_due.set(true);
        self.arm_check();
        // SAFETY: the idle handle is open until `shut`
        unsafe { uv::uv_idle_start(self.idle, on_idle) };
    }

    /// Calls past their deadline fail with `TIMEOUT` and stay in flight without their emits:
    /// the connection is kept, so whatever Redis still runs of them it runs before anything
    /// sent later, as on the Tokio connection. While such calls are unanswered the connection
    /// is stalled: new emits are held, and fail with `TIMEOUT` unsent once they waited
    /// `timeoutMs`.
    fn expire(self: &Rc<Self>) {
        let now = Instant::now();
        let timeout = self.wire.timeout();
        let (late, unsent) = {
            let mut st = self.state.borrow_mut();
            if st.timer_armed {
                // SAFETY: the timer handle is open until `shut`
                unsafe { uv::uv_timer_stop(self.timer) };
                st.timer_armed = false;
            }
            let mut late = Vec::new();
            for call in st.inflight.iter_mut() {
                if call.timed_out || call.appends.is_empty() {
                    continue;
                }
                if call.deadline > now {
                    break;
                }
                call.timed_out = true;
                late.append(&mut call.appends);
            }
            let mut unsent = Vec::new();
            if stalled(&st) {
                let n = st
                    .outbox
                    .iter()
                    .take_while(|h| h.since + timeout <= now)
                    .count();
                unsent.extend(st.outbox.drain(..n).map(|h| h.append));
                st.outbox_events -= unsent.iter().map(|p| p.events().len()).sum::<usize>();
            }
            let next = next_deadline(&st, timeout);
            self.arm_timer(&mut st, next);
            (late, unsent)
        };
        if late.is_empty() && unsent.is_empty() {
            return;
        }
        let ms = timeout.as_millis();
        {
            let _settling = Settling::enter();
            let sent = Error::new(
                ErrorCode::Timeout,
                format!(
                    "Redis did not answer within {ms} ms (timeoutMs); the append may or may not \
                     have been stored"
                ),
            );
            for p in late {
                p.settle(Err(sent.clone()));
            }
            let held = Error::new(
                ErrorCode::Timeout,
                format!(
                    "not sent: Redis has not answered earlier appends for {ms} ms (timeoutMs); \
                     nothing of this one was stored"
                ),
            );
            for p in unsent {
                p.settle(Err(held.clone()));
            }
        }
        self.call_settle();
        self.shut_when_idle();
    }

    /// Call `bus._settle` in JavaScript (see `JsCall::call`): continuations of the settled
    /// emits run before this returns.
    fn call_settle(&self) {
        self.settle_due.set(false);
        self.settle.call();
    }

    /// Call `bus._settle` in this loop iteration's check phase, after the other I/O callbacks:
    /// the Pub/Sub message an emit caused usually arrives with its reply, and is handed to its
    /// subscribers first (see `live`).
    fn settle_soon(&self) {
        self.settle_due.set(true);
        self.arm_check();
        // the poll phase must not block before the check phase comes (when this runs in a
        // JavaScript call or a timer, the poll of this iteration is still ahead)
        // SAFETY: the idle handle is open until `shut`
        unsafe { uv::uv_idle_start(self.idle, on_idle) };
    }

    fn arm_check(&self) {
        if !self.check_armed.replace(true) {
            // SAFETY: the check handle is open until `shut`, which happens on this thread
            unsafe { uv::uv_check_start(self.check, on_check) };
        }
    }

    /// The check phase: deadlines the timer asked about (now that this iteration's replies
    /// were read), then the settled emits.
    fn on_check(self: &Rc<Self>) {
        if self.check_armed.replace(false) {
            // SAFETY: both handles are open until `shut`
            unsafe {
                uv::uv_check_stop(self.check);
                uv::uv_idle_stop(self.idle);
            }
        }
        if self.deadlines_due.replace(false) {
            self.expire();
        }
        if self.settle_due.get() {
            self.call_settle();
        }
        self.shut_when_idle();
    }

    /// Close the handles once the bus closed and nothing is in flight.
    fn shut_when_idle(self: &Rc<Self>) {
        let st = self.state.borrow();
        // outcomes still to hand over go first (the check phase calls this again after)
        if !st.closed
            || st.shut
            || self.settle_due.get()
            || st.inflight.iter().any(|c| !c.appends.is_empty())
        {
            return;
        }
        drop(st);
        self.shut();
    }

    /// Close every handle; the last close callback releases the JavaScript references and the
    /// environment's cleanup hook.
    fn shut(self: &Rc<Self>) {
        let mut st = self.state.borrow_mut();
        if st.shut {
            return;
        }
        st.shut = true;
        lock(&self.handoff).wake = None;
        if let Link::Up(tcp) = std::mem::replace(&mut st.link, Link::Down) {
            st.closing += 1;
            // SAFETY: an open handle, closed once
            unsafe {
                uv::uv_read_stop(tcp);
                uv::uv_close(tcp, on_close::<Inner, { uv::UV_TCP }>);
            }
        }
        st.closing += 4;
        // SAFETY: the timer, async, check and idle handles are open until here, closed once
        unsafe {
            uv::uv_close(self.timer, on_close::<Inner, { uv::UV_TIMER }>);
            uv::uv_close(self.wake, on_close::<Inner, { uv::UV_ASYNC }>);
            uv::uv_close(self.check, on_close::<Inner, { uv::UV_CHECK }>);
            uv::uv_close(self.idle, on_close::<Inner, { uv::UV_IDLE }>);
        }
    }

    /// A handle finished closing; after the last one, let go of JavaScript.
    fn closed_one(&self) {
        let mut st = self.state.borrow_mut();
        st.closing -= 1;
        if !(st.shut && st.closing == 0) {
            return;
        }
        let hook = std::mem::replace(&mut st.cleanup_hook, ptr::null_mut());
        drop(st);
        self.release_javascript();
        if !hook.is_null() {
            // SAFETY: the handle napi gave for this hook, removed once; its argument's count
            // of `Inner` is released after it (below)
            unsafe {
                sys::napi_remove_async_cleanup_hook(hook);
            }
            // the count the hook held
            // SAFETY: from `Rc::into_raw` in `start`, released once (here or in the hook)
            unsafe { drop(Rc::from_raw(self as *const Inner)) };
        }
    }

    fn release_javascript(&self) {
        self.settle.release();
    }
}

/// Emits sent the Tokio way while this connection is down.
#[derive(Default)]
struct Routed {
    pending: AtomicUsize,
    /// One timed out and no later one was stored: it may still be in the Tokio connection's
    /// pipeline, and an emit written here now could be stored before it.
    unsure: AtomicBool,
}

impl Routed {
    /// Nothing sent the Tokio way can still be stored.
    fn drained(&self) -> bool {
        self.pending.load(Ordering::Acquire) == 0 && !self.unsure.load(Ordering::Acquire)
    }
}

/// Count `p` among the emits sent the Tokio way until it settles.
fn route_via_tokio(p: &mut PreparedAppend, routed: &Arc<Routed>) {
    routed.pending.fetch_add(1, Ordering::AcqRel);
    let routed = routed.clone();
    p.on_settled(move |failed| {
        match failed {
            Some(ErrorCode::Timeout) => routed.unsure.store(true, Ordering::Release),
            None => routed.unsure.store(false, Ordering::Release),
            Some(_) => {}
        }
        routed.pending.fetch_sub(1, Ordering::AcqRel);
    });
}

/// Everything in the outbox, emptied.
fn take_outbox(st: &mut State) -> Vec<Held> {
    st.outbox_events = 0;
    std::mem::take(&mut st.outbox)
}

/// Nothing new is written while the connection owes replies to calls that timed out, or while
/// the script is being loaded again after `NOSCRIPT` (calls written before the load meet the
/// missing script too and are sent again after it; an emit written meanwhile would overtake
/// them).
fn stalled(st: &State) -> bool {
    st.inflight.front().is_some_and(|c| c.timed_out) || st.inflight.iter().any(|c| c.load)
}

/// When the timer must fire next: the deadline of the oldest call that has not timed out, or
/// while stalled that of the oldest held emit.
fn next_deadline(st: &State, timeout: Duration) -> Option<Instant> {
    let call = st
        .inflight
        .iter()
        .find(|c| !c.timed_out && !c.appends.is_empty())
        .map(|c| c.deadline);
    let held = if stalled(st) {
        st.outbox.first().map(|h| h.since + timeout)
    } else {
        None
    };
    match (call, held) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The `Inner` a handle's data points to (one count of it, kept by the handle).
///
/// # Safety
/// `handle` is one of this module's handles, not closed yet.
unsafe fn inner_of(handle: *const c_void) -> Rc<Inner> {
    owner_of(uv::uv_handle_get_data(handle))
}

unsafe extern "C" fn on_alloc(handle: *mut c_void, _suggested: usize, buf: *mut uv::uv_buf_t) {
    let inner = inner_of(handle);
    let mut b = inner.read_buf.borrow_mut();
    (*buf).base = b.as_mut_ptr().cast();
    (*buf).len = b.len();
}

unsafe extern "C" fn on_read(handle: *mut c_void, nread: isize, _buf: *const uv::uv_buf_t) {
    let inner = inner_of(handle);
    if nread < 0 {
        inner.lose(lost(nread as i32));
        return;
    }
    if nread == 0 {
        return;
    }
    {
        let bytes = inner.read_buf.borrow();
        inner
            .state
            .borrow_mut()
            .reader
            .feed(&bytes[..nread as usize]);
    }
    let mut answered = false;
    {
        let _settling = Settling::enter();
        loop {
            let next = inner.state.borrow_mut().reader.next_reply();
            match next {
                Ok(Some(reply)) => {
                    if !inner.on_reply(reply) {
                        return;
                    }
                    answered = true;
                }
                Ok(None) => break,
                Err(e) => {
                    drop(_settling);
                    inner.lose(e);
                    return;
                }
            }
        }
    }
    if answered {
        // emits held while the connection was stalled go out now, after the late replies
        inner.flush();
        inner.settle_soon();
    }
}

unsafe extern "C" fn on_timer(handle: *mut c_void) {
    inner_of(handle).on_timer();
}

unsafe extern "C" fn on_check(handle: *mut c_void) {
    inner_of(handle).on_check();
}

unsafe extern "C" fn on_idle(_handle: *mut c_void) {}

unsafe extern "C" fn on_wake(handle: *mut c_void) {
    let inner = inner_of(handle);
    let Some(result) = lock(&inner.handoff).result.take() else {
        return;
    };
    if inner.state.borrow().closed {
        return;
    }
    match result {
        Ok(stream) => {
            inner.state.borrow_mut().link = Link::Ready(stream);
            inner.switch_back_if_drained();
        }
        Err(_) => inner.reconnect_later(),
    }
}

/// The environment is torn down (process exit, `worker.terminate()`): settle what is left as
/// closed and close the handles now; the last close callback removes this hook.
unsafe extern "C" fn on_environment_teardown(
    _handle: sys::napi_async_cleanup_hook_handle,
    data: *mut c_void,
) {
    let inner: Rc<Inner> = owner_of(data);
    let (inflight, outbox) = {
        let mut st = inner.state.borrow_mut();
        st.closed = true;
        (std::mem::take(&mut st.inflight), take_outbox(&mut st))
    };
    let _settling = Settling::enter();
    let held = outbox.into_iter().map(|h| h.append);
    for p in inflight.into_iter().flat_map(|c| c.appends).chain(held) {
        p.settle(Err(Error::closed()));
    }
    inner.shut();
}
