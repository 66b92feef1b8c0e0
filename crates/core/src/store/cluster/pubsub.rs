//! Live connections to a Redis Cluster: a RESP3 cluster connection whose messages are pushed
//! to a handler. Stream channels use sharded Pub/Sub (`SSUBSCRIBE`, on the shard that owns
//! the stream's slot), other channels plain Pub/Sub. When a node's connection drops (a master
//! failing over, say), the loss is pushed like a message and the live task opens a fresh
//! connection, which reads the topology again.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::{self, StreamExt};
use redis::cluster_async::ClusterConnection;

use crate::error::Result;
use crate::store::redis::connection::{cluster_client, with_timeout};
use crate::store::redis::pubsub::forward;
use crate::store::{Channel, PubSubConnection, PubSubSource, PushHandler};

/// Subscriptions sent at once.
const CONCURRENCY: usize = 64;

/// Opens live connections to a cluster through some of its nodes.
pub struct ClusterPubSub {
    nodes: Vec<String>,
    timeout: Duration,
}

impl ClusterPubSub {
    /// Live connections through `nodes`, each call bounded by `timeout`.
    pub fn new(nodes: &[String], timeout: Duration) -> Self {
        ClusterPubSub {
            nodes: nodes.to_vec(),
            timeout,
        }
    }
}

#[async_trait]
impl PubSubSource for ClusterPubSub {
    async fn connect(&self, on_push: PushHandler) -> Result<Box<dyn PubSubConnection>> {
        let client = cluster_client(
            &self.nodes,
            self.timeout,
            Some(Box::new(move |info| forward(&on_push, info))),
        )?;
        let conn = with_timeout(self.timeout, async {
            Ok(client.get_async_connection().await?)
        })
        .await?;
        Ok(Box::new(ClusterPubSubConnection {
            conn,
            timeout: self.timeout,
        }))
    }
}

struct ClusterPubSubConnection {
    conn: ClusterConnection,
    timeout: Duration,
}

impl ClusterPubSubConnection {
    async fn each(&self, channels: &[Channel], subscribe: bool) -> Result<()> {
        let results: Vec<Result<()>> = stream::iter(channels.to_vec())
            .map(|ch| {
                let mut c = self.conn.clone();
                let timeout = self.timeout;
                async move {
                    with_timeout(timeout, async {
                        let name = ch.name.as_str();
                        match (subscribe, ch.sharded) {
                            (true, true) => c.ssubscribe(name).await?,
                            (true, false) => c.subscribe(name).await?,
                            (false, true) => c.sunsubscribe(name).await?,
                            (false, false) => c.unsubscribe(name).await?,
                        }
                        Ok(())
                    })
                    .await
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        results.into_iter().collect()
    }
}

#[async_trait]
impl PubSubConnection for ClusterPubSubConnection {
    async fn subscribe(&mut self, channels: &[Channel]) -> Result<()> {
        self.each(channels, true).await
    }

    async fn unsubscribe(&mut self, channels: &[Channel]) -> Result<()> {
        self.each(channels, false).await
    }
}
