/* lean-events/vue: Vue 3 composables over lean-events/nitro's routes (vue is a peer dependency). */
import type { MaybeRefOrGetter, Ref, ShallowRef } from 'vue'
import type { EventRecord, FlowState, RunInfo, StreamRef } from '../index.js'

export type StreamStatus = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed'

export interface EventStreamOptions {
  /** Resume after this stream id instead of reading from the start. */
  after?: string
  /** The routes' prefix (default `/api`: `/api/_events/:type/:id/stream`). */
  base?: string
  /** Keep only the last N events in `events` (default: all). */
  keep?: number
  /** Send cookies to another origin. */
  withCredentials?: boolean
  /** Called with each record, in order. */
  onEvent?: (record: EventRecord) => void
  /** Called when the events start over (a gap: `{ after, firstId }`; a new stream or `reload()`: null). */
  onReset?: (gap: { after: string | null; firstId: string | null } | null) => void
}

export interface EventStream {
  /** The records so far, oldest first. */
  events: ShallowRef<EventRecord[]>
  status: Ref<StreamStatus>
  /** The last connection error (`code: 'STREAM_CLOSED'`), cleared once open again. */
  error: Ref<(Error & { code?: string }) | null>
  /** The id of the last record: where a reconnect resumes. */
  lastId: Ref<string | null>
  /** The last `gap` message: entries before the cursor were trimmed; the events were read again from the start. */
  gap: Ref<{ after: string | null; firstId: string | null } | null>
  /** Close the connection (also done when the component unmounts). */
  close(): void
  /** Read the stream again from its start. */
  reload(): void
}

/**
 * A stream's events, live (`stream`: `{ type, id }`, `'type/id'`, or a ref/getter of either;
 * a new value switches streams). Nothing connects on the server (SSR). Reconnects from
 * `lastId` after an error; a `gap` reads the stream again from its start.
 */
export declare function useEventStream(stream: MaybeRefOrGetter<StreamRef | string | undefined | null>, options?: EventStreamOptions): EventStream

/** A flow run's state, live: reduced in the browser by the same rules as `bus.state()`. */
export declare function useFlowRun(id: MaybeRefOrGetter<string | undefined | null>, options?: EventStreamOptions): EventStream & { state: ShallowRef<FlowState> }

export interface RunsOptions {
  /** Runs per read (default 20). */
  limit?: MaybeRefOrGetter<number>
  /** Start at this position of the run index, newest first (default 0; with `status`, the last `nextOffset`). */
  offset?: MaybeRefOrGetter<number>
  /**
   * Only runs with this status (`?status=`): the server reads the run index from `offset` for
   * them, at most 1000 runs per request (its `maxScan`), so a read may bring fewer than `limit`
   * (even none) while `nextOffset` is not null.
   */
  status?: MaybeRefOrGetter<'running' | 'completed' | 'failed' | 'cancelled' | undefined | null>
  /** The routes' prefix (default `/api`). */
  base?: string
  /** Read again every N ms (default 2000; 0: only on `refresh()`). Runs with a stream open on the page update sooner, from its events. */
  intervalMs?: number
}

/**
 * A flow's runs, newest first, with `status` (and `completedAt`), read now and every
 * `intervalMs`; `options.status` filters them on the server. Between reads, a listed run whose
 * own stream is open on the page (useFlowRun, useEventStream) follows its `flow.*` events at
 * once; useRuns opens no stream of its own.
 */
export declare function useRuns(
  flowName: MaybeRefOrGetter<string | undefined | null>,
  options?: RunsOptions,
): {
  runs: Ref<Array<RunInfo & { status?: FlowState['status']; completedAt?: string }>>
  /** The `offset` of the next read (pass it as `offset` to go on); null when the run index has no more. */
  nextOffset: Ref<number | null>
  status: Ref<'idle' | 'loading' | 'ready' | 'error'>
  error: Ref<(Error & { code?: string; status?: number }) | null>
  refresh(): Promise<RunInfo[]>
  stop(): void
}

/**
 * Fire a trigger (`POST <base>/_triggers/:id`, `payload` as JSON) → `{ id, status: 'fired' }`.
 * Rejects with the server's `code` (`TRIGGER_NOT_FOUND`, `TRIGGER_RESOLVED`, `FORBIDDEN`, …) and `status`.
 */
export declare function fireTrigger(id: string, payload?: unknown, options?: { base?: string }): Promise<{ id: string; status: 'fired' }>
