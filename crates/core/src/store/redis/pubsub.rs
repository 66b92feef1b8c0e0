//! Live connections to one Redis: a RESP3 connection whose Pub/Sub messages are pushed to a
//! handler on the connection's own task (no queue between Redis and the subscribers), and
//! whose loss is pushed the same way.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, PushInfo, PushKind, Value};

use crate::error::{Error, Result};
use crate::store::{Channel, PubSubConnection, PubSubSource, Push, PushHandler};

/// Channels sent in one SUBSCRIBE / UNSUBSCRIBE.
const CHUNK: usize = 500;

/// Opens RESP3 Pub/Sub connections to one Redis.
pub struct SingleNodePubSub {
    client: redis::Client,
    timeout: Duration,
}

impl SingleNodePubSub {
    /// Live connections like `client`'s, speaking RESP3 (Redis ≥ 6), each call bounded by
    /// `timeout`.
    pub fn new(client: &redis::Client, timeout: Duration) -> Result<Self> {
        let info = client.get_connection_info().clone();
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(settings))
            .map_err(|e| Error::argument(format!("Redis url: {e}")))?;
        Ok(SingleNodePubSub { client, timeout })
    }
}

/// Hand a push to the handler: messages (`[channel, payload]`) and the connection's end.
pub fn forward(on_push: &PushHandler, info: PushInfo) {
    match info.kind {
        PushKind::Message | PushKind::SMessage => {
            let (Some(channel), Some(payload)) = (info.data.first(), info.data.get(1)) else {
                return;
            };
            let (Ok(channel), Ok(payload)) = (
                std::str::from_utf8(bytes(channel)),
                std::str::from_utf8(bytes(payload)),
            ) else {
                return;
            };
            on_push(Push::Message { channel, payload });
        }
        PushKind::Disconnection => on_push(Push::Lost),
        _ => {}
    }
}

fn bytes(v: &Value) -> &[u8] {
    match v {
        Value::BulkString(b) => b,
        Value::SimpleString(s) => s.as_bytes(),
        _ => &[],
    }
}

#[async_trait]
impl PubSubSource for SingleNodePubSub {
    async fn connect(&self, on_push: PushHandler) -> Result<Box<dyn PubSubConnection>> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_push_sender(move |info: PushInfo| -> std::result::Result<(), ()> {
                forward(&on_push, info);
                Ok(())
            });
        let conn = tokio::time::timeout(
            self.timeout,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| {
            Error::new(
                crate::error::ErrorCode::Timeout,
                format!(
                    "the live connection to Redis was not established within {} ms",
                    self.timeout.as_millis()
                ),
            )
        })??;
        Ok(Box::new(SingleNodeConnection { conn }))
    }
}

struct SingleNodeConnection {
    conn: MultiplexedConnection,
}

#[async_trait]
impl PubSubConnection for SingleNodeConnection {
    async fn subscribe(&mut self, channels: &[Channel]) -> Result<()> {
        for chunk in channels.chunks(CHUNK) {
            let names: Vec<&str> = chunk.iter().map(|c| c.name.as_str()).collect();
            self.conn.subscribe(&names).await?;
        }
        Ok(())
    }

    async fn unsubscribe(&mut self, channels: &[Channel]) -> Result<()> {
        for chunk in channels.chunks(CHUNK) {
            let names: Vec<&str> = chunk.iter().map(|c| c.name.as_str()).collect();
            self.conn.unsubscribe(&names).await?;
        }
        Ok(())
    }
}
