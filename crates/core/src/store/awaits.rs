//! The await-resolution contract every store follows: what resolving an await writes, how
//! long it is kept and whom it tells.

/// How long resolved awaits and finished jobs stay in the store (7 days, in ms).
pub const RESOLVED_TTL_MS: u64 = 7 * 24 * 3600 * 1000;
