// nvent 0.5's StoreAdapter on lean-events: the keys, fields and hashes of nvent's Redis store
// adapter (so both can serve one fleet), each call one atomic step and one round trip.

import leanEvents from '../index.js'
import {
  decodeText,
  documentFields,
  documentFromFields,
  encodeText,
  filterTexts,
  mergeSteps,
} from './codec.js'
import { BusHandle } from './connection.js'

const { LeanEventsError } = leanEvents

const VERSION = 'version'
const DEFAULT_MAX_LEN = 10_000
const TYPE_RE = /^[a-z0-9_-]{1,64}$/
const RESERVED_TYPES = new Set(['flows', 'triggers', 'kind', 'await', 'sched'])

function argError(message) {
  return new LeanEventsError('INVALID_ARGUMENT', message)
}

/** The hash keys of an index's documents: `<key>:meta:<id>`. */
function indexRef(key) {
  if (typeof key !== 'string' || key === '') throw argError('an index key must be a non-empty string')
  return { key, docPrefix: `${key}:meta:` }
}

/** Refuse dotted keys at any depth, as nvent's store validator does for updates. */
function refuseDottedKeys(obj, method, path = []) {
  for (const key of Object.keys(obj)) {
    const at = [...path, key]
    if (key.includes('.') && key !== VERSION) {
      throw new LeanEventsError(
        'INVALID_ARGUMENT',
        `Invalid index update: dot notation keys not supported. Key "${key}" at path "${at.join('.')}" contains dots (${method}: use nested objects)`,
      )
    }
    const v = obj[key]
    if (v && typeof v === 'object' && !Array.isArray(v)) refuseDottedKeys(v, method, at)
  }
}

function checkPartial(partial, method) {
  if (partial === null || typeof partial !== 'object' || Array.isArray(partial)) {
    throw argError(`${method} takes an object of metadata to merge`)
  }
  refuseDottedKeys(partial, method)
}

/** The milliseconds of a stream id. */
function idMs(id) {
  return Number(id.slice(0, id.indexOf('-')))
}

/** A stored entry as nvent reads an EventRecord: every field, `id`, and `ts` in ms. */
function toRecord(id, fields) {
  const record = {}
  for (const [k, v] of fields) record[k] = decodeText(v)
  record.id = id
  if (typeof record.ts !== 'number' || !record.ts) record.ts = idMs(id)
  return record
}

let subscriptions = 0

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** nvent's StoreAdapter (`stream`, `kv`, `index`, `close`). See createStoreAdapter. */
export class LeanStoreAdapter {
  constructor(options = {}) {
    const prefix = options.prefix ?? 'nvent'
    this._bus = new BusHandle({ ...options, prefix })
    const maxLen = options.streams?.trim?.maxLen
    this._maxLen = maxLen === undefined ? DEFAULT_MAX_LEN : maxLen
    if (!(Number.isSafeInteger(this._maxLen) && this._maxLen >= 0)) {
      throw argError('streams.trim.maxLen must be an integer of 0 or more (0: no trimming)')
    }
    const store = this

    this.stream = {
      /** Append; resolves to `{...event, ts, id}` (ts in ms). */
      async append(subject, event) {
        const bus = await store._bus.get()
        const data = { ...event, ts: Date.now() }
        const fields = []
        for (const [k, v] of Object.entries(data)) {
          if (v === undefined || typeof v === 'function' || typeof v === 'symbol') continue
          fields.push([k, encodeText(v)])
        }
        const live = store._liveStream(bus, subject)
        const id = await bus.keyspace.appendEntry(subject, fields, {
          maxLen: store._maxLen || undefined,
          live: live || undefined,
        })
        return { ...data, id }
      },

      /** Read: `types`, exclusive `after`/`before`, inclusive `from`/`to` (ms), `limit`, `order`. */
      async read(subject, opts = {}) {
        const bus = await store._bus.get()
        const where = opts.types && opts.types.length ? { field: 'type', anyOf: opts.types.map(encodeText) } : undefined
        const entries = await bus.keyspace.readEntries(subject, {
          after: opts.after || undefined,
          before: opts.before || undefined,
          from: opts.from || undefined,
          to: opts.to || undefined,
          limit: opts.limit || undefined,
          reverse: opts.order === 'desc',
          where,
        })
        return entries.map((e) => toRecord(e.id, e.fields))
      },

      /**
       * New events of a stream, gap-free, from now on (a lean-events subscription on the
       * stream: appends publish in the same step as they store).
       */
      async subscribe(subject, onEvent) {
        const bus = await store._bus.get()
        const stream = store._liveStream(bus, subject)
        if (!stream) {
          throw argError(`stream.subscribe follows streams under the bus prefix '${bus.prefix}:' (got '${subject}')`)
        }
        const sub = await bus.subscribe(
          stream,
          (rec) => {
            const fields = rec.fields ? Object.entries(rec.fields) : []
            onEvent(toRecord(rec.id, fields))
          },
          { onError: (err) => console.error('[lean-events/nvent] stream subscription:', err) },
        )
        return { id: `sub-${++subscriptions}`, subject, unsubscribe: () => sub.unsubscribe() }
      },

      /** Delete the whole stream; true when it existed. */
      async delete(subject) {
        const bus = await store._bus.get()
        return (await bus.keyspace.delete(subject)) > 0
      },
    }

    this.kv = {
      async get(key) {
        const bus = await store._bus.get()
        const text = await bus.keyspace.get(key)
        return text === null || text === '' ? null : decodeText(text)
      },

      /** Set; `ttl` in seconds. */
      async set(key, value, ttl) {
        if (ttl !== undefined && ttl !== null && !(typeof ttl === 'number' && ttl >= 0)) {
          throw argError('ttl must be a number of seconds')
        }
        const bus = await store._bus.get()
        await bus.keyspace.set(key, encodeText(value), ttl ? { ttlMs: ttl * 1000 } : undefined)
      },

      async delete(key) {
        const bus = await store._bus.get()
        await bus.keyspace.delete(key)
      },

      /** Delete every key matching a glob pattern; resolves to how many. */
      async clear(pattern) {
        const bus = await store._bus.get()
        return bus.keyspace.clear(pattern)
      },

      async increment(key, by = 1) {
        const bus = await store._bus.get()
        return bus.keyspace.increment(key, by)
      },
    }

    this.index = {
      /** Add or replace an entry and its metadata (`version: 0` unless given). */
      async add(key, id, score, metadata) {
        const bus = await store._bus.get()
        const doc = metadata === undefined || metadata === null ? null : documentFields(metadata)
        await bus.keyspace.indexPut(indexRef(key), id, score, doc)
      },

      async get(key, id) {
        const bus = await store._bus.get()
        const entry = await bus.keyspace.indexGet(indexRef(key), id)
        return entry && toEntry(entry)
      },

      /** Highest score first; `offset` 0 and `limit` 50 by default; `filter` on top-level metadata. */
      async read(key, opts = {}) {
        const bus = await store._bus.get()
        const filters = []
        for (const [field, value] of Object.entries(opts.filter || {})) {
          const values = Array.isArray(value) ? value : [value]
          const orAbsent = values.some((v) => v === undefined)
          const anyOf = values.map(filterTexts).filter((t) => t !== null)
          if (field.includes('.')) {
            // no top-level key has a dot: only "absent" can match
            if (orAbsent) continue
            return []
          }
          filters.push({ field, anyOf, orAbsent })
        }
        const entries = await bus.keyspace.indexRead(indexRef(key), {
          offset: opts.offset || 0,
          limit: opts.limit || 50,
          filters,
        })
        return entries.map(toEntry)
      },

      /** Deep-merge into the metadata, in one atomic step; false when the entry has none. */
      async update(key, id, metadata) {
        checkPartial(metadata, 'index.update')
        const bus = await store._bus.get()
        const version = await bus.keyspace.indexMerge(indexRef(key), id, mergeSteps(metadata), { versionField: VERSION })
        return version !== null
      },

      /**
       * `update`, which cannot lose to a concurrent writer; tried again (10·2^i ms apart)
       * only while the entry does not exist yet.
       */
      async updateWithRetry(key, id, metadata, maxRetries = 3) {
        checkPartial(metadata, 'index.updateWithRetry')
        for (let attempt = 0; attempt < maxRetries; attempt++) {
          if (await store.index.update(key, id, metadata)) return
          await sleep(10 * 2 ** attempt)
        }
        throw new Error(`Failed to update index after ${maxRetries} retries`)
      },

      /** Add at a dotted path of the metadata (and bump `version`); resolves to the new value. */
      async increment(key, id, field, by = 1) {
        const bus = await store._bus.get()
        const value = await bus.keyspace.indexIncrement(indexRef(key), id, field, by, { versionField: VERSION })
        if (value === null) {
          throw new LeanEventsError('INDEX_ENTRY_NOT_FOUND', `Entry not found: ${id} in index ${key}`)
        }
        return value
      },

      /** Remove an entry and its metadata; true when it existed. */
      async delete(key, id) {
        const bus = await store._bus.get()
        return bus.keyspace.indexRemove(indexRef(key), id)
      },
    }
  }

  /**
   * The lean-events stream a subject is (`<bus prefix>:<type>:<id>`, e.g. nvent's
   * `nvent:flow:run:<runId>` is the stream flow/run:<runId>), or null.
   */
  _liveStream(bus, subject) {
    const prefix = `${bus.prefix}:`
    if (typeof subject !== 'string' || !subject.startsWith(prefix)) return null
    const rest = subject.slice(prefix.length)
    const colon = rest.indexOf(':')
    if (colon <= 0) return null
    const type = rest.slice(0, colon)
    const id = rest.slice(colon + 1)
    if (!TYPE_RE.test(type) || RESERVED_TYPES.has(type)) return null
    // ids: 1-256 printable characters without whitespace (the bus's rule)
    if (id.length === 0 || id.length > 256 || /[\s\p{Cc}]/u.test(id)) return null
    return { type, id }
  }

  /** Release the bus (closed when it is this adapter's). */
  async close() {
    await this._bus.close()
  }
}

function toEntry(entry) {
  const metadata = documentFromFields(entry.fields)
  return metadata === undefined ? { id: entry.member, score: entry.score } : { id: entry.member, score: entry.score, metadata }
}
