//! Typed errors with stable codes: every failure that reaches a caller carries one.

use std::fmt;

/// Stable error categories. The string form (`as_str`) is what JavaScript sees as `err.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The event failed validation (kind, ids, JSON shape).
    EventInvalid,
    /// The serialized event is larger than `maxEventBytes`.
    PayloadTooLarge,
    /// An option or argument has the wrong type or an out-of-range value.
    InvalidArgument,
    /// The store could not be reached or refused the call.
    StoreUnavailable,
    /// The store did not answer within `timeoutMs`.
    Timeout,
    /// With `durability: 'replicated'`: the append is on the master but no replica confirmed it
    /// in time (it would be lost if the master failed now).
    NotReplicated,
    /// The bus (or the subscription) was closed.
    BusClosed,
    /// Too many emits are waiting for the store (`maxPendingEmits`); nothing was queued.
    Backpressure,
    /// A subscription could not keep up and was cut off.
    SubscriberOverflow,
    /// A subscription's cursor points before entries that were trimmed away.
    StreamGap,
    /// A store key holds data of another type than the layout expects.
    WrongType,
    /// A step failed for good (no attempts left, or not retriable).
    StepFailed,
    /// An await timed out.
    AwaitTimeout,
    /// `fire`/`cancel` named a trigger that does not exist (or has expired).
    TriggerNotFound,
    /// `fire`/`cancel` named a trigger that was already fired, cancelled or timed out.
    TriggerResolved,
    /// The trigger a step waited for was cancelled.
    TriggerCancelled,
    /// `run` was given the id of a job that exists already (or `startFlow` the id of a run).
    JobExists,
    /// A flow re-ran after a take-over and called another step or await than its run recorded
    /// at that position (its code changed).
    ReplayMismatch,
    /// The flow run was cancelled.
    FlowCancelled,
    /// The flow run failed (what `result` rejects with).
    FlowFailed,
    /// No flow run has this id (or its records expired).
    FlowNotFound,
    /// The flow run has ended already (it cannot be cancelled; a step call of a run that ended
    /// elsewhere is refused).
    FlowEnded,
    /// The store cannot do this (a keyspace call on a Redis Cluster).
    Unsupported,
    /// A bug: an invariant did not hold or a panic was caught.
    Internal,
}

impl ErrorCode {
    /// Every code, in declaration order (`code as usize` is its position here).
    pub const ALL: [ErrorCode; 24] = [
        ErrorCode::EventInvalid,
        ErrorCode::PayloadTooLarge,
        ErrorCode::InvalidArgument,
        ErrorCode::StoreUnavailable,
        ErrorCode::Timeout,
        ErrorCode::NotReplicated,
        ErrorCode::BusClosed,
        ErrorCode::Backpressure,
        ErrorCode::SubscriberOverflow,
        ErrorCode::StreamGap,
        ErrorCode::WrongType,
        ErrorCode::StepFailed,
        ErrorCode::AwaitTimeout,
        ErrorCode::TriggerNotFound,
        ErrorCode::TriggerResolved,
        ErrorCode::TriggerCancelled,
        ErrorCode::JobExists,
        ErrorCode::ReplayMismatch,
        ErrorCode::FlowCancelled,
        ErrorCode::FlowFailed,
        ErrorCode::FlowNotFound,
        ErrorCode::FlowEnded,
        ErrorCode::Unsupported,
        ErrorCode::Internal,
    ];

    /// The stable code string.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::EventInvalid => "EVENT_INVALID",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::StoreUnavailable => "STORE_UNAVAILABLE",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::NotReplicated => "NOT_REPLICATED",
            ErrorCode::BusClosed => "BUS_CLOSED",
            ErrorCode::Backpressure => "BACKPRESSURE",
            ErrorCode::SubscriberOverflow => "SUBSCRIBER_OVERFLOW",
            ErrorCode::StreamGap => "STREAM_GAP",
            ErrorCode::WrongType => "WRONG_TYPE",
            ErrorCode::StepFailed => "STEP_FAILED",
            ErrorCode::AwaitTimeout => "AWAIT_TIMEOUT",
            ErrorCode::TriggerNotFound => "TRIGGER_NOT_FOUND",
            ErrorCode::TriggerResolved => "TRIGGER_RESOLVED",
            ErrorCode::TriggerCancelled => "TRIGGER_CANCELLED",
            ErrorCode::JobExists => "JOB_EXISTS",
            ErrorCode::ReplayMismatch => "REPLAY_MISMATCH",
            ErrorCode::FlowCancelled => "FLOW_CANCELLED",
            ErrorCode::FlowFailed => "FLOW_FAILED",
            ErrorCode::FlowNotFound => "FLOW_NOT_FOUND",
            ErrorCode::FlowEnded => "FLOW_ENDED",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::Internal => "INTERNAL",
        }
    }
}

/// An error with a stable code, a message that says what to do, and, for subscriptions,
/// the last id the subscriber received (so it can resume from there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The category.
    pub code: ErrorCode,
    /// What went wrong, for a person.
    pub message: String,
    /// For subscription errors: the id of the last event handed to the subscriber.
    pub last_id: Option<String>,
    /// For `STREAM_GAP`: the first id the subscriber would get next, if any.
    pub first_id: Option<String>,
    /// For `STEP_FAILED`: the error the handler threw, as JSON.
    pub detail: Option<String>,
}

impl Error {
    /// An error of `code` with `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
            last_id: None,
            first_id: None,
            detail: None,
        }
    }

    /// An `EVENT_INVALID` error.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::EventInvalid, message)
    }

    /// An `INVALID_ARGUMENT` error.
    pub fn argument(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    /// A `BUS_CLOSED` error.
    pub fn closed() -> Self {
        Self::new(
            ErrorCode::BusClosed,
            "the bus is closed; connect a new one to keep working",
        )
    }

    /// Attach the last delivered id.
    pub fn with_last_id(mut self, last_id: Option<String>) -> Self {
        self.last_id = last_id;
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for Error {}

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        if e.is_timeout() {
            return Error::new(
                ErrorCode::Timeout,
                format!("Redis did not answer in time ({e})"),
            );
        }
        if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
            return Error::new(
                ErrorCode::StoreUnavailable,
                format!("Redis is unreachable ({e}); the call was not completed"),
            );
        }
        if e.code() == Some("WRONGTYPE") {
            return Error::new(
                ErrorCode::WrongType,
                format!("a key has the wrong type ({e})"),
            );
        }
        if matches!(
            e.code(),
            Some("LOADING" | "BUSY" | "MASTERDOWN" | "TRYAGAIN" | "CLUSTERDOWN")
        ) {
            return Error::new(
                ErrorCode::StoreUnavailable,
                format!("Redis is not ready ({e})"),
            );
        }
        Error::new(
            ErrorCode::StoreUnavailable,
            format!("Redis refused the call ({e})"),
        )
    }
}

/// Result with this crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_code_at_its_own_position() {
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(*code as usize, i, "{}", code.as_str());
        }
    }
}
