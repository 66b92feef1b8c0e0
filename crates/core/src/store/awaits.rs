//! The await-resolution contract, in one place: what a store writes when an appended event
//! resolves an event await, how long the await is kept and whom it tells. The embedded store
//! follows it through the functions below; the Lua scripts (`redis/lua/match.lua`, used by
//! `append.lua` on one Redis and by `index_awaits.lua` on a cluster) get its constants as
//! arguments and implement the same steps; the behaviour suite checks that every backend
//! leaves the same await behind.
//!
//! An await is a hash at `Keys::await_state(awaitId)` (the scheduler writes the rest of it):
//! - `status`: `pending` until exactly one resolution moves it (a compare-and-set, or the
//!   append script for a matching event) to `resolved`, `timeout` or `cancelled`;
//! - `result`: for an event await, the matching event's live payload (`event::live_payload`);
//! - `resolvedMs`: when it resolved (the server's clock for Redis);
//! - `resumed`: set once `step.resumed` is written for it. A store that resolves an event
//!   await of a flow on one Redis (or in memory) appends that `step.resumed` in the same step
//!   and sets `resumed`; on a cluster the flow's stream is in another slot, so the instance
//!   that hands the result to the step writes it (and sets `resumed` by compare-and-set);
//! - `owner`, `flow`, `step`, `job`, `createdMs`: written by the scheduler when it opens the
//!   await; the store reads them to resume and to notify.
//!
//! A resolved await expires [`RESOLVED_TTL_MS`] after it resolved. Its owner (if any) is told
//! with a `sched.resolved` note (`event::note_payload`, data `{"await": awaitId}`) on
//! `Keys::inbox_channel(owner)`. The event await's registration (`Keys::event_awaits(kind)`,
//! field awaitId → match JSON) is removed when the event resolves it. Its timeout timer
//! (`timeout:<awaitId>`, in the timers set) is not the store's: the instance that hands the
//! result to the step removes it (the timer, if it comes due first, finds the await resolved
//! and does nothing).

use crate::event::note_payload;

/// How long resolved awaits and finished jobs stay in the store (7 days, in ms).
pub const RESOLVED_TTL_MS: u64 = 7 * 24 * 3600 * 1000;

/// Status of an await that is still waiting.
pub const PENDING: &str = "pending";
/// Status of an await resolved by its event, its timer or `fire`.
pub const RESOLVED: &str = "resolved";

/// The kind of the note that tells an await's owner it resolved.
pub const RESOLVED_NOTE: &str = "sched.resolved";

/// The note telling `owner` that `await_id` resolved (published on its inbox channel).
pub fn resolved_note(owner: &str, await_id: &str) -> String {
    note_payload(
        owner,
        RESOLVED_NOTE,
        &serde_json::json!({ "await": await_id }).to_string(),
    )
}

/// What an event await's resolution writes: status, result, time, and `resumed` when the
/// store appended `step.resumed` itself (`resolved_by`: the resolving event's id, on a
/// cluster where resolution is a second step that may be repeated).
pub fn resolution_fields(
    payload: &str,
    now_ms: u64,
    resumed: bool,
    resolved_by: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("status", RESOLVED.to_owned()),
        ("result", payload.to_owned()),
        ("resolvedMs", now_ms.to_string()),
    ];
    if resumed {
        fields.push(("resumed", "1".to_owned()));
    }
    if let Some(id) = resolved_by {
        fields.push(("resolvedBy", id.to_owned()));
    }
    fields
}

/// The stored fields of the `step.resumed` a store appends to the awaiting flow when it
/// resolves an event await (kind first, as every stored event).
pub fn step_resumed_fields(
    step: &str,
    waited_ms: u64,
    job: Option<&str>,
) -> Vec<(&'static str, String)> {
    vec![
        ("kind", "step.resumed".to_owned()),
        ("step", step.to_owned()),
        (
            "data",
            serde_json::json!({ "reason": "event", "awaitDuration": waited_ms }).to_string(),
        ),
        (
            "meta",
            serde_json::json!({ "awaitType": "event", "jobId": job }).to_string(),
        ),
    ]
}
