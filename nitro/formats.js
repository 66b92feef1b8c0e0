// The wire formats of the handlers, in one table: how an SSE message is written and which
// query parameter resumes a stream. `lean-events` is the default; `nuxt-queue` is what the
// seed-era module's UI reads (`EventSource.onmessage`, reconnecting with `?fromId=`).

import { argError } from './errors.js'
import { toModuleRecord } from './nuxt-queue.js'

const FORMATS = {
  'lean-events': {
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
  const format = Object.prototype.hasOwnProperty.call(FORMATS, name) ? FORMATS[name] : undefined
  if (!format) {
    throw argError(`${handler}({ format }) must be one of ${Object.keys(FORMATS).map((f) => `'${f}'`).join(', ')}, got ${JSON.stringify(name)}`)
  }
  return format
}
