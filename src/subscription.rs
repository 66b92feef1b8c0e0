//! A subscription as JavaScript sees it: woken once per batch, then `take()` drains it.

use lean_events_core::{End, Item, Subscription};
use napi_derive::napi;

/// Why a subscription stopped, as plain data.
#[napi(object)]
pub struct SubscriptionError {
    /// Stable error code, e.g. `SUBSCRIBER_OVERFLOW` or `STREAM_GAP`.
    pub code: String,
    /// What happened and what to do.
    pub message: String,
    /// Id of the last event delivered; resubscribe with `after: lastId`.
    pub last_id: Option<String>,
    /// For `STREAM_GAP`: the first id still in the stream after the cursor.
    pub first_id: Option<String>,
}

/// What one `take()` returns.
#[napi(object)]
pub struct TakeResult {
    /// A JSON array of records; a trimmed range shows up as `{"gap":true,"after":…,"firstId":…}`.
    pub items: String,
    /// The subscription has ended and nothing more will come.
    pub done: bool,
    /// Set when it ended because of an error.
    pub error: Option<SubscriptionError>,
}

/// A native subscription handle.
#[napi]
pub struct NativeSubscription {
    sub: Subscription,
}

impl NativeSubscription {
    pub fn new(sub: Subscription) -> Self {
        NativeSubscription { sub }
    }
}

#[napi]
impl NativeSubscription {
    /// Take up to `max` queued items without waiting.
    #[napi]
    pub fn take(&self, max: u32) -> TakeResult {
        let taken = self.sub.take(max.max(1) as usize);
        let mut items = String::with_capacity(2 + taken.items.len() * 256);
        items.push('[');
        for (i, item) in taken.items.iter().enumerate() {
            if i > 0 {
                items.push(',');
            }
            match item {
                Item::Event(r) => items.push_str(&r.json),
                Item::Gap { after, first } => {
                    items.push_str(&format!(
                        "{{\"gap\":true,\"after\":\"{after}\",\"firstId\":"
                    ));
                    match first {
                        Some(f) => items.push_str(&format!("\"{f}\"")),
                        None => items.push_str("null"),
                    }
                    items.push('}');
                }
            }
        }
        items.push(']');
        let (done, error) = match taken.end {
            None => (false, None),
            Some(End::Closed) => (true, None),
            Some(End::Failed(e)) => (
                true,
                Some(SubscriptionError {
                    code: e.code.as_str().to_owned(),
                    message: e.message,
                    last_id: e.last_id,
                    first_id: e.first_id,
                }),
            ),
        };
        TakeResult { items, done, error }
    }

    /// True once the subscription has caught up and receives events as they are stored.
    #[napi(getter)]
    pub fn live(&self) -> bool {
        self.sub.is_live()
    }

    /// Stop delivery; the channel is released when this was its last subscriber.
    #[napi]
    pub fn unsubscribe(&self) {
        self.sub.unsubscribe();
    }
}
