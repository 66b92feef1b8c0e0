/* lean-events: the public API. The native half is described in binding.d.ts (generated). */

/** A stored event, as every read, subscription and emit returns it. */
export interface EventRecord {
  /** Stream entry id `<ms>-<seq>`, assigned by the store. */
  id: string
  /** ISO-8601 UTC time derived from the id's milliseconds (the store's clock). */
  ts: string
  /** Event type, dot-separated, e.g. `flow.started`, `order.created`, `Order.Created`. */
  kind: string
  /** Context id: the stream the event lives in. */
  subject: string
  /** Flow run id; in a `flow` stream always present (defaults to the subject). */
  flow?: string
  /** Step name, for step events. */
  step?: string
  /** Trigger id, for trigger events. */
  trigger?: string
  /** Links events across contexts (a trigger to its flow). */
  correlationId?: string
  /** JSON payload. */
  data?: unknown
  /** Attempt, jobId, awaitType, ... */
  meta?: Record<string, unknown>
  /**
   * An entry lean-events did not emit (another program's stream, e.g. one the nvent adapters
   * append to through `bus.keyspace`): its stored fields as they are, in stored order; `kind`
   * is then `''`.
   */
  fields?: Record<string, string>
}

/** What `emit` takes: the envelope without the store-assigned `id` and `ts`. */
export interface EventInput {
  /**
   * Dot-separated segments of letters, digits, `_` and `-` (`order.created`, `Order.Created`;
   * case-sensitive), at most 128 characters.
   */
  kind: string
  /** 1-256 printable characters, no whitespace. */
  subject: string
  /** Flow run id (1-256 printable characters, no whitespace). */
  flow?: string
  /** Step name: 1-256 characters, spaces allowed (`Fetch Data`), no control characters. */
  step?: string
  /** Trigger id (1-256 printable characters, no whitespace). */
  trigger?: string
  /** Correlation id (1-256 printable characters, no whitespace). */
  correlationId?: string
  /**
   * Any JSON value. `flow.started` needs the flow's name, `data.name` (or `meta.flowName`),
   * and indexes the run under it; so does `flow.start` (the seed-era module's kind) when it
   * has one. A name is 1-256 printable characters, no whitespace.
   */
  data?: unknown
  /** A JSON object. */
  meta?: Record<string, unknown>
}

/** A stream: its type (`flow`, `trigger`, or any `[a-z0-9_-]+` not reserved) and id. */
export interface StreamRef {
  /** Stream type. */
  type: string
  /** Context id (the events' subject). */
  id: string
}

/** Stable error codes carried by every error as `err.code`. */
export type ErrorCode =
  | 'EVENT_INVALID'
  | 'PAYLOAD_TOO_LARGE'
  | 'INVALID_ARGUMENT'
  | 'STORE_UNAVAILABLE'
  | 'TIMEOUT'
  | 'BUS_CLOSED'
  | 'BACKPRESSURE'
  | 'SUBSCRIBER_OVERFLOW'
  | 'STREAM_GAP'
  | 'WRONG_TYPE'
  | 'NOT_REPLICATED'
  | 'STEP_FAILED'
  | 'AWAIT_TIMEOUT'
  | 'TRIGGER_NOT_FOUND'
  | 'TRIGGER_RESOLVED'
  | 'TRIGGER_CANCELLED'
  | 'JOB_EXISTS'
  | 'REPLAY_MISMATCH'
  | 'FLOW_CANCELLED'
  | 'FLOW_FAILED'
  | 'FLOW_NOT_FOUND'
  | 'FLOW_ENDED'
  | 'UNSUPPORTED'
  | 'INTERNAL'

/** An error with a stable `code`. */
export declare class LeanEventsError extends Error {
  /** Stable error code. */
  code: ErrorCode
  /** For subscription errors: the id of the last event delivered (resume with `after`). */
  lastId?: string
  /** For `STREAM_GAP`: the first id still in the stream after the cursor. */
  firstId?: string | null
  /** For `STEP_FAILED` and the error a failed `ctx.step` throws in a flow: the step's name. */
  step?: string
  /** For `STEP_FAILED` and the error a failed `ctx.step` throws in a flow: what the handler threw, as plain data. */
  cause?: { message: string; name?: string; code?: string | number }
  /** For `FLOW_FAILED` (`scheduler.result()`): what the flow threw, as `flow.failed` recorded it. */
  error?: { message: string; name?: string; code?: string | number; step?: string }
  /** For `FLOW_CANCELLED` (`scheduler.result()`): the reason given to `cancelFlow`. */
  reason?: string
  /** More about the failure, as the engine recorded it (JSON data), when there is more. */
  detail?: unknown
}

/**
 * Called for failures of background work nobody awaits (a lost live connection, a lease
 * renewal, a timer, a repair pass): `code` is stable (`LIVE_CONNECTION_LOST`,
 * `LOOP_CONNECTION_LOST`, `LOOP_CONNECTION_FAILED`, `LEASE_RENEWAL_FAILED`, …), `detail` the underlying error, if any. Every warning is also
 * counted in `bus.warningCounts`.
 */
export type WarningHandler = (code: string, message: string, detail?: string) => void

/** Timer figures of `BusMetrics`, when a scheduler runs on the bus. */
export interface TimerMetrics {
  /** Timers in the store not yet carried out (due later, or running), of every instance; null if the store could not be asked. */
  pending: number | null
  /** Timers this process carried out since connect (a counter). */
  fired: number
  /** Median lateness (fire time minus due time), in ms, of the last 1024 timers this process fired; null before the first. */
  latenessP50Ms: number | null
  /** 99th percentile of that lateness, in ms; null before the first timer fired. */
  latenessP99Ms: number | null
}

/** What `bus.metrics()` returns: counters are totals since connect, gauges values now. */
export interface BusMetrics {
  /** Counter: events stored by this bus's emits (an `emitMany` of n events counts n). */
  emits: number
  /**
   * Counter: `emit`/`emitMany` calls that rejected, by error code (`{ EVENT_INVALID: 2 }`),
   * whether JavaScript refused them (not an object, not JSON-serializable, a bad option) or
   * the core did; codes never seen are absent.
   */
  emitErrors: Partial<Record<ErrorCode, number>>
  /** Counter: events queued to this bus's subscribers (catch-up and live; one per subscriber). */
  deliveries: number
  /** Gauge: open subscriptions, including the 2 control channels of each scheduler. */
  liveSubscriptions: number
  /** Gauge: emits handed to the store and not yet settled. */
  pendingEmits: number
  /** Counter: subscribers cut off with `SUBSCRIBER_OVERFLOW`. */
  subscriberOverflows: number
  /** Counters: warnings by code (as `warningCounts`). */
  warnings: Record<string, number>
  /** With a scheduler on this bus: its timers; null without one. */
  timers: TimerMetrics | null
}

/**
 * Retention: how long a finished run (or a resolved trigger) is kept. Invalid values reject
 * with `INVALID_ARGUMENT`.
 */
export interface RetentionOptions {
  /**
   * Milliseconds (1 to about 10 years). A flow run's stream (`<prefix>:flow:<id>`) and its
   * run-index entry (what `listRuns` lists) expire this long after its `flow.completed` or
   * `flow.failed` is stored (any kind the reducer ends a run with); a trigger's stream and
   * trigger-index entry this long after its `trigger.fired`, `trigger.timeout` or
   * `trigger.cancelled`. Events appended after that do
   * not extend it. On Redis the stream gets a TTL; the index entry goes when `listRuns` (or
   * an emit of another terminal event) next looks after the time has come.
   */
  finishedRunsMs?: number
}

/** Per-call options of `emit` and `emitMany`. */
export interface EmitOptions {
  /** The stream type, instead of `trigger` for `trigger.*` kinds and `flow` otherwise. */
  type?: string
  /** Retention of this call's terminal events, instead of the bus's `retention`. */
  retention?: RetentionOptions
}

/** Options of `EventBus.connect`. */
export interface ConnectOptions {
  /**
   * `redis://host:port` or `rediss://…`; `redis+cluster://host:port,host:port` (or
   * `rediss+cluster://…`) for a Redis Cluster; absent or empty (and no `cluster`): the embedded
   * store, so `url: process.env.REDIS_URL` works with the variable unset or set to `''`.
   */
  url?: string
  /**
   * A Redis Cluster instead of one Redis: urls of some of its nodes (`['redis://10.0.0.1:7000', …]`);
   * the rest of the topology, MOVED/ASK and failovers are followed. Streams are keyed
   * `<prefix>:<type>:{<id>}`, everything else `{<prefix>}:…`. See README "Scaling out".
   */
  cluster?: string[]
  /** Key prefix, default `nq`. */
  prefix?: string
  /** Approximate cap on entries per stream (Redis `MAXLEN ~`; exact on the embedded store). */
  maxLen?: number
  /** Largest serialized event in bytes, default 1 MiB. */
  maxEventBytes?: number
  /** Bound on every store call in ms (default 5000): past it calls fail with `TIMEOUT`. */
  timeoutMs?: number
  /** Default bound on a subscriber's queue (default 10 000 events). */
  maxQueue?: number
  /** Reduced states `state()` keeps, least recently used evicted first (default 1000; 0: none). */
  stateCacheSize?: number
  /**
   * Redis only. `'local'` (default): an append is acknowledged once the master has it.
   * `'replicated'`: once a replica has it too (`WAIT 1` after each group commit; on a Redis Cluster
   * on each master the batch was written to); when no replica
   * confirms within `replicationTimeoutMs` the emit fails with `NOT_REPLICATED` — the event is
   * stored and published on the master, but a failover now would lose it.
   */
  durability?: 'local' | 'replicated'
  /** With `durability: 'replicated'`: how long to wait for a replica, ms (default 1000, below `timeoutMs`). */
  replicationTimeoutMs?: number
  /**
   * Most emits (calls of `emit`/`emitMany`) handed to the store whose promise has not settled
   * (default 100 000). Past it an emit rejects at once with `BACKPRESSURE` and nothing is
   * queued: memory stays bounded while Redis is slow or away. Wait for some emits to settle
   * (await them, or limit how many you keep in flight) and emit again.
   */
  maxPendingEmits?: number
  /** Retention of finished runs and resolved triggers (see `RetentionOptions`); absent: kept for good. */
  retention?: RetentionOptions
  /**
   * Where warnings go (see `WarningHandler`). Default: one `console.warn` line per code at
   * most every 10 s, saying how many were left out.
   */
  onWarning?: WarningHandler
  /**
   * With no `url` and no `cluster`, `connect` refuses the embedded store in a process that is
   * one of several of a Node cluster (a worker, or a primary with workers — Nitro's
   * `node-cluster` preset, say), with `INVALID_ARGUMENT`: each process would have its own
   * store and never see the others' events. Set `REDIS_URL`/`url` instead, or pass
   * `'per-process'` when separate stores are what you want.
   */
  embedded?: 'per-process'
  /**
   * How emits and live messages cross between Redis and JavaScript (README, "Crossing into
   * JavaScript"). `'auto'` (default, or `LEAN_EVENTS_TRANSPORT` when set): `'loop'` where it
   * can be used, else `'thread'`. `'loop'`: the append connection and the live (Pub/Sub)
   * connection are sockets of Node's own event loop (libuv); an emit is written from the call
   * (the first onto an idle connection at once, the rest of a turn in script calls of at most 64
   * events) and settled, like subscription handlers are called, in the loop iteration its reply
   * is read in. It needs Node on Linux or macOS and one Redis over plain TCP (no TLS,
   * no cluster, not the embedded store); with `durability: 'replicated'` only the live
   * connection uses it. Asked for where it cannot be used, `connect` rejects with
   * `INVALID_ARGUMENT`, naming `options.transport` or `LEAN_EVENTS_TRANSPORT`. `'thread'`:
   * both go through the addon's Tokio worker thread (the only way on Bun, Deno, Windows, TLS,
   * a cluster and the embedded store). This option wins over `LEAN_EVENTS_TRANSPORT`. The
   * scheduler always uses the Tokio thread. `close()` differs: on `'loop'` emits made before it
   * in the same turn are still stored; those that took the Tokio connection (`'thread'`,
   * replicated durability, or while the loop's connection is made again) and were not yet
   * sent are refused with `BUS_CLOSED`. See `EventBus.transport`.
   */
  transport?: 'auto' | 'loop' | 'thread'
}

/** A step of a flow run, as the reducer sees it. */
export interface StepState {
  /**
   * Where the step is. `cancelled`: the run ended (completed, failed or cancelled) before the
   * step finished; a later `step.completed` / `step.failed` still records how it finished.
   */
  status: 'pending' | 'running' | 'completed' | 'failed' | 'retrying' | 'waiting' | 'timeout' | 'cancelled'
  /** The current (or last) attempt, from 1. */
  attempt: number
  /** ISO time the current attempt started. */
  startedAt?: string
  /** ISO time the step completed or finally failed. */
  completedAt?: string
  /** The last error, while failing or retrying. */
  error?: unknown
  /** The step's result, once completed. */
  result?: unknown
  /** What it waits for, while waiting (or what timed out). */
  awaitType?: 'time' | 'event' | 'trigger'
  /** The await's data (`resumeAt`, `eventKind`, `triggerId`, ...), while waiting. */
  awaitData?: unknown
}

/** The reduced state of a flow run. */
export interface FlowState {
  /**
   * Where the run is. `unknown`: the stream has no events (no such run, or its events expired);
   * `running` from its first event until `flow.completed` / `flow.failed` / `flow.cancelled`.
   */
  status: 'unknown' | 'running' | 'completed' | 'failed' | 'cancelled'
  /** The flow's name, from `flow.started`. */
  name?: string
  /** ISO start time. */
  startedAt?: string
  /** ISO end time. */
  completedAt?: string
  /** Duration in ms, from `flow.completed` / `flow.failed`. */
  duration?: number
  /** The error of `flow.failed`. */
  error?: unknown
  /** The reason of `flow.cancelled`. */
  reason?: string
  /** Steps by name. */
  steps: Record<string, StepState>
  /**
   * The awaits of the flow function itself (`ctx.await.*` in `defineFlow`, not in a step) still
   * pending, oldest first; absent when there is none, and always once the run ended.
   */
  waiting?: Array<{ awaitType: 'time' | 'event' | 'trigger'; awaitData?: unknown; since?: string }>
  /** `log` events in order. */
  logs: Array<{ ts: string; step?: string; level?: string; msg?: string }>
}

/** The reduced state of a trigger. */
export interface TriggerState {
  /** Where the trigger is. */
  status: 'registered' | 'fired' | 'timeout' | 'cancelled'
  /** ISO registration time. */
  registeredAt?: string
  /** ISO time it fired. */
  firedAt?: string
  /** `webhook`, `user`, `api`, ... */
  type?: string
  /** What `fire` delivered. */
  payload?: unknown
  /** The flow run it belongs to. */
  correlationId?: string
}

/** Options of `read`. */
export interface ReadOptions {
  /** Only ids greater than this (exclusive). */
  after?: string
  /** Only ids smaller than this (exclusive). */
  before?: string
  /** At most this many, default 100, at most 10 000. */
  limit?: number
  /** Newest first. */
  reverse?: boolean
}

/** Options of `subscribe`. Neither `after` nor `backfill`: live only. */
export interface SubscribeOptions {
  /** Deliver every event after this id first (exclusive). */
  after?: string
  /** Replay the last N events first. */
  backfill?: number
  /** Events queued for this subscriber before it is cut off with `SUBSCRIBER_OVERFLOW`. */
  maxQueue?: number
  /** Handler errors, handler rejections and the error that ends the subscription. */
  onError?: (err: Error, event?: EventRecord) => void
  /** Called when entries after the cursor were trimmed; without it the subscription ends with `STREAM_GAP`. */
  onGap?: (gap: { after: string; firstId: string | null }) => void
}

/** Options of `onKind`. */
export interface OnKindOptions {
  /** Events queued before the subscriber is cut off. */
  maxQueue?: number
  /** Handler errors and the error that ends the subscription. */
  onError?: (err: Error, event?: EventRecord) => void
}

/** A flow run from the run index. */
export interface RunInfo {
  /** Flow run id. */
  id: string
  /** ISO time of its `flow.started` event. */
  startedAt: string
}

/** A live subscription; without a handler, iterate it with `for await`. */
export declare class Subscription implements AsyncIterableIterator<EventRecord> {
  /** Id of the last event delivered. */
  lastId: string | undefined
  /** True once it has caught up with the stream and receives events as they are stored. */
  readonly live: boolean
  /** True once it has ended (unsubscribed, bus closed, or cut off). */
  readonly closed: boolean
  /** Next event; rejects with the error that ended the subscription, if any. */
  next(): Promise<IteratorResult<EventRecord>>
  /** Ends iteration and unsubscribes. */
  return(): Promise<IteratorResult<EventRecord>>
  /** The subscription itself. */
  [Symbol.asyncIterator](): AsyncIterableIterator<EventRecord>
  /** Stop delivery; the channel is released when this was its last subscriber. */
  unsubscribe(): Promise<void>
}

/** A scored index and where its entries' documents live: member m's is the hash `docPrefix + m`. */
export interface IndexRef {
  key: string
  docPrefix: string
}

/**
 * An index entry with its document: a JSON object flattened into a hash, one field per leaf
 * named by its dot path (`stats.total`), the value as the caller encoded it; an empty object
 * at path p is the field `p.` with an empty value.
 */
export interface IndexedDoc {
  member: string
  score: number
  /** `[path, text]` pairs (empty: no document). */
  fields: Array<[string, string]>
}

/** A condition of `indexRead` on a top-level field of the document. */
export interface DocFilter {
  /** A top-level field (no dot). */
  field: string
  /** Accepted texts. */
  anyOf: string[]
  /** Also pass documents with nothing at `field` (no leaf, no subtree). */
  orAbsent?: boolean
}

/**
 * One step of `indexMerge`: set a leaf (what was below it, and any leaf in its path, goes),
 * delete a leaf or whole subtree, or make a path an object (kept when empty).
 */
export type PathOp = ['set', string, string] | ['delete', string] | ['object', string]

/**
 * Keys and channels named in full by the caller, on one Redis or the embedded store: what an
 * adapter for another program's key layout is built on (`lean-events/nvent`). Each call is one
 * atomic step (one Lua script on Redis) and one round trip, except `clear` and a filtered
 * `indexRead` over a long index. A Redis Cluster refuses every call with `UNSUPPORTED`.
 * Keys of every type share one namespace (as on Redis): a call on a key of another type
 * fails with `WRONG_TYPE`.
 */
export declare class Keyspace {
  /**
   * `XADD key [MAXLEN ~ maxLen] * fields`. With `live`, the entry is published on that
   * lean-events stream's live channel in the same step, so `bus.subscribe(live)` delivers it
   * gap-free; `key` must then be that stream's key (`<prefix>:<type>:<id>`). Resolves to the
   * entry id.
   */
  appendEntry(key: string, fields: Array<[string, string]>, options?: { maxLen?: number; live?: StreamRef }): Promise<string>
  /**
   * Entries of a stream: exclusive `after`/`before` ids, inclusive `from`/`to` (Unix ms of the
   * ids), `limit` (default: all), `reverse`, and `where` (only entries whose field holds one of
   * `anyOf`; pages are full).
   */
  readEntries(
    key: string,
    options?: {
      after?: string
      before?: string
      from?: number
      to?: number
      limit?: number
      reverse?: boolean
      where?: { field: string; anyOf: string[] }
    },
  ): Promise<Array<{ id: string; fields: Array<[string, string]> }>>
  /** The string at `key`, or null. */
  get(key: string): Promise<string | null>
  /** Set the string at `key` (replacing a key of any type); `ttlMs` makes it expire. */
  set(key: string, value: string, options?: { ttlMs?: number }): Promise<void>
  /** Add `by` (default 1) to the number at `key` (no number there: 0), keeping its expiry. */
  increment(key: string, by?: number): Promise<number>
  /** Remove keys of any type; resolves to how many existed. */
  delete(...keys: string[]): Promise<number>
  /** Remove every key matching a glob pattern (Redis `MATCH` syntax); resolves to how many. */
  clear(pattern: string): Promise<number>
  /** Add or move an index entry and replace its document (`null`: none). */
  indexPut(index: IndexRef, member: string, score: number, doc?: Array<[string, string]> | null): Promise<void>
  /** An entry with its document, or null. */
  indexGet(index: IndexRef, member: string): Promise<IndexedDoc | null>
  /** Entries by score, highest first (ties: member descending); `offset` (0) and `limit` (50) count entries that pass every filter. */
  indexRead(index: IndexRef, options?: { offset?: number; limit?: number; filters?: DocFilter[] }): Promise<IndexedDoc[]>
  /** Apply `ops` to an entry's document and increment `versionField`, atomically: the new version (0 without one), or null when the entry or its document does not exist. */
  indexMerge(index: IndexRef, member: string, ops: PathOp[], options?: { versionField?: string }): Promise<number | null>
  /** Add `by` (default 1) at a dot path of an entry's document (no number there: 0) and increment `versionField`, atomically: the new value, or null when the entry does not exist. */
  indexIncrement(index: IndexRef, member: string, path: string, by?: number, options?: { versionField?: string }): Promise<number | null>
  /** Remove an entry and its document; true when the entry existed. */
  indexRemove(index: IndexRef, member: string): Promise<boolean>
  /**
   * Every message on a plain channel while connected: lean-events live messages as their
   * records, other JSON messages parsed (anything else is dropped). Listeners of one channel
   * share one Pub/Sub subscription per bus.
   */
  listen(channel: string, handler: (message: any) => unknown, options?: { maxQueue?: number; onError?: (err: Error) => void }): Promise<Subscription>
  /** `PUBLISH channel message`. */
  publish(channel: string, message: string): Promise<void>
}

/** The event bus: append, read, subscribe, list runs — on Redis or in memory. */
export declare class EventBus {
  /** Made by `EventBus.connect` only: `new EventBus()` throws `INVALID_ARGUMENT`. */
  private constructor()
  /** Connect to Redis (`url`), a Redis Cluster (`cluster`) or, with neither, the embedded in-memory store. */
  static connect(options?: ConnectOptions): Promise<EventBus>
  /** True when running on the embedded in-memory store. */
  readonly embedded: boolean
  /**
   * The transport the bus started with: `'loop'` when Node's event loop drives this bus's
   * Redis connections (appends, and the live connection; with `durability: 'replicated'` only
   * the live connection, the appends then go through the Tokio worker), `'thread'` when they go
   * through the Tokio worker (`ConnectOptions.transport`). It stays `'loop'` while the loop's
   * connection is being made again and emits take the Tokio connection meanwhile.
   */
  readonly transport: 'loop' | 'thread'
  /** The key prefix (`nq` unless `prefix` was given). */
  readonly prefix: string
  /** Keys and channels named in full (see `Keyspace`). */
  readonly keyspace: Keyspace
  /**
   * Pub/Sub channels this bus holds (0 once every subscription has ended). A `Scheduler` on
   * this bus holds 2 of them (its instance inbox and the wake-up channel) until `close()`.
   */
  readonly channelCount: number
  /** Open subscriptions, including the 2 a `Scheduler` on this bus holds until `close()`. */
  readonly subscriptionCount: number
  /** How many warnings of each code this bus and what runs on it raised: `{ CODE: count }`. */
  readonly warningCounts: Record<string, number>
  /**
   * Counters and gauges of this bus for monitoring (`lean-events/nitro`'s `metricsHandler`
   * serves them to Prometheus). Counting costs the emit path a few relaxed atomic adds, no
   * lock. With a scheduler on the bus, `timers.pending` asks the store (one call); if that
   * fails it is null, and the rest is still returned. Resolves after `close()` too.
   */
  metrics(): Promise<BusMetrics>
  /** Validate, store, publish and index one event atomically; resolves to its record. */
  emit(event: EventInput, options?: EmitOptions): Promise<EventRecord>
  /** Validate all, then append all in one atomic step; one bad event rejects the batch. */
  emitMany(events: EventInput[], options?: EmitOptions): Promise<EventRecord[]>
  /** Read a range of a stream. */
  read(stream: StreamRef, options?: ReadOptions): Promise<EventRecord[]>
  /**
   * Catch up (`after` / `backfill`), then deliver live events to `handler`, gap-free. A handler
   * that returns a promise gets the next event once that promise settled (in order, one at a
   * time; a rejection goes to `onError`); events arriving meanwhile wait in the subscription's
   * queue, bounded by `maxQueue` (past it: `SUBSCRIBER_OVERFLOW`).
   */
  subscribe(stream: StreamRef, handler: (event: EventRecord) => unknown, options?: SubscribeOptions): Promise<Subscription>
  /** The same, consumed with `for await (const event of sub)`. */
  subscribe(stream: StreamRef, options?: SubscribeOptions): Promise<Subscription>
  /** Every event of one kind, from every stream and every instance, while connected (live only). */
  onKind(kind: string, handler: (event: EventRecord) => unknown, options?: OnKindOptions): Promise<Subscription>
  /** The same, consumed with `for await`. */
  onKind(kind: string, options?: OnKindOptions): Promise<Subscription>
  /**
   * The reduced state of a stream (cached; a repeated call only applies newer events). A flow
   * stream with no events (a run that never existed, or whose events expired) resolves to
   * `{ status: 'unknown', steps: {}, logs: [] }`, never to a running run; the HTTP state route
   * answers 404 for it.
   */
  state(stream: StreamRef): Promise<FlowState | TriggerState>
  /** Runs of a flow, newest first (default limit 50). */
  listRuns(flowName: string, options?: { limit?: number; offset?: number }): Promise<RunInfo[]>
  /**
   * Put a run in a flow's run index at `startedAtMs` (Unix ms, a whole number ≥ 0), or move
   * it there (one entry per run); `listRuns` lists it. For code that indexes runs itself;
   * `flow.started` / `flow.start` events are indexed by their emit. `INVALID_ARGUMENT` for a
   * bad name, id or time.
   */
  indexRun(flowName: string, runId: string, startedAtMs: number): Promise<void>
  /** End every subscription and connection; later calls reject with `BUS_CLOSED`. */
  close(): Promise<void>
}

/** Back-off between attempts. */
export interface BackoffPolicy {
  /** `fixed`: always `delayMs`; `exponential` (default): `delayMs * 2^(attempt-1)`. */
  type?: 'fixed' | 'exponential'
  /** Base delay in ms (default 1000). */
  delayMs?: number
  /** Upper bound of the delay in ms. */
  maxDelayMs?: number
  /** Random spread 0-1: the delay is multiplied by a factor in [1 - jitter, 1 + jitter]. */
  jitter?: number
}

/** When a failed step runs again. */
export interface RetryPolicy {
  /** Total attempts (default 1: no retry). */
  attempts?: number
  /** The back-off. */
  backoff?: BackoffPolicy
  /** Only errors whose `name` or `code` is listed are retried. */
  retriableErrors?: string[]
}

/** A piece of work: one attempt of one job (given to `dispatch`, run by `execute`). */
export interface StepWork {
  /** The job (one `run` call). */
  jobId: string
  /** Step name. */
  step: string
  /** Flow run id. */
  flow: string
  /** The step's input. */
  input: unknown
  /** Attempt number, from 1. */
  attempt: number
  /** True when the handler runs again after its process died: resolved awaits return at once. */
  replay: boolean
}

/** What a handler gets besides its input. */
export interface StepContext {
  /** Flow run id. */
  flow: string
  /** Step name. */
  step: string
  /** Attempt number, from 1. */
  attempt: number
  /** The job id. */
  jobId: string
  /** True when this run replays an attempt another process started. */
  replay: boolean
  /** Emit a `log` event for this step. */
  log(level: string, msg: string, data?: unknown): Promise<EventRecord>
  /** Emit an event of any kind to this flow, for this step. */
  emit(kind: string, data?: unknown): Promise<EventRecord>
  /** Durable waits. Each resolves once, even across process deaths (then by replay). */
  await: {
    /**
     * Wait `ms` milliseconds, or until a Date. The first call fixes the time: a replay of the
     * step (after a take-over) resumes when that call said, not `ms` after the replay. A
     * negative `ms` or a Date in the past resolves at once (so a delay computed as
     * `deadline - Date.now()` replays after the deadline); a negative `timeoutMs` of `event`
     * and `trigger` rejects with `INVALID_ARGUMENT`.
     */
    time(when: number | Date): Promise<void>
    /** Wait for an event of `kind` matching `match` (dotted paths → values), stored after this call, on any instance. Rejects with `AWAIT_TIMEOUT` after `timeoutMs` (an integer ≥ 0; default: no timeout). */
    event(spec: { kind: string; match?: Record<string, unknown>; timeoutMs?: number }): Promise<EventRecord>
    /** Register a trigger (id: 128 random bits) and get a handle to wait for `scheduler.fire(id, payload)`; `timeoutMs`: an integer ≥ 0 (default: no timeout). */
    trigger(spec?: { type?: string; payload?: unknown; timeoutMs?: number }): Promise<{ id: string; wait(): Promise<unknown> }>
  }
}

/** What a flow function gets besides its input. */
export interface FlowContext {
  /** The run id (the id of its stream). */
  runId: string
  /** Same as `runId`. */
  flow: string
  /** The flow's name. */
  name: string
  /** True when the function runs again after a crash, deploy or take-over (finished calls replay). */
  replay: boolean
  /**
   * A durable step: `fn` runs until it returns (retried by `retry`, each back-off a durable
   * timer), its result (JSON) is recorded, and a replay returns the record without running `fn`.
   * A step that failed for good throws (also on a replay) a `LeanEventsError` with its
   * `message`, `code` (what the step threw, `STEP_FAILED` when it had none), `step` and `cause`
   * (what it threw); rethrown, it fails the run with what the step threw. Calls are matched by order: a replay that calls another step or await at a
   * position rejects with `REPLAY_MISMATCH` and the run fails.
   */
  step<R = any>(name: string, fn: (info: { attempt: number; runId: string; step: string }) => R | Promise<R>, options?: { retry?: RetryPolicy }): Promise<R>
  /** `Promise.all` over steps (or functions returning them), started in array order. */
  parallel<T extends readonly unknown[]>(items: T): Promise<unknown[]>
  /** Emit a `log` event to the run. */
  log(level: string, msg: string, data?: unknown): Promise<EventRecord>
  /** Emit an event of any kind to the run. */
  emit(kind: string, data?: unknown): Promise<EventRecord>
  /** The durable awaits of `StepContext`, at flow level (numbered with the steps, replayed the same way). */
  await: StepContext['await']
}

/** Options of `new Scheduler`. */
export interface SchedulerOptions {
  /** Stable id of this instance (default: random). */
  instanceId?: string
  /** How long this instance counts as alive after its last heartbeat, in ms (an integer ≥ 100, default 5000). */
  leaseMs?: number
  /**
   * Most step handlers this instance runs at once (an integer ≥ 1, default 100: the
   * constructor throws `INVALID_ARGUMENT` for less); more work
   * waits its turn. A handler parked in `ctx.await.*` does not count while it waits (it takes
   * a turn again, ahead of new work, when the await resolves); one waiting on anything else
   * (another `run()`, say) does. With `dispatch`, a turn lasts from the hand-out of the work
   * until `execute` records its outcome.
   */
  concurrency?: number
  /** Hand work to your queue instead of running it here; call `execute(work)` to run it. */
  dispatch?: (work: StepWork) => void
}

/** Steps with retries and durable awaits, resumable on any instance that defines them. */
export declare class Scheduler {
  constructor(bus: EventBus, options?: SchedulerOptions)
  /** This instance's id, once started. */
  readonly instanceId: string | undefined
  /** Resolves once the instance is registered in the store. */
  ready(): Promise<this>
  /**
   * Define a step's handler and retry policy on this instance. What the handler throws decides
   * the retry: `retriable: false` fails the step at once; `retryAfter` (ms, or a `Date`: retry
   * then) replaces the back-off. Times past 9999-12-31T23:59:59.999Z (a huge `retryAfter`,
   * `delayMs`, `timeoutMs` or `await.time`) are kept at that date, never wrapped around.
   * Defining a step again replaces its handler and policy; a name defined as a flow throws
   * `INVALID_ARGUMENT` (steps and flows share one namespace).
   */
  define<I = any, R = any>(step: string, handler: (input: I, ctx: StepContext) => R | Promise<R>, options?: { retry?: RetryPolicy }): this
  /** Run one step of a flow, retries and awaits included; rejects with `STEP_FAILED` when it fails for good. */
  run<R = any>(step: string, options: { flow: string; input?: unknown; jobId?: string }): Promise<R>
  /**
   * Define a durable flow on this instance (flows and steps share one namespace). The engine
   * writes `flow.started`, `flow.completed` {result, duration ms} and `flow.failed` {error,
   * duration ms} once per run; `close()` and process exit leave runs running, to be continued
   * by any instance that defines the flow (it runs `fn` again: finished steps replay).
   * Defining a flow again replaces its function; a name defined as a step throws
   * `INVALID_ARGUMENT`.
   */
  defineFlow<I = any, R = any>(name: string, fn: (input: I, ctx: FlowContext) => R | Promise<R>, options?: {}): this
  /** Start a run; resolves to its id (random unless `id` is given) once `flow.started` is stored. Rejects with `JOB_EXISTS` for a used id. */
  startFlow(name: string, options?: { id?: string; input?: unknown }): Promise<string>
  /**
   * Wait for a run to end, from any instance: its result, or a rejection with `FLOW_FAILED`
   * (`err.error`: what the flow threw), `FLOW_CANCELLED` (`err.reason`) or `FLOW_NOT_FOUND`.
   * Like a pending `run()`, it rejects with `BUS_CLOSED` when this scheduler or its bus closes
   * while it waits (the run itself goes on elsewhere), and at once when called after that.
   */
  result<R = any>(runId: string): Promise<R>
  /**
   * Cancel a running run: `flow.cancelled` {reason, duration}; its pending awaits, timers and
   * triggers are cancelled (a trigger's `fire` then rejects with `TRIGGER_CANCELLED`). Rejects
   * with `FLOW_ENDED` when the run has ended, `FLOW_NOT_FOUND` when there is none.
   */
  cancelFlow(runId: string, reason?: string): Promise<void>
  /** Start a new run of the same flow with the same input; its `flow.started` has `correlationId: runId`. Resolves to the new id. */
  rerunFlow(runId: string): Promise<string>
  /** Fire a trigger; rejects with `TRIGGER_NOT_FOUND` (unknown or expired), `TRIGGER_RESOLVED` or `TRIGGER_CANCELLED`. */
  fire(triggerId: string, payload?: unknown): Promise<void>
  /**
   * Cancel a pending trigger; its `wait()` rejects with `TRIGGER_CANCELLED`. Rejects with
   * `TRIGGER_NOT_FOUND` (unknown or expired) or `TRIGGER_RESOLVED` (it was fired, timed out or
   * cancelled already; a `fire` after a cancel rejects with `TRIGGER_CANCELLED` instead).
   */
  cancel(triggerId: string, reason?: string): Promise<void>
  /**
   * Run one piece of work handed to this instance's `dispatch`. Call it on that same instance:
   * a job's outcome is recorded only by the instance that owns it.
   */
  execute(work: StepWork): Promise<void>
  /**
   * Stop this instance; its unfinished jobs are resumed elsewhere once its lease ends. The bus
   * stays open (and keeps Node alive) until `bus.close()`, which also closes its schedulers.
   */
  close(): Promise<void>
}
