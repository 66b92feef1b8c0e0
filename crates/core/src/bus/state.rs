//! Reduced states of streams (`Bus::state`): read what is new since the cached state, fold it
//! in — on a blocking thread when there is much of it, so a long stream's reduction never
//! holds up the I/O worker — and keep the result in a bounded LRU cache.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::Value;

use crate::error::{Error, ErrorCode, Result};
use crate::event::{Record, StreamRef};
use crate::id::StreamId;
use crate::reduce;
use crate::store::{EventLog, ReadOptions, MAX_READ_LIMIT};

/// Pages at most this long are folded on the calling task; longer ones on a blocking thread.
const INLINE_EVENTS: usize = 64;

/// The reduced state of `stream`, starting from the cached state if any.
pub(crate) async fn reduce_stream(
    log: &dyn EventLog,
    cache: &StateCache,
    stream: &StreamRef,
) -> Result<Value> {
    let is_trigger = stream.stream_type == "trigger";
    let (mut state, mut last) = cache.get(stream).unwrap_or_else(|| {
        let initial = if is_trigger {
            reduce::initial_trigger_state()
        } else {
            reduce::initial_flow_state()
        };
        (initial, StreamId::ZERO)
    });
    loop {
        let page = log
            .read(
                stream,
                &ReadOptions {
                    after: Some(last),
                    limit: Some(MAX_READ_LIMIT),
                    ..Default::default()
                },
            )
            .await?;
        let full = page.len() == MAX_READ_LIMIT;
        if let Some(r) = page.last() {
            last = r.id;
        }
        state = if page.len() <= INLINE_EVENTS {
            fold(state, &page, is_trigger)?
        } else {
            tokio::task::spawn_blocking(move || fold(state, &page, is_trigger))
                .await
                .map_err(|e| {
                    Error::new(
                        ErrorCode::Internal,
                        format!("reducing a stream failed: {e}"),
                    )
                })??
        };
        if !full {
            break;
        }
    }
    if last != StreamId::ZERO {
        cache.put(stream, &state, last);
    }
    Ok(state)
}

fn fold(mut state: Value, page: &[Record], is_trigger: bool) -> Result<Value> {
    for r in page {
        let event: Value = serde_json::from_str(&r.json).map_err(|e| {
            Error::new(
                ErrorCode::Internal,
                format!("stored event {} is not JSON: {e}", r.id),
            )
        })?;
        if is_trigger {
            reduce::apply_trigger_event(&mut state, &event);
        } else {
            reduce::apply_flow_event(&mut state, &event);
        }
    }
    Ok(state)
}

/// Reduced states by stream with the last applied id, least recently used evicted first.
pub(crate) struct StateCache {
    capacity: usize,
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    tick: u64,
    by_stream: HashMap<StreamRef, (Value, StreamId, u64)>,
}

impl StateCache {
    /// A cache of at most `capacity` states (0: none kept).
    pub(crate) fn new(capacity: usize) -> Self {
        StateCache {
            capacity,
            inner: Default::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, stream: &StreamRef) -> Option<(Value, StreamId)> {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let entry = inner.by_stream.get_mut(stream)?;
        entry.2 = tick;
        Some((entry.0.clone(), entry.1))
    }

    fn put(&self, stream: &StreamRef, state: &Value, last: StreamId) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        if let Some(entry) = inner.by_stream.get_mut(stream) {
            // a concurrent call may have stored a newer state already
            if entry.1 < last {
                *entry = (state.clone(), last, tick);
            }
            return;
        }
        if inner.by_stream.len() >= self.capacity {
            let oldest = inner
                .by_stream
                .iter()
                .min_by_key(|(_, e)| e.2)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                inner.by_stream.remove(&k);
            }
        }
        inner
            .by_stream
            .insert(stream.clone(), (state.clone(), last, tick));
    }

    /// How many states are cached.
    pub(crate) fn len(&self) -> usize {
        self.lock().by_stream.len()
    }
}
