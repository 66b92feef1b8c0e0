//! Every key and channel name lean-events uses, in one place, for one Redis (and the embedded
//! store, which uses the same names) and for a Redis Cluster.
//!
//! One Redis: the names of DESIGN §2 (`nq:flow:<id>`, `nq:flows:<name>`, ...).
//! Redis Cluster: a stream and its live channel share one hash slot (`nq:flow:{<id>}`,
//! `nq:flow:{<id>}:live`); every other key lives under `{nq}:…`, one slot (the *coordination
//! slot*), so that each compare-and-set of the scheduler stays one script. Per-kind channels
//! (`nq:kind:<kind>`) are plain Pub/Sub on both.

use crate::event::StreamRef;

/// The names of one bus's keys and channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
    /// The prefix of every key that is not a stream: the prefix, or `{<prefix>}` on a cluster.
    coord: String,
    cluster: bool,
}

impl Keys {
    /// Names for one Redis or the embedded store.
    pub fn single(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
            coord: prefix.to_owned(),
            cluster: false,
        }
    }

    /// Names for a Redis Cluster.
    pub fn cluster(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
            coord: format!("{{{prefix}}}"),
            cluster: true,
        }
    }

    /// The key prefix (`nq` by default).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The prefix of every key that is not a stream: the key prefix, or on a Redis Cluster
    /// `{<prefix>}` (one hash slot for all of them).
    pub fn coord(&self) -> &str {
        &self.coord
    }

    /// True for the cluster layout.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// A stream: `<prefix>:<type>:<id>`; on a cluster `<prefix>:<type>:{<id>}`.
    pub fn stream(&self, stream: &StreamRef) -> String {
        if self.cluster {
            format!("{}:{}:{{{}}}", self.prefix, stream.stream_type, stream.id)
        } else {
            format!("{}:{}:{}", self.prefix, stream.stream_type, stream.id)
        }
    }

    /// The live channel of a stream: its key + `:live` (sharded Pub/Sub on a cluster).
    pub fn live_channel(&self, stream: &StreamRef) -> String {
        let mut key = self.stream(stream);
        key.push_str(":live");
        key
    }

    /// Every event of one kind, from every stream: `<prefix>:kind:<kind>` (plain Pub/Sub).
    pub fn kind_channel(&self, kind: &str) -> String {
        format!("{}:kind:{kind}", self.prefix)
    }

    /// The run index of a flow name (sorted set: run id → start ms): `<coord>:flows:<name>`.
    pub fn runs(&self, flow_name: &str) -> String {
        format!("{}:flows:{flow_name}", self.coord)
    }

    /// The trigger index (sorted set: trigger id → registration ms): `<coord>:triggers`.
    pub fn triggers(&self) -> String {
        format!("{}:triggers", self.coord)
    }

    /// Retention notes (sorted set: "<index>SEP<id>" → ms its stream expires at; see
    /// `store/redis/lua/retention.lua`): `<coord>:retention`.
    pub fn retention(&self) -> String {
        format!("{}:retention", self.coord)
    }

    /// An await (hash, see `store::awaits`): `<coord>:await:<awaitId>`.
    pub fn await_state(&self, await_id: &str) -> String {
        format!("{}:await:{await_id}", self.coord)
    }

    /// The pending event awaits of a kind (hash awaitId → match): `<coord>:await:kind:<kind>`.
    pub fn event_awaits(&self, kind: &str) -> String {
        format!("{}:await:kind:{kind}", self.coord)
    }

    /// A scheduler job (hash): `<coord>:sched:job:<jobId>`.
    pub fn job(&self, job_id: &str) -> String {
        format!("{}:sched:job:{job_id}", self.coord)
    }

    /// A scheduler instance's lease (a key with a TTL): `<coord>:sched:lease:<instance>`.
    pub fn lease(&self, instance: &str) -> String {
        format!("{}:sched:lease:{instance}", self.coord)
    }

    /// The jobs an instance owns (set): `<coord>:sched:owned:<instance>`.
    pub fn owned_jobs(&self, instance: &str) -> String {
        format!("{}:sched:owned:{instance}", self.coord)
    }

    /// Every scheduler instance that may own jobs (set): `<coord>:sched:instances`.
    pub fn instances(&self) -> String {
        format!("{}:sched:instances", self.coord)
    }

    /// Due timers (sorted set: timer id → due ms): `<coord>:sched:timers`.
    pub fn timers(&self) -> String {
        format!("{}:sched:timers", self.coord)
    }

    /// Claimed timers (sorted set: timer id → claim lease end ms): `<coord>:sched:inflight`.
    pub fn timers_inflight(&self) -> String {
        format!("{}:sched:inflight", self.coord)
    }

    /// What each timer does (hash: timer id → JSON): `<coord>:sched:timer-data`.
    pub fn timer_payloads(&self) -> String {
        format!("{}:sched:timer-data", self.coord)
    }

    /// A timer was added (every instance's timer loop listens): `<coord>:sched:wake`.
    pub fn wake_channel(&self) -> String {
        format!("{}:sched:wake", self.coord)
    }

    /// Notes for one instance (an await resolved, a job ended, work to run):
    /// `<coord>:sched:inst:<instance>`.
    pub fn inbox_channel(&self, instance: &str) -> String {
        format!("{}:sched:inst:{instance}", self.coord)
    }

    /// Redis Cluster: the outbox of the slot whose hash tag is `tag`:
    /// `<prefix>:outbox:{<tag>}` (a sorted set in that slot).
    pub fn outbox(&self, tag: &str) -> String {
        format!("{}:outbox:{{{tag}}}", self.prefix)
    }

    /// Redis Cluster: the lease of the process running the periodic outbox repair pass.
    pub fn outbox_repair_lease(&self) -> String {
        format!("{}:outbox-repair", self.coord)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_node_names_are_the_design_table() {
        let k = Keys::single("nq");
        let flow = StreamRef::new("flow", "run_1").unwrap();
        assert_eq!(k.stream(&flow), "nq:flow:run_1");
        assert_eq!(k.live_channel(&flow), "nq:flow:run_1:live");
        assert_eq!(k.kind_channel("order.created"), "nq:kind:order.created");
        assert_eq!(k.runs("example"), "nq:flows:example");
        assert_eq!(k.triggers(), "nq:triggers");
        assert_eq!(k.await_state("a"), "nq:await:a");
        assert_eq!(k.job("j"), "nq:sched:job:j");
    }

    #[test]
    fn cluster_names_share_slots() {
        let k = Keys::cluster("nq");
        let flow = StreamRef::new("flow", "run_1").unwrap();
        assert_eq!(k.stream(&flow), "nq:flow:{run_1}");
        assert_eq!(k.live_channel(&flow), "nq:flow:{run_1}:live");
        assert_eq!(k.kind_channel("a.b"), "nq:kind:a.b");
        assert_eq!(k.runs("example"), "{nq}:flows:example");
        assert_eq!(k.timers(), "{nq}:sched:timers");
        assert_eq!(k.outbox("7"), "nq:outbox:{7}");
    }
}
