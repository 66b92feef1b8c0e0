'use strict'

// `bus.keyspace`: keys and channels named in full by the caller — raw stream entries, strings,
// scored indexes whose entries carry a document flattened into a hash of dot paths, and plain
// Pub/Sub. What an adapter for another program's key layout is built on (lean-events/nvent):
// each call is one atomic step and one round trip (see the core's store/keyspace.rs).

const { native, argError } = require('./errors.js')
const { checkOptions, checkStream, isPlainObject } = require('./options.js')

/** `[[field, value], …]` as the JSON text the native layer takes (`["f","v",…]`). */
function flatPairs(fields, what) {
  if (!Array.isArray(fields)) throw argError(`${what} must be an array of [field, value] pairs`)
  const flat = new Array(fields.length * 2)
  for (let i = 0; i < fields.length; i++) {
    const pair = fields[i]
    if (!Array.isArray(pair) || typeof pair[0] !== 'string' || typeof pair[1] !== 'string') {
      throw argError(`${what}[${i}] must be a [string, string] pair`)
    }
    flat[2 * i] = pair[0]
    flat[2 * i + 1] = pair[1]
  }
  return JSON.stringify(flat)
}

/** `["f","v",…]` back into pairs. */
function toPairs(flat) {
  const out = new Array(flat.length / 2)
  for (let i = 0; i < out.length; i++) out[i] = [flat[2 * i], flat[2 * i + 1]]
  return out
}

function checkIndex(index) {
  if (!isPlainObject(index) || typeof index.key !== 'string' || typeof index.docPrefix !== 'string') {
    throw argError('an index is { key: string, docPrefix: string } (the document of member m is the hash docPrefix + m)')
  }
  return index
}

function checkKey(key, what = 'key') {
  if (typeof key !== 'string' || key === '') throw argError(`${what} must be a non-empty string`)
  return key
}

function checkNumber(n, what) {
  if (typeof n !== 'number' || !Number.isFinite(n)) throw argError(`${what} must be a finite number (got ${String(n)})`)
  return n
}

function indexedDoc(d) {
  return { member: d.member, score: d.score, fields: toPairs(d.fields) }
}

const OP_CODES = { set: 's', delete: 'd', object: 'o' }

/** Keys and channels named in full, on the bus's store (one Redis or the embedded store). */
class Keyspace {
  constructor(bus) {
    this._bus = bus
    this._native = bus._native
  }

  /**
   * Append an entry to the stream `key` (`XADD`, trimmed to about `maxLen`). With `live`, the
   * entry is also published on that lean-events stream's live channel in the same step, so
   * `bus.subscribe(live)` delivers it gap-free. Resolves to the entry id.
   */
  async appendEntry(key, fields, options) {
    checkKey(key)
    const o = checkOptions(options, 'options', { maxLen: 'int', live: 'object' })
    if (o.live !== undefined) checkStream(o.live)
    return native(this._native.entryAppend(key, flatPairs(fields, 'fields'), o.maxLen, o.live))
  }

  /** Entries of the stream `key`: `[{ id, fields: [[field, value], …] }]`. */
  async readEntries(key, options) {
    checkKey(key)
    const o = checkOptions(options, 'options', {
      after: 'string',
      before: 'string',
      from: 'number',
      to: 'number',
      limit: 'int',
      reverse: 'boolean',
      where: 'object',
    })
    let field
    let anyOf
    if (o.where !== undefined) {
      const w = o.where
      if (typeof w.field !== 'string' || !Array.isArray(w.anyOf) || !w.anyOf.every((v) => typeof v === 'string')) {
        throw argError('options.where is { field: string, anyOf: string[] }')
      }
      field = w.field
      anyOf = w.anyOf
    }
    const json = await native(
      this._native.entryRange(key, {
        after: o.after,
        before: o.before,
        fromMs: o.from,
        toMs: o.to,
        count: o.limit,
        reverse: o.reverse,
        field,
        anyOf,
      }),
    )
    return JSON.parse(json).map(([id, flat]) => ({ id, fields: toPairs(flat) }))
  }

  /** The string at `key`, or null. */
  async get(key) {
    return native(this._native.kvGet(checkKey(key)))
  }

  /** Set the string at `key`; `ttlMs` makes it expire. */
  async set(key, value, options) {
    checkKey(key)
    if (typeof value !== 'string') throw argError('value must be a string')
    const o = checkOptions(options, 'options', { ttlMs: 'number' })
    if (o.ttlMs !== undefined && !(o.ttlMs > 0)) throw argError('options.ttlMs must be more than 0')
    return native(this._native.kvSet(key, value, o.ttlMs))
  }

  /** Add `by` (default 1) to the number at `key` (no number there: 0), keeping its expiry. */
  async increment(key, by = 1) {
    checkKey(key)
    return Number(await native(this._native.kvIncrement(key, checkNumber(by, 'by'))))
  }

  /** Remove keys of any type; resolves to how many existed. */
  async delete(...keys) {
    for (const k of keys) checkKey(k)
    return native(this._native.keysDelete(keys))
  }

  /** Remove every key matching a glob pattern (Redis `MATCH` syntax); resolves to how many. */
  async clear(pattern) {
    return native(this._native.keysClear(checkKey(pattern, 'pattern')))
  }

  /** Add or move an index entry and replace its document (`null`: the entry has none). */
  async indexPut(index, member, score, doc) {
    checkIndex(index)
    checkKey(member, 'member')
    checkNumber(score, 'score')
    const fields = doc === undefined || doc === null ? null : flatPairs(doc, 'doc')
    return native(this._native.indexPut(index.key, index.docPrefix, member, score, fields))
  }

  /** An index entry with its document's fields, or null. */
  async indexGet(index, member) {
    checkIndex(index)
    const json = await native(this._native.indexGet(index.key, index.docPrefix, checkKey(member, 'member')))
    return json === null ? null : indexedDoc(JSON.parse(json))
  }

  /**
   * Index entries by score, highest first, with their documents: `offset` (default 0) and
   * `limit` (default 50) count entries that pass every filter
   * (`{ field, anyOf: [encoded values], orAbsent? }` on top-level fields).
   */
  async indexRead(index, options) {
    checkIndex(index)
    const o = checkOptions(options, 'options', { offset: 'int', limit: 'int', filters: 'any' })
    if (o.filters !== undefined && !Array.isArray(o.filters)) throw argError('options.filters must be an array')
    const offset = o.offset ?? 0
    const limit = o.limit ?? 50
    if (offset < 0 || limit < 0) throw argError('offset and limit must be 0 or more')
    const filters = o.filters && o.filters.length ? JSON.stringify(o.filters) : undefined
    const json = await native(this._native.indexRead(index.key, index.docPrefix, offset, limit, filters))
    return JSON.parse(json).map(indexedDoc)
  }

  /**
   * Deep-merge into an entry's document in one atomic step: `ops` are `['set', path, value]`,
   * `['delete', path]` (the leaf or the whole subtree) and `['object', path]` (an object,
   * kept when empty). `versionField` is incremented. Resolves to the new version (0 without a
   * version field), or null when the entry or its document does not exist.
   */
  async indexMerge(index, member, ops, options) {
    checkIndex(index)
    checkKey(member, 'member')
    if (!Array.isArray(ops)) throw argError('ops must be an array')
    const steps = ops.map((op, i) => {
      const code = Array.isArray(op) && OP_CODES[op[0]]
      const ok = code && typeof op[1] === 'string' && (code === 's' ? typeof op[2] === 'string' && op.length === 3 : op.length === 2)
      if (!ok) throw argError(`ops[${i}] must be ['set', path, value], ['delete', path] or ['object', path]`)
      return code === 's' ? [code, op[1], op[2]] : [code, op[1]]
    })
    const o = checkOptions(options, 'options', { versionField: 'string' })
    return native(this._native.indexMerge(index.key, index.docPrefix, member, JSON.stringify(steps), o.versionField))
  }

  /**
   * Add `by` at a dot path of an entry's document (no number there: 0) and increment
   * `versionField`, atomically. Resolves to the new value, or null when the entry does not exist.
   */
  async indexIncrement(index, member, path, by = 1, options) {
    checkIndex(index)
    checkKey(member, 'member')
    checkKey(path, 'path')
    checkNumber(by, 'by')
    const o = checkOptions(options, 'options', { versionField: 'string' })
    const v = await native(this._native.indexIncrement(index.key, index.docPrefix, member, path, by, o.versionField))
    return v === null ? null : Number(v)
  }

  /** Remove an index entry and its document; true when the entry existed. */
  async indexRemove(index, member) {
    checkIndex(index)
    return native(this._native.indexRemove(index.key, index.docPrefix, checkKey(member, 'member')))
  }

  /**
   * Every message published on a plain channel while connected: lean-events live messages as
   * their records, other JSON messages parsed as they are (others are dropped). Shares one
   * Pub/Sub subscription per channel with every other listener of this bus.
   */
  async listen(channel, handler, options) {
    checkKey(channel, 'channel')
    if (typeof handler !== 'function') throw argError('handler must be a function')
    const o = checkOptions(options, 'options', { maxQueue: 'int', onError: 'function' })
    return this._bus._open(handler, o, (key) => this._native.listen(channel, o.maxQueue, key))
  }

  /** Publish a message (text) on a plain channel. */
  async publish(channel, message) {
    checkKey(channel, 'channel')
    if (typeof message !== 'string') throw argError('message must be a string')
    return native(this._native.publish(channel, message))
  }
}

module.exports = { Keyspace }
