//! The live (Pub/Sub) connection on Node's event loop: the core's live task still decides what
//! to subscribe (`live::pubsub`), but the socket is read on the JavaScript thread, each message
//! goes to the hub there, and the subscriptions it woke are handed to JavaScript at the end of
//! the same read callback (`bus._wakeReady` in a callback scope), with no thread in between.
//!
//! The live task talks to this side through requests (open a connection, send SUBSCRIBE or
//! UNSUBSCRIBE and wait for Redis to confirm every channel, close) woken by a libuv async
//! handle. When JavaScript is busy the socket is not read and messages wait in Redis' output
//! buffer for this client; if Redis closes the connection for going past its limit, this is a
//! lost connection like any other: the live task reconnects and every stream subscription
//! re-reads from its last delivered id.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::ffi::c_void;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::ptr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use lean_events_core::store::redis::wire::{ReplyReader, Wire, WireReply};
use lean_events_core::store::{Channel, PubSubConnection, PubSubSource, Push, PushHandler};
use lean_events_core::{Error, ErrorCode, Result};
use napi::sys;
use redis::Value;
use tokio::sync::{oneshot, Notify};

use super::{
    add_teardown_hook, adopt, lost, on_close, owner_of, uv, write, JsCall, Settling, ThreadBound,
    READ_BUFFER,
};
use crate::wake_queue::lock;

/// Channels named in one SUBSCRIBE / UNSUBSCRIBE.
const CHUNK: usize = 500;

/// What the live task asks of the JavaScript thread.
enum Request {
    Open {
        id: u64,
        stream: std::net::TcpStream,
        on_push: PushHandler,
        reply: oneshot::Sender<Result<()>>,
    },
    Send {
        id: u64,
        bytes: Vec<u8>,
        /// Replies that confirm it: one per channel.
        confirmations: usize,
        reply: oneshot::Sender<Result<()>>,
    },
    Close {
        id: u64,
    },
}

/// Where the JavaScript side is, for the live task.
enum Side {
    /// `startEventLoop` has not run yet.
    Waiting,
    /// Requests go in `queue`, then this async handle is sent.
    Attached(usize),
    /// Closed: requests fail with `BUS_CLOSED`.
    Shut,
}

struct Requests {
    side: Side,
    queue: VecDeque<Request>,
    next_id: u64,
}

/// The core's `PubSubSource` for a bus on the event-loop transport (Send + Sync; its
/// connections live on the JavaScript thread once `EventLoopLive::start` attached it).
pub struct LoopPubSub {
    wire: Wire,
    requests: Arc<Mutex<Requests>>,
    attached: Arc<Notify>,
}

impl LoopPubSub {
    /// A source whose connections wait for `EventLoopLive::start`.
    pub fn new(wire: Wire) -> LoopPubSub {
        LoopPubSub {
            wire,
            requests: Arc::new(Mutex::new(Requests {
                side: Side::Waiting,
                queue: VecDeque::new(),
                next_id: 0,
            })),
            attached: Arc::new(Notify::new()),
        }
    }
}

/// Queue `request` for the JavaScript thread and wake it; false when that side is shut.
fn ask(requests: &Mutex<Requests>, request: Request) -> bool {
    let mut r = lock(requests);
    let Side::Attached(wake) = r.side else {
        return false;
    };
    r.queue.push_back(request);
    // SAFETY: the async handle stays open while the side is `Attached` (it becomes `Shut`
    // under this lock before the handle is closed)
    unsafe { uv::uv_async_send(wake as *mut c_void) };
    true
}

async fn answer(rx: oneshot::Receiver<Result<()>>) -> Result<()> {
    rx.await.unwrap_or_else(|_| Err(Error::closed()))
}

#[async_trait]
impl PubSubSource for LoopPubSub {
    async fn connect(&self, on_push: PushHandler) -> Result<Box<dyn PubSubConnection>> {
        loop {
            let attached = self.attached.notified();
            match lock(&self.requests).side {
                Side::Waiting => {}
                Side::Attached(_) => break,
                Side::Shut => return Err(Error::closed()),
            }
            // the live task bounds this wait by `timeoutMs`
            attached.await;
        }
        let stream = self.wire.connect().await?;
        let id = {
            let mut r = lock(&self.requests);
            r.next_id += 1;
            r.next_id
        };
        // made first, so a wait given up (the live task bounds it by `timeoutMs`, and a busy
        // JavaScript thread opens the connection later) closes what is opened after all
        let conn = LoopConnection {
            id,
            requests: self.requests.clone(),
        };
        let (reply, rx) = oneshot::channel();
        let request = Request::Open {
            id,
            stream,
            on_push,
            reply,
        };
        if !ask(&self.requests, request) {
            return Err(Error::closed());
        }
        answer(rx).await?;
        Ok(Box::new(conn))
    }
}

/// One live connection, seen from the live task.
struct LoopConnection {
    id: u64,
    requests: Arc<Mutex<Requests>>,
}

impl LoopConnection {
    async fn send(&self, command: &str, channels: &[Channel]) -> Result<()> {
        for chunk in channels.chunks(CHUNK) {
            let names: Vec<&str> = chunk.iter().map(|c| c.name.as_str()).collect();
            let mut bytes = Vec::new();
            Wire::encode_subscription(command, &names, &mut bytes);
            let (reply, rx) = oneshot::channel();
            let request = Request::Send {
                id: self.id,
                bytes,
                confirmations: names.len(),
                reply,
            };
            if !ask(&self.requests, request) {
                return Err(Error::closed());
            }
            answer(rx).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl PubSubConnection for LoopConnection {
    async fn subscribe(&mut self, channels: &[Channel]) -> Result<()> {
        self.send("SUBSCRIBE", channels).await
    }

    async fn unsubscribe(&mut self, channels: &[Channel]) -> Result<()> {
        self.send("UNSUBSCRIBE", channels).await
    }
}

impl Drop for LoopConnection {
    fn drop(&mut self) {
        ask(&self.requests, Request::Close { id: self.id });
    }
}

/// One connection on the JavaScript thread.
struct Conn {
    tcp: *mut c_void,
    on_push: PushHandler,
    reader: ReplyReader,
    /// Commands sent and the confirmations each still waits for, oldest first.
    pending: VecDeque<(usize, oneshot::Sender<Result<()>>)>,
}

struct Inner {
    uv_loop: *mut c_void,
    requests: Arc<Mutex<Requests>>,
    wake: *mut c_void,
    conns: RefCell<HashMap<u64, Conn>>,
    read_buf: RefCell<Vec<u8>>,
    /// `bus._wakeReady`: hands the woken subscriptions to JavaScript.
    ready: JsCall,
    /// Runs `ready` in the loop's check phase, once per loop iteration with deliveries.
    check: *mut c_void,
    check_armed: std::cell::Cell<bool>,
    /// Handles not closed yet, the cleanup hook, and whether `shut` ran.
    closing: std::cell::Cell<usize>,
    shut: std::cell::Cell<bool>,
    hook: std::cell::Cell<sys::napi_async_cleanup_hook_handle>,
}

/// The JavaScript side of a `LoopPubSub`; belongs to the thread that started it.
pub struct EventLoopLive {
    inner: ThreadBound<Inner>,
}

/// The per-handle data of a connection's TCP handle.
struct ConnData {
    inner: *const Inner,
    id: u64,
}

impl EventLoopLive {
    /// Attach `source` to the loop of `env`; `ready` is `bus._wakeReady`.
    pub fn start(
        env: sys::napi_env,
        source: &LoopPubSub,
        ready: sys::napi_value,
    ) -> napi::Result<EventLoopLive> {
        let uv_loop = super::uv_loop_of(env)?;
        let ready = JsCall::new(env, ready, "lean-events:live")?;
        let wake = uv::handle_block(uv::UV_ASYNC);
        let check = uv::handle_block(uv::UV_CHECK);
        let inner = Rc::new(Inner {
            uv_loop,
            requests: source.requests.clone(),
            wake,
            check,
            check_armed: std::cell::Cell::new(false),
            conns: RefCell::new(HashMap::new()),
            read_buf: RefCell::new(vec![0; READ_BUFFER]),
            ready,
            closing: std::cell::Cell::new(0),
            shut: std::cell::Cell::new(false),
            hook: std::cell::Cell::new(ptr::null_mut()),
        });
        // SAFETY: a fresh handle initialised on the loop's thread; it and the cleanup hook each
        // hold one count of `inner`, released when they are done
        unsafe {
            super::uv_check(
                uv::uv_async_init(uv_loop, wake, on_requests),
                "uv_async_init",
            )?;
            adopt(wake, &inner);
            super::uv_check(uv::uv_check_init(uv_loop, check), "uv_check_init")?;
            adopt(check, &inner);
            let hook = add_teardown_hook(env, on_environment_teardown, &inner)?;
            inner.hook.set(hook);
        }
        lock(&inner.requests).side = Side::Attached(wake as usize);
        source.attached.notify_waiters();
        Ok(EventLoopLive {
            inner: ThreadBound::new(inner),
        })
    }

    /// Close every connection and stop taking requests (the bus closed).
    pub fn close(&self) {
        if let Some(inner) = self.inner.get() {
            inner.shut();
        }
    }
}

impl super::HandleOwner for Inner {
    fn closed_one(&self) {
        Inner::closed_one(self);
    }
}

impl Inner {
    fn open(
        self: &Rc<Self>,
        id: u64,
        stream: std::net::TcpStream,
        on_push: PushHandler,
    ) -> Result<()> {
        let tcp = uv::handle_block(uv::UV_TCP);
        let fd = stream.into_raw_fd();
        let data = Box::into_raw(Box::new(ConnData {
            inner: Rc::into_raw(self.clone()),
            id,
        }));
        // SAFETY: a fresh handle on the loop's thread; from `uv_tcp_open` on it owns `fd`
        let rc = unsafe {
            let mut rc = uv::uv_tcp_init(self.uv_loop, tcp);
            if rc != 0 {
                uv::free_handle(tcp, uv::UV_TCP);
                drop(Box::from_raw(data));
                drop(Rc::from_raw(Rc::as_ptr(self)));
                drop(std::net::TcpStream::from_raw_fd(fd));
                return Err(open_failed(rc));
            }
            uv::uv_handle_set_data(tcp, data as *mut c_void);
            uv::uv_unref(tcp);
            rc = uv::uv_tcp_open(tcp, fd);
            if rc != 0 {
                drop(std::net::TcpStream::from_raw_fd(fd));
            } else {
                rc = uv::uv_read_start(tcp, on_alloc, on_read);
            }
            if rc != 0 {
                self.closing.set(self.closing.get() + 1);
                uv::uv_close(tcp, on_close_conn);
            }
            rc
        };
        if rc != 0 {
            return Err(open_failed(rc));
        }
        self.conns.borrow_mut().insert(
            id,
            Conn {
                tcp,
                on_push,
                reader: ReplyReader::default(),
                pending: VecDeque::new(),
            },
        );
        Ok(())
    }

    /// Close connection `id`; with `cause`, its waiting commands fail and the live task hears
    /// that it was lost.
    fn drop_conn(&self, id: u64, cause: Option<Error>) {
        let Some(conn) = self.conns.borrow_mut().remove(&id) else {
            return;
        };
        self.closing.set(self.closing.get() + 1);
        // SAFETY: an open handle, closed once (it left `conns`)
        unsafe {
            uv::uv_read_stop(conn.tcp);
            uv::uv_close(conn.tcp, on_close_conn);
        }
        let error = cause.clone().unwrap_or_else(Error::closed);
        for (_, reply) in conn.pending {
            let _ = reply.send(Err(error.clone()));
        }
        if cause.is_some() {
            (conn.on_push)(Push::Lost);
        }
    }

    fn shut(self: &Rc<Self>) {
        if self.shut.replace(true) {
            return;
        }
        let queued = {
            let mut r = lock(&self.requests);
            r.side = Side::Shut;
            std::mem::take(&mut r.queue)
        };
        drop(queued);
        let ids: Vec<u64> = self.conns.borrow().keys().copied().collect();
        for id in ids {
            self.drop_conn(id, None);
        }
        self.closing.set(self.closing.get() + 2);
        // SAFETY: the async and check handles are open until here, closed once
        unsafe {
            uv::uv_close(self.wake, on_close::<Inner, { uv::UV_ASYNC }>);
            uv::uv_close(self.check, on_close::<Inner, { uv::UV_CHECK }>);
        }
    }

    fn closed_one(&self) {
        self.closing.set(self.closing.get() - 1);
        if !self.shut.get() || self.closing.get() != 0 {
            return;
        }
        self.ready.release();
        let hook = self.hook.replace(ptr::null_mut());
        if !hook.is_null() {
            // SAFETY: the hook's handle, removed once; then the count of `Inner` it held
            unsafe {
                sys::napi_remove_async_cleanup_hook(hook);
                drop(Rc::from_raw(self as *const Inner));
            }
        }
    }

    /// The replies and messages read so far on connection `id`; returns whether a message
    /// was delivered.
    fn on_bytes(&self, id: u64) -> bool {
        let mut delivered = false;
        loop {
            let next = {
                let mut conns = self.conns.borrow_mut();
                let Some(conn) = conns.get_mut(&id) else {
                    return delivered;
                };
                conn.reader.next_reply()
            };
            match next {
                Ok(Some(reply)) => delivered |= self.on_reply(id, reply),
                Ok(None) => return delivered,
                Err(e) => {
                    self.drop_conn(id, Some(e));
                    return delivered;
                }
            }
        }
    }

    fn on_reply(&self, id: u64, reply: WireReply) -> bool {
        let mut conns = self.conns.borrow_mut();
        let Some(conn) = conns.get_mut(&id) else {
            return false;
        };
        let items = match reply {
            Ok(Value::Array(items)) => items,
            Err(text) => {
                if let Some((_, reply)) = conn.pending.pop_front() {
                    let _ = reply.send(Err(Error::new(
                        ErrorCode::StoreUnavailable,
                        format!("Redis refused a live subscription ({text})"),
                    )));
                }
                return false;
            }
            Ok(_) => return false,
        };
        let kind = match items.first() {
            Some(Value::BulkString(k)) => k.as_slice(),
            _ => return false,
        };
        match kind {
            b"message" => {
                let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
                    (items.get(1), items.get(2))
                else {
                    return false;
                };
                let (Ok(channel), Ok(payload)) =
                    (std::str::from_utf8(channel), std::str::from_utf8(payload))
                else {
                    return false;
                };
                let on_push = conn.on_push.clone();
                drop(conns);
                napi::bindgen_prelude::within_runtime_if_available(|| {
                    on_push(Push::Message { channel, payload })
                });
                true
            }
            b"subscribe" | b"unsubscribe" => {
                if let Some(front) = conn.pending.front_mut() {
                    front.0 = front.0.saturating_sub(1);
                    if front.0 == 0 {
                        if let Some((_, reply)) = conn.pending.pop_front() {
                            let _ = reply.send(Ok(()));
                        }
                    }
                }
                false
            }
            _ => false,
        }
    }

    fn handle_requests(self: &Rc<Self>) {
        loop {
            let Some(request) = lock(&self.requests).queue.pop_front() else {
                return;
            };
            match request {
                Request::Open {
                    id,
                    stream,
                    on_push,
                    reply,
                } => {
                    let _ = reply.send(self.open(id, stream, on_push));
                }
                Request::Send {
                    id,
                    bytes,
                    confirmations,
                    reply,
                } => {
                    let mut conns = self.conns.borrow_mut();
                    let Some(conn) = conns.get_mut(&id) else {
                        let _ = reply.send(Err(Error::new(
                            ErrorCode::StoreUnavailable,
                            "the live connection is gone",
                        )));
                        continue;
                    };
                    let tcp = conn.tcp;
                    conn.pending.push_back((confirmations, reply));
                    drop(conns);
                    let weak = Rc::downgrade(self);
                    let failed = move |e| {
                        if let Some(inner) = weak.upgrade() {
                            inner.drop_conn(id, Some(e));
                        }
                    };
                    if let Err(e) = write(tcp, bytes, failed) {
                        self.drop_conn(id, Some(e));
                    }
                }
                Request::Close { id } => self.drop_conn(id, None),
            }
        }
    }
}

fn open_failed(rc: i32) -> Error {
    Error::new(
        ErrorCode::StoreUnavailable,
        format!(
            "the live connection could not be put on the event loop ({})",
            uv::error_text(rc)
        ),
    )
}

unsafe fn conn_of(handle: *const c_void) -> (Rc<Inner>, u64) {
    let data = &*(uv::uv_handle_get_data(handle) as *const ConnData);
    (owner_of(data.inner as *const c_void), data.id)
}

unsafe extern "C" fn on_alloc(handle: *mut c_void, _suggested: usize, buf: *mut uv::uv_buf_t) {
    let (inner, _) = conn_of(handle);
    let mut b = inner.read_buf.borrow_mut();
    (*buf).base = b.as_mut_ptr().cast();
    (*buf).len = b.len();
}

unsafe extern "C" fn on_read(handle: *mut c_void, nread: isize, _buf: *const uv::uv_buf_t) {
    let (inner, id) = conn_of(handle);
    if nread < 0 {
        inner.drop_conn(id, Some(lost(nread as i32)));
        return;
    }
    if nread == 0 {
        return;
    }
    {
        let bytes = inner.read_buf.borrow();
        if let Some(conn) = inner.conns.borrow_mut().get_mut(&id) {
            conn.reader.feed(&bytes[..nread as usize]);
        }
    }
    let delivered = {
        let _settling = Settling::enter();
        inner.on_bytes(id)
    };
    if delivered && !inner.check_armed.replace(true) {
        // handed to JavaScript in the check phase: every message of this loop iteration (on
        // any socket) in one call; libuv runs the check handles last started first, so when
        // the reply socket was read first (Redis writes the reply first) this comes before
        // the emits settle
        uv::uv_check_start(inner.check, on_check);
    }
}

unsafe extern "C" fn on_requests(handle: *mut c_void) {
    let inner: Rc<Inner> = owner_of(uv::uv_handle_get_data(handle));
    if !inner.shut.get() {
        inner.handle_requests();
    }
}

unsafe extern "C" fn on_close_conn(handle: *mut c_void) {
    let data = Box::from_raw(uv::uv_handle_get_data(handle) as *mut ConnData);
    uv::free_handle(handle, uv::UV_TCP);
    let inner = Rc::from_raw(data.inner);
    inner.closed_one();
}

unsafe extern "C" fn on_check(handle: *mut c_void) {
    let inner: Rc<Inner> = owner_of(uv::uv_handle_get_data(handle));
    inner.check_armed.set(false);
    uv::uv_check_stop(handle);
    if !inner.shut.get() {
        inner.ready.call();
    }
}

unsafe extern "C" fn on_environment_teardown(
    _handle: sys::napi_async_cleanup_hook_handle,
    data: *mut c_void,
) {
    owner_of::<Inner>(data).shut();
}
