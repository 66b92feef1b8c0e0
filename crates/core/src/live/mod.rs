//! Live delivery: gap-free subscriptions to streams (and live-only ones to channels), fanned
//! out from one Pub/Sub connection per bus.
//!
//! - `subscription.rs`: a subscription's state machine (catch up from the stream, then live)
//!   and the handle consumers take items from;
//! - `hub.rs`: which subscriptions follow which channel, reference-counted channels and the
//!   fan-out of each message;
//! - `pubsub.rs`: the live task that keeps the server's subscriptions equal to the channels
//!   wanted, for one Redis and a Redis Cluster alike, and makes every stream subscription
//!   catch up after a lost connection.
//!
//! On the embedded store there is no live task: the store hands each event to the hub itself.

mod hub;
pub(crate) mod pubsub;
mod subscription;

pub use hub::Hub;
pub(crate) use subscription::subscribe;
pub use subscription::{End, Item, Start, SubscribeOptions, Subscription, Taken, Waker};
