// The wire formats of the handlers, in one table: how an SSE message is written and which
// query parameter resumes a stream. `lean-events` is the default: messages without an event
// name, so `EventSource.onmessage` receives every kind (`namedEvents: true` adds `event: <kind>`
// for pages that listen per kind); `nuxt-queue` is what the seed-era module's UI reads
// (`onmessage` too, reconnecting with `?fromId=`).

import { argError } from './errors.js'
import { toModuleRecord } from './nuxt-queue.js'

const FORMATS = {
  'lean-events': {
    name: 'lean-events',
    /** `id:` the stream id, `data:` the record (its `kind` inside). */
    sseMessage: (e) => `id: ${e.id}\ndata: ${JSON.stringify(e)}\n\n`,
    cursorQuery: 'after',
  },
  'lean-events-named': {
    name: 'lean-events',
    /** `id:` the stream id, `event:` the kind, `data:` the record. */
    sseMessage: (e) => `id: ${e.id}\nevent: ${e.kind}\ndata: ${JSON.stringify(e)}\n\n`,
    cursorQuery: 'after',
  },
  'nuxt-queue': {
    name: 'nuxt-queue',
    /**
     * No event name (the module's UI listens with `onmessage`); `data:` is its envelope
     * `{ v: 1, event: <type>, record }`. The `id:` line lets a browser's own reconnect resume
     * with Last-Event-ID; the module's client resumes with `?fromId=<record.id>`.
     */
    sseMessage: (e) => {
      const record = toModuleRecord(e)
      return `id: ${e.id}\ndata: ${JSON.stringify({ v: 1, event: record.type, record })}\n\n`
    },
    cursorQuery: 'fromId',
  },
}

/** The format a handler's options ask for (default `lean-events`); a factory-time check. */
export function formatOf(options, handler) {
  const name = options.format ?? 'lean-events'
  const known = name !== 'lean-events-named' && Object.prototype.hasOwnProperty.call(FORMATS, name)
  const format = known ? FORMATS[name] : undefined
  if (!format) {
    const names = Object.keys(FORMATS).filter((f) => f !== 'lean-events-named')
    throw argError(`${handler}({ format }) must be one of ${names.map((f) => `'${f}'`).join(', ')}, got ${JSON.stringify(name)}`)
  }
  if (options.namedEvents !== undefined && typeof options.namedEvents !== 'boolean') {
    throw argError(`${handler}({ namedEvents }) must be a boolean, got ${String(options.namedEvents)}`)
  }
  if (options.namedEvents === true && format === FORMATS['lean-events']) return FORMATS['lean-events-named']
  return format
}
