//! `NativeScheduler`: the core `Scheduler` behind napi. The JavaScript side runs handlers for
//! the work it takes and reports each outcome back.

use lean_events_core::scheduler::{Due, RetryPolicy, Scheduler};
use lean_events_core::Error;
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::error::{guarded_sync, spawn};

/// Options of `bus.scheduler()`.
#[napi(object)]
pub struct NativeSchedulerOptions {
    /// Stable id of this instance (default: random).
    pub instance_id: Option<String>,
    /// How long this instance counts as alive after its last heartbeat, in ms (default 5000).
    pub lease_ms: Option<i64>,
    /// Most handlers running at once (default 100); one parked in an await does not count.
    pub concurrency: Option<i64>,
}

/// A scheduler instance, native half.
#[napi]
pub struct NativeScheduler {
    inner: Scheduler,
}

impl NativeScheduler {
    pub fn new(inner: Scheduler) -> Self {
        NativeScheduler { inner }
    }
}

fn ms(what: &str, v: Option<f64>) -> std::result::Result<Option<u64>, Error> {
    match v {
        None => Ok(None),
        Some(n) if n.is_finite() && n >= 0.0 => Ok(Some(n as u64)),
        Some(n) => Err(Error::argument(format!(
            "{what} must be a number of ms ≥ 0 (got {n})"
        ))),
    }
}

#[napi]
impl NativeScheduler {
    /// This instance's id.
    #[napi(getter)]
    pub fn instance_id(&self) -> String {
        self.inner.instance_id().to_owned()
    }

    /// Declare that this instance runs `step`, with a retry policy given as JSON.
    #[napi]
    pub fn define(&self, step: String, policy: Option<String>) -> Result<()> {
        guarded_sync(|| {
            let policy = RetryPolicy::from_json(policy.as_deref().unwrap_or("null"))?;
            self.inner.define(&step, policy)
        })
    }

    /// Queued work as a JSON array of `{jobId, step, flow, input, attempt, replay}`.
    #[napi]
    pub fn take_work(&self, max: u32) -> String {
        format!("[{}]", self.inner.take_work(max.max(1) as usize).join(","))
    }

    /// Run a step; resolves to its result (JSON), or rejects with `STEP_FAILED` whose `detail`
    /// is what the handler threw.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn run(
        &self,
        env: Env,
        step: String,
        flow: String,
        input: String,
        job_id: Option<String>,
    ) -> Result<PromiseRaw<'static, String>> {
        let s = self.inner.clone();
        spawn(env, async move {
            s.run(&step, &flow, &input, job_id.as_deref()).await
        })
    }

    /// The handler of an attempt returned `result` (JSON).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn complete(
        &self,
        env: Env,
        job_id: String,
        attempt: u32,
        result: String,
    ) -> Result<PromiseRaw<'static, ()>> {
        let s = self.inner.clone();
        spawn(
            env,
            async move { s.complete(&job_id, attempt, &result).await },
        )
    }

    /// The handler of an attempt threw `error` (JSON `{message, name, code, retriable, retryAfter,
    /// retryAt}`).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn fail(
        &self,
        env: Env,
        job_id: String,
        attempt: u32,
        error: String,
    ) -> Result<PromiseRaw<'static, ()>> {
        let s = self.inner.clone();
        spawn(env, async move { s.fail(&job_id, attempt, &error).await })
    }

    /// `ctx.await.time`: resolves `ms` after the first call of this await (`relative`), or at
    /// the Unix time `ms`; a replay resumes when the first call said.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn await_time(
        &self,
        env: Env,
        job_id: String,
        attempt: u32,
        seq: u32,
        ms: f64,
        relative: bool,
    ) -> Result<PromiseRaw<'static, String>> {
        let s = self.inner.clone();
        spawn(env, async move {
            let ms = self::ms("await.time", Some(ms))?.unwrap_or(0);
            let due = if relative {
                Due::After(ms)
            } else {
                Due::At(ms)
            };
            s.await_time(&job_id, attempt, seq, due).await
        })
    }

    /// `ctx.await.event`: resolves to the matching event's record (JSON).
    #[allow(clippy::too_many_arguments)]
    #[napi(ts_return_type = "Promise<string>")]
    pub fn await_event(
        &self,
        env: Env,
        job_id: String,
        attempt: u32,
        seq: u32,
        kind: String,
        condition: String,
        timeout_ms: Option<f64>,
    ) -> Result<PromiseRaw<'static, String>> {
        let s = self.inner.clone();
        spawn(env, async move {
            let timeout = ms("timeoutMs", timeout_ms)?;
            s.await_event(&job_id, attempt, seq, &kind, &condition, timeout)
                .await
        })
    }

    /// `ctx.await.trigger`: registers the trigger and resolves to its id.
    #[allow(clippy::too_many_arguments)]
    #[napi(ts_return_type = "Promise<string>")]
    pub fn register_trigger(
        &self,
        env: Env,
        job_id: String,
        attempt: u32,
        seq: u32,
        trigger_type: String,
        payload: Option<String>,
        timeout_ms: Option<f64>,
    ) -> Result<PromiseRaw<'static, String>> {
        let s = self.inner.clone();
        spawn(env, async move {
            let timeout = ms("timeoutMs", timeout_ms)?;
            s.register_trigger(
                &job_id,
                attempt,
                seq,
                &trigger_type,
                payload.as_deref(),
                timeout,
            )
            .await
        })
    }

    /// Wait for a trigger; resolves to the fired payload (JSON).
    #[napi(ts_return_type = "Promise<string>")]
    pub fn wait_trigger(
        &self,
        env: Env,
        trigger_id: String,
    ) -> Result<PromiseRaw<'static, String>> {
        let s = self.inner.clone();
        spawn(env, async move { s.wait_trigger(&trigger_id).await })
    }

    /// Fire a trigger with a payload (JSON).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn fire(
        &self,
        env: Env,
        trigger_id: String,
        payload: String,
    ) -> Result<PromiseRaw<'static, ()>> {
        let s = self.inner.clone();
        spawn(env, async move { s.fire(&trigger_id, &payload).await })
    }

    /// Cancel a pending trigger.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn cancel(
        &self,
        env: Env,
        trigger_id: String,
        reason: String,
    ) -> Result<PromiseRaw<'static, ()>> {
        let s = self.inner.clone();
        spawn(env, async move { s.cancel(&trigger_id, &reason).await })
    }

    /// Declare that this instance runs flow `name` (flows and steps share one namespace).
    #[napi]
    pub fn define_flow(&self, name: String) -> Result<()> {
        guarded_sync(|| self.inner.define_flow(&name))
    }

    /// Start a run of flow `name` with `input` (JSON); resolves to the run id once the run
    /// exists and its `flow.started` is written.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn start_flow(
        &self,
        env: Env,
        name: String,
        input: String,
        run_id: Option<String>,
    ) -> Result<PromiseRaw<'static, String>> {
        let s = self.inner.clone();
        spawn(env, async move {
            s.start_flow(&name, run_id.as_deref(), &input, None).await
        })
    }

    /// `ctx.step`: what call `seq` of a flow run is to do, as JSON `{status: 'done', result} |
    /// {status: 'failed', error} | {status: 'run', attempt}` (waits for a retry's back-off).
    #[napi(ts_return_type = "Promise<string>")]
    pub fn step_begin(
        &self,
        env: Env,
        job_id: String,
        attempt: u32,
        seq: u32,
        name: String,
    ) -> Result<PromiseRaw<'static, String>> {
        let s = self.inner.clone();
        spawn(env, async move {
            s.step_begin(&job_id, attempt, seq, &name).await
        })
    }

    /// A flow step's attempt returned `result` (JSON); resolves to what `step_begin` would
    /// say now (the recorded result).
    #[napi(ts_return_type = "Promise<string>")]
    pub fn step_complete(
        &self,
        env: Env,
        job_id: String,
        attempt: u32,
        seq: u32,
        step_attempt: u32,
        result: String,
    ) -> Result<PromiseRaw<'static, String>> {
        let s = self.inner.clone();
        spawn(env, async move {
            s.step_complete(&job_id, attempt, seq, step_attempt, &result)
                .await
        })
    }

    /// A flow step's attempt threw `error` (JSON); `policy` is its retry policy (JSON).
    /// Resolves to `{status: 'retry'}` or what `step_begin` would say now.
    #[allow(clippy::too_many_arguments)]
    #[napi(ts_return_type = "Promise<string>")]
    pub fn step_fail(
        &self,
        env: Env,
        job_id: String,
        attempt: u32,
        seq: u32,
        step_attempt: u32,
        error: String,
        policy: Option<String>,
    ) -> Result<PromiseRaw<'static, String>> {
        let s = self.inner.clone();
        spawn(env, async move {
            let policy = policy.unwrap_or_else(|| "null".into());
            s.step_fail(&job_id, attempt, seq, step_attempt, &error, &policy)
                .await
        })
    }

    /// Cancel a running flow run (`flow.cancelled`, its pending awaits cancelled).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn cancel_flow(
        &self,
        env: Env,
        run_id: String,
        reason: String,
    ) -> Result<PromiseRaw<'static, ()>> {
        let s = self.inner.clone();
        spawn(env, async move { s.cancel_flow(&run_id, &reason).await })
    }

    /// Start a new run with the input of run `run_id`; resolves to the new run's id.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn rerun_flow(&self, env: Env, run_id: String) -> Result<PromiseRaw<'static, String>> {
        let s = self.inner.clone();
        spawn(env, async move { s.rerun_flow(&run_id).await })
    }

    /// Stop this instance's background work.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn close(&self, env: Env) -> Result<PromiseRaw<'static, ()>> {
        let s = self.inner.clone();
        spawn(env, async move {
            s.close().await;
            Ok(())
        })
    }
}
