/* lean-events/nitro: wiring for Nitro 2 / h3 1.x apps. */
import type { EventHandler, H3Event } from 'h3'
import type {
  ConnectOptions,
  EventBus,
  EventInput,
  EventRecord,
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
   * reading it there throws `INVALID_ARGUMENT`.
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

/** Options every handler takes. */
export interface HandlerOptions {
  /** Per-request authorization; `false` or a throw → 403. */
  authorize?: Authorize
  /** A bus to use instead of the shared one. */
  bus?: EventBus
}

/** Options of `eventStreamHandler`. */
export interface EventStreamOptions extends HandlerOptions {
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
}

/**
 * `GET /api/_events/:type/:id/stream`: Server-Sent Events, backfill then live. Each event is
 * one message: `id:` its stream id, `event:` its kind, `data:` the record as JSON. Resumes
 * after the `Last-Event-ID` header (or `?after=`); a cursor older than the trimmed entries gets
 * an `event: gap` message (`{ after, firstId }`, no `id:`) first; heartbeat comments;
 * unsubscribes when the client goes away; ends when the server starts closing.
 */
export declare function eventStreamHandler(options?: EventStreamOptions): EventHandler

/** `GET /api/_events/:type/:id` → `{ type, id, state }` (404 when the stream is empty). */
export declare function stateHandler(options?: HandlerOptions & { type?: string }): EventHandler

/**
 * `GET /api/_flows/:name/runs?limit=&offset=&state=1` → `{ name, runs: [{ id, startedAt, status? }] }`,
 * newest first.
 */
export declare function runsHandler(options?: HandlerOptions & { name?: string; limit?: number; withState?: boolean }): EventHandler

/**
 * `POST /api/_triggers/:id` with the JSON payload as body → `scheduler.fire`: 200
 * `{ id, status: 'fired' }`, 404 unknown or expired, 409 already resolved, 400 bad id or body,
 * 413 body over `maxBodyBytes` (default 1 MiB) or over the event size limit.
 */
export declare function triggerHandler(options?: HandlerOptions & { scheduler?: Scheduler; maxBodyBytes?: number }): EventHandler

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

/** A record as the module's adapter returns it: the envelope plus the stream name it was asked with. */
export type AdapterRecord = EventRecord & { stream: string }

/** The Nitro module's stream adapter. */
export interface StreamAdapter {
  append(stream: string | StreamRef, event: Partial<EventInput> & Record<string, unknown>): Promise<AdapterRecord>
  read(stream: string | StreamRef, options?: { limit?: number; fromId?: string; direction?: 'forward' | 'backward' }): Promise<AdapterRecord[]>
  subscribe(stream: string | StreamRef, onEvent: (event: AdapterRecord) => void): Promise<{ unsubscribe(): unknown }>
  close(): Promise<void>
}

/** The Nitro module's in-process bus. */
export interface BusAdapter {
  /** Store the event (every subscriber on every instance receives it); `ctx.flowId` is its subject when the event names none. */
  publish(event: Partial<EventInput> & Record<string, unknown>, ctx?: { flowId?: string }): Promise<EventRecord>
  /** Live events of one subject (a flow, or `{ type }`); returns the unsubscribe function. */
  subscribeSubject(subject: string, handler: (event: EventRecord) => void, options?: { type?: string }): () => void
  /** Live events of one kind, from every subject; returns the unsubscribe function. */
  onKind(kind: string, handler: (event: EventRecord) => void): () => void
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

/** An event in the module's shapes (this envelope, or `type`/`runId`/`flowName`/`stepName`/`attempt`) as an `EventInput`. */
export declare function toEventInput(event: Record<string, unknown>, subject?: string): EventInput
