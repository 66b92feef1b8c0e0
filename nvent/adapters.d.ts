// Types of lean-events/nvent/adapters: nvent 0.5's StoreAdapter and StreamAdapter shapes, with
// no dependency on nvent itself.

import type { EventBus, ConnectOptions } from '../index.js'

/** A stored event as nvent reads it: every field appended, plus `id` and `ts` (ms). */
export interface EventRecord {
  id: string
  ts: number
  type: string
  runId?: string
  flowName?: string
  stepName?: string
  stepId?: string
  attempt?: number
  data?: any
  /** Fields appended besides these (e.g. `triggerName`) are kept. */
  [field: string]: any
}

export interface EventReadOptions {
  /** Only these types; pages are full (the filter applies before `limit`). */
  types?: string[]
  /** Exclusive stream id (need not exist). */
  after?: string
  /** Exclusive stream id. */
  before?: string
  /** Inclusive, Unix ms (of the entry ids). */
  from?: number
  /** Inclusive, Unix ms. */
  to?: number
  /** Default: every entry. */
  limit?: number
  order?: 'asc' | 'desc'
}

export interface IndexEntry {
  id: string
  score: number
  /** Absent when the entry has none. `version` counts merges and increments. */
  metadata?: Record<string, any>
}

/** nvent 0.5's StoreAdapter (no `indexAdd`: nvent's scheduler then locks through `kv`). */
export interface LeanStoreAdapter {
  close(): Promise<void>
  stream: {
    /** Resolves to `{ ...event, ts, id }`. */
    append(subject: string, event: Omit<EventRecord, 'id' | 'ts'>): Promise<EventRecord>
    read(subject: string, opts?: EventReadOptions): Promise<EventRecord[]>
    /** Events appended from now on, gap-free (subjects under the bus prefix). */
    subscribe(subject: string, onEvent: (event: EventRecord) => void): Promise<{ id: string; subject: string; unsubscribe(): Promise<void> }>
    /** True when the stream existed. */
    delete(subject: string): Promise<boolean>
  }
  kv: {
    get<T = any>(key: string): Promise<T | null>
    /** `ttl` in seconds. */
    set<T = any>(key: string, value: T, ttl?: number): Promise<void>
    delete(key: string): Promise<void>
    /** Deletes every key (of any type) matching a glob pattern; resolves to how many. */
    clear(pattern: string): Promise<number>
    increment(key: string, by?: number): Promise<number>
  }
  index: {
    /** Adds or replaces the entry and its metadata (`version: 0` unless given). */
    add(key: string, id: string, score: number, metadata?: Record<string, any>): Promise<void>
    get(key: string, id: string): Promise<IndexEntry | null>
    /** Highest score first; `offset` 0, `limit` 50; `filter` on top-level metadata (array: any of). */
    read(key: string, opts?: { offset?: number; limit?: number; filter?: Record<string, any> }): Promise<IndexEntry[]>
    /** Deep merge in one atomic step (null deletes a subtree; dotted keys are refused); false when the entry has no metadata. */
    update(key: string, id: string, metadata: Record<string, any>): Promise<boolean>
    /** `update`, tried again (10·2^i ms apart) only while the entry does not exist; then throws `Failed to update index after N retries`. */
    updateWithRetry(key: string, id: string, metadata: Record<string, any>, maxRetries?: number): Promise<void>
    /** Adds at a dotted path and bumps `version`; throws `INDEX_ENTRY_NOT_FOUND` for a missing entry. */
    increment(key: string, id: string, field: string, increment?: number): Promise<number>
    delete(key: string, id: string): Promise<boolean>
  }
}

export interface StreamEvent {
  type?: string
  data?: any
  metadata?: Record<string, any>
  timestamp?: number
  [field: string]: any
}

export interface SubscriptionHandle {
  id: string
  topic: string
  unsubscribe(): Promise<void>
}

/** nvent 0.5's StreamAdapter. */
export interface LeanStreamAdapter {
  init(): Promise<void>
  /** `PUBLISH topic JSON.stringify(event)`. */
  publish(topic: string, event: StreamEvent): Promise<void>
  /** Handlers are not awaited; `opts` are ignored (as by nvent's adapters). */
  subscribe(topic: string, handler: (event: any) => void | Promise<void>, opts?: { group?: string; filter?: string | RegExp; fromBeginning?: boolean }): Promise<SubscriptionHandle>
  unsubscribe(handle: SubscriptionHandle): Promise<void>
  /** Topics this process has handlers on. */
  listTopics(): Promise<string[]>
  /** Handlers this process has on a topic. */
  getSubscriptionCount(topic: string): Promise<number>
  shutdown(): Promise<void>
}

export interface AdapterOptions {
  /** `redis://…`; with neither `url` nor `bus`: the embedded store (one process). */
  url?: string
  /** nvent's key prefix (`nvent.store.prefix`), default `nvent`. */
  prefix?: string
  /** Share an existing bus (or a promise of one) instead of connecting one. */
  bus?: EventBus | Promise<EventBus>
  /** With `bus`: close it once every adapter given it with `closeBus: true` has closed. */
  closeBus?: boolean
  /** More `EventBus.connect` options for a bus of the adapter's own. */
  connect?: Omit<ConnectOptions, 'url' | 'prefix'>
}

export interface StoreAdapterOptions extends AdapterOptions {
  /** `MAXLEN ~` of every stream, default 10000; 0: no trimming. */
  streams?: { trim?: { maxLen?: number } }
}

export declare function createStoreAdapter(options?: StoreAdapterOptions): LeanStoreAdapter
export declare function createStreamAdapter(options?: AdapterOptions): LeanStreamAdapter
/** `{ host, port, username, password, db }` (nvent's `connections.redis`) as a `redis://` url. */
export declare function redisUrl(connection?: { url?: string; host?: string; port?: number; username?: string; password?: string; db?: number } | null): string | undefined
