/* lean-events/nitro: wiring for Nitro 2 / h3 1.x apps. */
import type { EventHandler, H3Event } from 'h3'
import type {
  ConnectOptions,
  EventBus,
  EventInput,
  EventRecord,
  RunInfo,
  Scheduler,
  SchedulerOptions,
  StreamRef,
} from '../index.js'

/** The process's shared instance. */
export interface LeanEvents {
  bus: EventBus
  /**
   * This process's scheduler instance. In the primary process of a Node cluster (Nitro's
   * `node-cluster` preset), which only forks the workers that serve the app, none is started:
   * Nitro runs the app's plugins there too, so `define()` and `defineFlow()` are accepted and
   * dropped (the workers run the steps and flows), and `run`, `fire`, `cancel`, `execute`,
   * `startFlow`, `result`, `cancelFlow` and `rerunFlow` reject with `INVALID_ARGUMENT`.
   */
  scheduler: Scheduler
  /** The key prefix in use (`nq` unless configured). */
  prefix: string
}

/** Options of the shared instance: any `EventBus.connect` option, plus the scheduler's. */
export interface LeanEventsOptions extends ConnectOptions {
  scheduler?: SchedulerOptions
}

/**
 * Set the shared instance's options before its first use. Without it: `REDIS_URL` (or
 * `NUXT_QUEUE_REDIS_URL`), else the embedded store; prefix from `LEAN_EVENTS_PREFIX`, else `nq`.
 */
export declare function configureLeanEvents(options?: LeanEventsOptions): void

/** One `{ bus, scheduler }` per process, connected on first use (a failed connect is retried on the next call). */
export declare function useLeanEvents(): Promise<LeanEvents>

/** Close the shared scheduler and bus (idempotent); the next `useLeanEvents()` reconnects. */
export declare function closeLeanEvents(): Promise<void>

/** A Nitro plugin: `export default defineNitroPlugin(leanEventsPlugin)`: connects at startup, closes on `close`. */
export declare function leanEventsPlugin(nitroApp: { hooks: { hook(name: 'close', fn: () => unknown): unknown } }): void

/** What an `authorize` hook is asked about. */
export interface AuthorizeTarget {
  /** Stream type (`flow`, `trigger`, ...); `flows` for a run list. */
  type: string
  /** Stream id, or the flow name for a run list. */
  id: string
}

/** Return `false` (or throw) to answer 403. */
export type Authorize = (event: H3Event, target: AuthorizeTarget) => boolean | void | Promise<boolean | void>

/**
 * The wire format of a handler: `lean-events` (default), or `nuxt-queue`, the shapes of the
 * seed-era Nitro module (nuxt-queue 0.1.x) that its UI reads. Anything else: the factory throws
 * `INVALID_ARGUMENT`.
 */
export type HandlerFormat = 'lean-events' | 'nuxt-queue'

/** Options every handler takes. */
export interface HandlerOptions {
  /** Per-request authorization; `false` or a throw → 403. */
  authorize?: Authorize
  /** A bus to use instead of the shared one. */
  bus?: EventBus
}

/** Options of the handlers that speak more than one format. */
export interface FormatOptions {
  /** Default `lean-events`. */
  format?: HandlerFormat
}

/**
 * `GET /metrics`: `bus.metrics()` in Prometheus' text exposition format (content type
 * `text/plain; version=0.0.4`), written by prom-client from a registry of the handler's own
 * (the global one is left alone). Names: `lean_events_emits_total`,
 * `lean_events_emit_errors_total{code}`, `lean_events_deliveries_total`,
 * `lean_events_live_subscriptions`, `lean_events_pending_emits`,
 * `lean_events_subscriber_overflows_total`, `lean_events_warnings_total{code}`; with a
 * scheduler on the bus also `lean_events_timers_pending` (NaN when the store could not be
 * asked), `lean_events_timers_fired_total` and `lean_events_timer_lateness_seconds{quantile="0.5"|"0.99"}`.
 * `authorize` is asked with `{ type: 'metrics', id: 'bus' }`.
 */
export declare function metricsHandler(options?: HandlerOptions): EventHandler

/** Options of `eventStreamHandler`. */
export interface EventStreamOptions extends HandlerOptions, FormatOptions {
  /** Fixed stream type; default: the `:type` route parameter. */
  type?: string
  /** The stream id from the request; default: the `:id` route parameter. An h3 error it throws (`createError({ statusCode: 404 })`) keeps its 4xx status. */
  id?: (event: H3Event) => string | Promise<string>
  /** Without a cursor, replay only the last N events (default: the whole stream). */
  backfill?: number
  /** Heartbeat comment interval in ms (default 15 000, or `LEAN_EVENTS_SSE_HEARTBEAT_MS`); a whole number above 0, else the factory throws `INVALID_ARGUMENT`. */
  heartbeatMs?: number
  /** The `retry:` reconnection delay sent to the browser, ms (default 1000); a whole number above 0. */
  retryMs?: number
  /** Events queued for a slow client before it is cut off (it then reconnects with Last-Event-ID). */
  maxQueue?: number
  /**
   * `lean-events` format: also name each message after the event's kind (`event: step.started`),
   * for pages that listen per kind with `addEventListener`; default `false` (no name: every
   * message reaches `onmessage`). A non-boolean: the factory throws `INVALID_ARGUMENT`.
   */
  namedEvents?: boolean
}

/**
 * `GET /api/_events/:type/:id/stream`: Server-Sent Events, backfill then live. Each event is
 * one message: `id:` its stream id and `data:` the record as JSON, with no event name (so
 * `EventSource.onmessage` gets every kind; `namedEvents: true` adds `event:` its kind). Resumes
 * after the `Last-Event-ID` header (or `?after=`); a cursor older than the trimmed entries gets
 * an `event: gap` message (`{ after, firstId }`, no `id:`) first; heartbeat comments;
 * unsubscribes when the client goes away; ends when the server starts closing.
 *
 * `format: 'nuxt-queue'`: each event is `id:` its stream id and
 * `data: {"v":1,"event":<type>,"record":<ModuleRecord>}`, with no event name (the module's UI
 * reads `onmessage`); resumes after `Last-Event-ID`, else `?fromId=` (exclusive).
 */
export declare function eventStreamHandler(options?: EventStreamOptions): EventHandler

/**
 * `GET /api/_events/:type/:id` → `{ type, id, state }` (404 when the stream is empty).
 *
 * `format: 'nuxt-queue'` → `{ type, id, eventCount, events: ModuleRecord[] }`, oldest first,
 * 200 for an empty stream too; `?fromId=` (exclusive) and `?limit=` (1-10000, default 1000).
 */
export declare function stateHandler(options?: HandlerOptions & FormatOptions & { type?: string }): EventHandler

/** A flow run's statuses (the flow reducer's): the values the runs route's `?status=` accepts. */
export declare const FLOW_STATUSES: readonly ['running', 'completed', 'failed', 'cancelled']
/** How many runs of the index one `?status=` request reads at most, unless `maxScan` says otherwise: 1000. */
export declare const RUNS_MAX_SCAN: number

/** The runs route's answer. */
export interface RunsBody {
  name: string
  /**
   * Newest first; `status` (and `completedAt` once finished) with `?state=1` or `?status=`;
   * `unknown` for a run in the index whose stream holds no events (expired, or indexed by hand).
   */
  runs: Array<RunInfo & { status?: 'running' | 'completed' | 'failed' | 'cancelled' | 'unknown'; completedAt?: string }>
  /** The `offset` that reads on from here; null when the index holds nothing further. */
  nextOffset: number | null
  /** With `?status=`: the status asked for. */
  status?: 'running' | 'completed' | 'failed' | 'cancelled'
  /** With `?status=`: how many runs of the index this request read (at most `maxScan`). */
  scanned?: number
}

/**
 * `GET /api/_flows/:name/runs?limit=&offset=&state=1` → {@link RunsBody}, newest first;
 * `limit` 1-1000 (default `options.limit`, else 50), `offset` the position in the run index.
 *
 * `?status=running|completed|failed|cancelled`: the newest runs with that status from `offset` on. The
 * run index is read newest first, 100 runs (and their states) at a time, until `limit` runs
 * match or `maxScan` runs (default 1000, {@link RUNS_MAX_SCAN}) were read: one request costs
 * at most `maxScan` state reads. `scanned` says how many were read and `nextOffset` where the
 * next request goes on, so a client pages through every match; a page may hold fewer than
 * `limit` runs, even none, while `nextOffset` is not null. Any other status → 400
 * `INVALID_ARGUMENT` naming the accepted ones. Offsets count from the newest run: runs started
 * between two requests shift them (a run may be listed twice, none is skipped).
 *
 * `format: 'nuxt-queue'`: the module's `GET /api/_events/:type/list?name=&limit=` →
 * `{ type, name, count, items: [{ id, timestamp, createdAt }] }`, newest first; `limit` as the
 * module reads it (not a positive number → 50, at most 100); `flow` with a `name` lists that
 * flow's runs, anything else is an empty list.
 */
export declare function runsHandler(
  options?: HandlerOptions &
    FormatOptions & {
      name?: string
      type?: string
      limit?: number
      withState?: boolean
      /** With `?status=`: runs of the index read per request at most (default 1000); INVALID_ARGUMENT unless a whole number ≥ 1. */
      maxScan?: number
    },
): EventHandler

/**
 * `POST /api/_triggers/:id` with the JSON payload as body → `scheduler.fire`: 200
 * `{ id, status: 'fired' }`, 404 unknown or expired, 409 already resolved, 400 bad id or body,
 * 413 body over `maxBodyBytes` (default 1 MiB) or over the event size limit.
 */
export declare function triggerHandler(options?: HandlerOptions & { scheduler?: Scheduler; maxBodyBytes?: number }): EventHandler

/**
 * `POST /api/_triggers/:id/cancel`, optional JSON body `{ reason }` → `scheduler.cancel`: 200
 * `{ id, status: 'cancelled' }` (the waiting step's `wait()` rejects with `TRIGGER_CANCELLED`),
 * 404 unknown or expired, 409 already resolved, 400 bad id or body.
 */
export declare function cancelTriggerHandler(options?: HandlerOptions & { scheduler?: Scheduler }): EventHandler

/** Error bodies of every handler. */
export interface ErrorBody {
  statusCode: number
  /** `INVALID_ARGUMENT`, `FORBIDDEN`, `NOT_FOUND`, `TRIGGER_NOT_FOUND`, `TRIGGER_RESOLVED`, `PAYLOAD_TOO_LARGE`, `BODY_INVALID`, `STORE_UNAVAILABLE`, `INTERNAL`, ... */
  code: string
  message: string
}

/** HTTP status of each error code. */
export declare const STATUS_BY_CODE: Record<string, number>

/** An error that becomes an HTTP response. */
export declare class HttpError extends Error {
  constructor(statusCode: number, code: string, message: string)
  statusCode: number
  code: string
}

/**
 * A record with the seed-era module's fields beside the envelope's (nuxt-queue 0.1.x reads
 * `{ id, ts, type, runId, flowName, data, stepName?, stepId?, attempt? }`).
 */
export type ModuleRecord = EventRecord & {
  /** The kind. */
  type: string
  /** The flow run: `flow`, else the subject. */
  runId: string
  /** `meta.flowName` (for a run start also `data.name`); `''` when unknown. */
  flowName: string
  /** The step. */
  stepName?: string
  /** `meta.stepId`. */
  stepId?: unknown
  /** `meta.attempt`. */
  attempt?: number
}

/** A record as the module's adapter returns it: also the stream name it was asked with. */
export type AdapterRecord = ModuleRecord & { stream: string }

/** An event as the seed-era module writes it (`stepName` may hold spaces, `type` capitals). */
export interface ModuleEvent {
  type: string
  runId?: string
  flowName?: string
  stepName?: string
  stepId?: string
  attempt?: number
  data?: unknown
}

/** A run in the module's run index. */
export interface IndexEntry {
  id: string
  /** Start time, Unix ms. */
  score: number
}

/** The Nitro module's stream adapter (the seed-era `StreamAdapter`, with its index). */
export interface StreamAdapter {
  append(stream: string | StreamRef, event: (Partial<EventInput> | ModuleEvent) & Record<string, unknown>): Promise<AdapterRecord>
  read(stream: string | StreamRef, options?: { limit?: number; fromId?: string; direction?: 'forward' | 'backward' }): Promise<AdapterRecord[]>
  subscribe(stream: string | StreamRef, onEvent: (event: AdapterRecord) => void): Promise<{ unsubscribe(): unknown }>
  /**
   * ZADD into the run index `<prefix>:flows:<flowName>` (the only index kept; another key is
   * `INVALID_ARGUMENT`): run `id` at `score` ms (a number ≥ 0, whole ms kept).
   */
  indexAdd(key: string, id: string, score: number): Promise<void>
  /** The run index `key`, newest first; `limit` 50 unless given (at most 10 000), `offset` 0. */
  indexRead(key: string, options?: { offset?: number; limit?: number }): Promise<IndexEntry[]>
  close(): Promise<void>
}

/** The Nitro module's in-process bus (the seed-era `publish` / `subscribeRunId` / `onType` with it). */
export interface BusAdapter {
  /**
   * Store the event in the stream of its subject, else its `runId`, else `ctx.flowId`, and
   * hand it (as given) to this process's `subscribeRunId` / `onType` handlers before returning.
   * A module event (`type`, no `kind`) with no run id is delivered but not stored: `null`.
   */
  publish(event: (Partial<EventInput> | ModuleEvent) & Record<string, unknown>, ctx?: { flowId?: string }): Promise<ModuleRecord | null>
  /** `publish`, by the name the module's event manager calls it. */
  publishBus(event: (Partial<EventInput> | ModuleEvent) & Record<string, unknown>, ctx?: { flowId?: string }): Promise<ModuleRecord | null>
  /** Events this process publishes for one run id, at once; returns the unsubscribe function. */
  subscribeRunId(runId: string, handler: (event: Record<string, unknown>) => unknown): () => void
  /** Events this process publishes of one type (kind), at once; returns the unsubscribe function. */
  onType(type: string, handler: (event: Record<string, unknown>) => unknown): () => void
  /** Live stored events of one subject (a flow, or `{ type }`), from every instance; returns the unsubscribe function. */
  subscribeSubject(subject: string, handler: (event: ModuleRecord) => void, options?: { type?: string }): () => void
  /** Live stored events of one kind, from every subject and instance; returns the unsubscribe function. */
  onKind(kind: string, handler: (event: ModuleRecord) => void): () => void
}

/** Options of the adapter factories. */
export interface AdapterOptions<T> {
  /** The module's own factory, used untouched unless lean-events is enabled. */
  legacy?: () => T
  /** Default: `process.env.LEAN_EVENTS === '1'`. */
  enabled?: boolean
  /** A bus to use instead of the shared one. */
  bus?: EventBus
  /** Key prefix of stream names like `nq:flow:<id>` (default: the shared instance's). */
  prefix?: string
}

/** lean-events when `LEAN_EVENTS=1`, else `legacy()`. */
export declare function createStreamAdapter<T = StreamAdapter>(options?: AdapterOptions<T>): StreamAdapter | T

/** lean-events when `LEAN_EVENTS=1`, else `legacy()`. */
export declare function createBusAdapter<T = BusAdapter>(options?: AdapterOptions<T>): BusAdapter | T

/** `{ type, id }` from `nq:<type>:<id>`, `{ type, id }`, or a bare subject (`flow`, or `trigger` for `trigger.*` kinds). */
export declare function parseStreamName(stream: string | StreamRef, prefix?: string, kind?: string): StreamRef

/**
 * An event in the module's shapes (this envelope, or `type`/`runId`/`flowName`/`stepName`/
 * `stepId`/`attempt`) as an `EventInput`; `flowName`, `stepId` and `attempt` go to `meta`.
 */
export declare function toEventInput(event: Record<string, unknown>, subject?: string): EventInput

/** A record with the seed-era module's fields beside the envelope's. */
export declare function toModuleRecord(record: EventRecord): ModuleRecord
