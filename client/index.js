// lean-events/client: the flow and trigger reducers for the browser (and anywhere else).
// No native code, no Node built-ins, no dependencies. The same rules as the Rust reducers
// (crates/core/src/reduce.rs); both are checked against vectors/reducers/*.json.
//
// apply*Event(state, event) updates `state` in place and returns it (undefined: a new state).
// Unknown kinds are ignored; events out of the expected order never throw.
//
// A flow state starts as 'unknown' (a stream with no events is no run) and is 'running' from its
// first event on. Awaits of the flow function itself (ctx.await.* in defineFlow: step.* events
// whose step is the flow's name and whose meta.jobId is the run id) are the run's `waiting`
// list, not a step. Once the run ended,
// nothing is pending: `waiting` is gone and an unfinished step is 'cancelled'.

const has = (o, k) => o !== null && typeof o === 'object' && !Array.isArray(o) && Object.prototype.hasOwnProperty.call(o, k)

function setOpt(target, key, source, sourceKey = key) {
  if (has(source, sourceKey)) target[key] = source[sourceKey]
}

/** A new, empty flow state. */
export function initialFlowState() {
  return { status: 'unknown', steps: {}, logs: [] }
}

/** A new, empty trigger state. */
export function initialTriggerState() {
  return { status: 'registered' }
}

/** Reduce a flow's events (oldest first) to its state. */
export function reduceFlowState(events) {
  let state = initialFlowState()
  for (const e of events) state = applyFlowEvent(state, e)
  return state
}

/** Reduce a trigger's events (oldest first) to its state. */
export function reduceTriggerState(events) {
  let state = initialTriggerState()
  for (const e of events) state = applyTriggerEvent(state, e)
  return state
}

/** Fold one event into a flow state. */
export function applyFlowEvent(state, event) {
  const s = state ?? initialFlowState()
  if (!event || typeof event !== 'object' || Array.isArray(event)) return s
  const kind = typeof event.kind === 'string' ? event.kind : ''
  const data = event.data
  const terminal = s.status === 'completed' || s.status === 'failed' || s.status === 'cancelled'
  // the stream has an event: there is a run
  if (s.status === 'unknown') s.status = 'running'
  if (isFlowLevel(event, kind, s.name)) {
    if (!terminal) applyFlowAwait(s, kind, event, data)
    return s
  }
  if (kind === 'flow.started') {
    if (!terminal) s.status = 'running'
    setOpt(s, 'name', data)
    setOpt(s, 'startedAt', event, 'ts')
  } else if (kind === 'flow.completed' || kind === 'flow.failed') {
    s.status = kind === 'flow.completed' ? 'completed' : 'failed'
    setOpt(s, 'completedAt', event, 'ts')
    setOpt(s, 'duration', data)
    if (kind === 'flow.failed') setOpt(s, 'error', data)
    closePending(s)
  } else if (kind === 'flow.cancelled') {
    closePending(s)
    s.status = 'cancelled'
    setOpt(s, 'completedAt', event, 'ts')
    setOpt(s, 'duration', data)
    setOpt(s, 'reason', data)
  } else if (kind === 'log') {
    const entry = {}
    setOpt(entry, 'ts', event)
    setOpt(entry, 'step', event)
    setOpt(entry, 'level', data)
    setOpt(entry, 'msg', data)
    if (!has(s, 'logs')) s.logs = []
    if (Array.isArray(s.logs)) s.logs.push(entry)
  } else if (kind.startsWith('step.')) {
    if (typeof event.step !== 'string') return s
    if (!has(s, 'steps')) s.steps = {}
    if (s.steps === null || typeof s.steps !== 'object' || Array.isArray(s.steps)) return s
    if (!has(s.steps, event.step)) {
      // defineProperty: a step named "__proto__" must stay a plain own property
      Object.defineProperty(s.steps, event.step, {
        value: { status: 'pending', attempt: 0 },
        enumerable: true,
        writable: true,
        configurable: true,
      })
    }
    const step = s.steps[event.step]
    if (step !== null && typeof step === 'object' && !Array.isArray(step)) {
      applyStepEvent(step, kind, event, data)
      if (terminal) closeStep(step)
    }
  }
  return s
}

const AWAIT_KINDS = ['step.await.time', 'step.await.event', 'step.await.trigger', 'step.resumed', 'step.await.timeout', 'step.await.cancelled']
const AWAIT_STARTS = ['step.await.time', 'step.await.event', 'step.await.trigger']

// An await event of the flow function itself: its step is the flow's name and its job is the
// run (meta.jobId is the event's flow, or its subject when it has none).
function isFlowLevel(event, kind, flowName) {
  if (!AWAIT_KINDS.includes(kind)) return false
  // a step run on its own with the run's id as its job id is still a step: the flow's own
  // awaits carry the flow's name as their step
  if (typeof flowName !== 'string' || event.step !== flowName) return false
  const job = has(event.meta, 'jobId') ? event.meta.jobId : undefined
  if (typeof job !== 'string') return false
  const run = typeof event.flow === 'string' ? event.flow : typeof event.subject === 'string' ? event.subject : undefined
  return run === job
}

// An await adds { awaitType, awaitData, since } to `waiting`; a resume or timeout removes the
// oldest entry of its type and a cancelled trigger its own entry; an empty list is no field.
function applyFlowAwait(s, kind, event, data) {
  const waiting = Array.isArray(s.waiting) ? s.waiting : []
  delete s.waiting
  if (AWAIT_STARTS.includes(kind)) {
    const entry = { awaitType: kind.slice('step.await.'.length) }
    if (has(event, 'data')) entry.awaitData = data
    setOpt(entry, 'since', event, 'ts')
    waiting.push(entry)
  } else {
    const type = kind === 'step.resumed' ? (has(event.meta, 'awaitType') ? event.meta.awaitType : undefined) : has(data, 'awaitType') ? data.awaitType : undefined
    // a cancelled trigger names itself; otherwise the oldest await of the type
    const trigger = has(data, 'triggerId') ? data.triggerId : undefined
    const isObject = (w) => w !== null && typeof w === 'object'
    let i = trigger === undefined ? -1 : waiting.findIndex((w) => isObject(w) && has(w.awaitData, 'triggerId') && sameJson(w.awaitData.triggerId, trigger))
    if (i < 0) i = waiting.findIndex((w) => type === undefined || (isObject(w) && sameJson(w.awaitType, type)))
    if (i >= 0) waiting.splice(i, 1)
  }
  if (waiting.length > 0) s.waiting = waiting
}

const sameJson = (a, b) => a === b || (a !== undefined && b !== undefined && JSON.stringify(a) === JSON.stringify(b))

// The run ended: no flow-level await is pending, no step unfinished.
function closePending(s) {
  delete s.waiting
  if (s.steps === null || typeof s.steps !== 'object' || Array.isArray(s.steps)) return
  for (const step of Object.values(s.steps)) {
    if (step !== null && typeof step === 'object' && !Array.isArray(step)) closeStep(step)
  }
}

// A step of an ended run that had not finished is 'cancelled'.
function closeStep(step) {
  if (step.status === 'pending' || step.status === 'running' || step.status === 'waiting' || step.status === 'retrying') step.status = 'cancelled'
}

function applyStepEvent(step, kind, event, data) {
  const metaAttempt = has(event.meta, 'attempt') && typeof event.meta.attempt === 'number' ? event.meta.attempt : undefined
  const current = Number.isInteger(step.attempt) && step.attempt >= 0 ? step.attempt : 0
  const clearWait = () => {
    delete step.awaitType
    delete step.awaitData
  }
  switch (kind) {
    case 'step.started':
      step.status = 'running'
      step.attempt = metaAttempt ?? current + 1
      setOpt(step, 'startedAt', event, 'ts')
      delete step.completedAt
      delete step.error
      clearWait()
      break
    case 'step.completed':
      step.status = 'completed'
      step.attempt = metaAttempt ?? Math.max(current, 1)
      setOpt(step, 'completedAt', event, 'ts')
      setOpt(step, 'result', data)
      delete step.error
      clearWait()
      break
    case 'step.failed': {
      const retry = has(data, 'willRetry') && data.willRetry === true
      step.status = retry ? 'retrying' : 'failed'
      step.attempt = metaAttempt ?? Math.max(current, 1)
      setOpt(step, 'error', data)
      if (!retry) setOpt(step, 'completedAt', event, 'ts')
      clearWait()
      break
    }
    case 'step.retry':
      step.status = 'retrying'
      break
    case 'step.await.time':
    case 'step.await.event':
    case 'step.await.trigger':
      step.status = 'waiting'
      step.awaitType = kind.slice('step.await.'.length)
      if (has(event, 'data')) step.awaitData = data
      break
    case 'step.resumed':
    case 'step.await.cancelled':
      step.status = 'running'
      clearWait()
      break
    case 'step.await.timeout':
      step.status = 'timeout'
      setOpt(step, 'awaitType', data)
      delete step.awaitData
      break
    default:
  }
}

/** Fold one event into a trigger state. */
export function applyTriggerEvent(state, event) {
  const s = state ?? initialTriggerState()
  if (!event || typeof event !== 'object') return s
  const data = event.data
  const resolved = s.status === 'fired' || s.status === 'timeout' || s.status === 'cancelled'
  switch (event.kind) {
    case 'trigger.registered':
      if (!resolved) s.status = 'registered'
      setOpt(s, 'registeredAt', event, 'ts')
      setOpt(s, 'type', data)
      break
    case 'trigger.fired':
      s.status = 'fired'
      setOpt(s, 'firedAt', event, 'ts')
      setOpt(s, 'payload', data)
      break
    case 'trigger.timeout':
      s.status = 'timeout'
      break
    case 'trigger.cancelled':
      s.status = 'cancelled'
      break
    default:
      return s
  }
  if (!has(s, 'correlationId')) setOpt(s, 'correlationId', event)
  return s
}
