//! lean-events core: the event store, live fan-out and (later) scheduler behind the
//! `lean-events` Node.js addon. Pure Rust, testable without Node.

pub mod bus;
pub mod clock;
pub mod diagnostics;
pub mod error;
pub mod event;
pub mod id;
pub mod keys;
pub mod live;
pub mod matching;
pub mod metrics;
pub mod reduce;
pub mod scheduler;
pub mod store;

pub use bus::{Bus, Config, OnStored, PreparedAppend};
pub use error::{Error, ErrorCode, Result};
pub use event::{Record, StreamRef};
pub use id::StreamId;
pub use live::{End, Item, Start, SubscribeOptions, Subscription, Taken};
pub use store::redis::connection::Conn as RawConnection;
pub use store::{ReadOptions, Run};
