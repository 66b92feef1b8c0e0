// The Server-Sent Events handler: a subscription written to the response, backfill then live,
// resumable with Last-Event-ID. How a message looks is the format's (formats.js).

import { defineEventHandler } from 'h3'
import { argError, sendError } from './errors.js'
import { formatOf } from './formats.js'
import { checkAuthorized, checkId, checkType, cursorOf, param } from './request.js'
import { resolveBus } from './shared.js'

const DEFAULT_HEARTBEAT_MS = 15_000

function heartbeatDefault() {
  const env = Number(process.env.LEAN_EVENTS_SSE_HEARTBEAT_MS)
  return Number.isFinite(env) && env > 0 ? env : DEFAULT_HEARTBEAT_MS
}

const STREAMS_OF_SERVER = Symbol.for('lean-events.nitro.eventStreams')

/**
 * Nitro's graceful shutdown closes the HTTP server, waits until every connection has ended and
 * only then calls the `close` hook; an open event stream would hold it up until its timeout
 * (30 s). So when the server starts closing, end the event streams it serves (the browsers
 * reconnect with Last-Event-ID to whichever instance is up).
 */
function trackStream(req, end) {
  const server = req.socket && req.socket.server
  if (!server || typeof server.close !== 'function') return () => {}
  let streams = server[STREAMS_OF_SERVER]
  if (!streams) {
    streams = new Set()
    server[STREAMS_OF_SERVER] = streams
    const close = server.close
    server.close = function closeAndEndEventStreams(...args) {
      for (const endStream of [...streams]) endStream()
      return close.apply(this, args)
    }
  }
  streams.add(end)
  return () => streams.delete(end)
}

/** Has the client gone (or the response ended) already? Its `close` event will not come again. */
function responseGone(req, res) {
  return res.destroyed || res.writableEnded || req.destroyed || !!(req.socket && req.socket.destroyed)
}

/** `event: gap`: entries between the client's cursor and `firstId` were trimmed, never sent. */
function sseGap(gap) {
  return `event: gap\ndata: ${JSON.stringify({ after: gap.after, firstId: gap.firstId })}\n\n`
}

/** Write the subscription to the response as SSE (messages by `format`) until either side ends. */
function pipeSse(event, sub, o, gaps, format) {
  const req = event.node.req
  const res = event.node.res
  if (responseGone(req, res)) {
    // the client left while authorize / subscribe were awaited
    sub.unsubscribe().catch(() => {})
    return undefined
  }
  const headers = {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    'x-accel-buffering': 'no',
  }
  if (!(req.httpVersionMajor >= 2)) headers.connection = 'keep-alive'
  res.writeHead(200, headers)
  if (req.socket) {
    req.socket.setNoDelay(true)
    req.socket.setTimeout(0)
  }
  res.write(`retry: ${o.retryMs ?? 1000}\n: lean-events\n\n`)
  gaps.write = (gap) => res.write(sseGap(gap))
  for (const gap of gaps.pending.splice(0)) gaps.write(gap)
  if (typeof res.flushHeaders === 'function') res.flushHeaders()

  return new Promise((resolve) => {
    let closed = false
    let corked = false
    const heartbeatMs = o.heartbeatMs ?? heartbeatDefault()
    const heartbeat = setInterval(() => {
      if (!closed) res.write(': ping\n\n')
    }, heartbeatMs)
    if (typeof heartbeat.unref === 'function') heartbeat.unref()
    let wakeWriter = null
    let untrack = () => {}
    const finish = () => {
      if (closed) return
      closed = true
      clearInterval(heartbeat)
      untrack()
      sub.unsubscribe().catch(() => {})
      if (wakeWriter) wakeWriter()
      if (!res.writableEnded) res.end()
      resolve()
    }
    res.on('close', finish)
    res.on('error', finish)
    untrack = trackStream(req, finish)
    const drained = () =>
      new Promise((r) => {
        const done = () => {
          res.off('drain', done)
          wakeWriter = null
          r()
        }
        wakeWriter = done
        res.on('drain', done)
      })
    ;(async () => {
      try {
        for await (const e of sub) {
          if (closed) break
          if (!corked) {
            corked = true
            res.cork()
            process.nextTick(() => {
              corked = false
              res.uncork()
            })
          }
          if (!res.write(format.sseMessage(e))) await drained()
        }
      } catch {
        // the subscription ended with an error (cut off as a slow client, bus closed): end the
        // response; the browser reconnects with Last-Event-ID and resumes after its last event
      }
      finish()
    })()
  })
}

/**
 * `GET /api/_events/:type/:id/stream`: Server-Sent Events, backfill then live. One message per
 * event (`id:` the stream id, `data:` the record as JSON; no event name, so `onmessage` gets
 * every kind; `namedEvents: true` adds `event:` the kind). Resumes after the
 * `Last-Event-ID` header (or `?after=`); heartbeat comments every `heartbeatMs` (15 s).
 * `format: 'nuxt-queue'`: the seed-era module's messages (`data: {"v":1,"event":…,"record":…}`,
 * no event name), resumed with `?fromId=`.
 */
export function eventStreamHandler(options = {}) {
  const format = formatOf(options, 'eventStreamHandler')
  for (const name of ['heartbeatMs', 'retryMs']) {
    const v = options[name]
    if (v !== undefined && !(Number.isInteger(v) && v > 0 && v <= 2 ** 31 - 1)) {
      throw argError(`eventStreamHandler({ ${name} }) must be a whole number of milliseconds above 0, got ${String(v)}`)
    }
  }
  return defineEventHandler(async (event) => {
    let sub
    const gaps = { pending: [], write: (gap) => gaps.pending.push(gap) }
    try {
      const type = checkType(options.type ?? param(event, 'type'))
      const id = checkId(typeof options.id === 'function' ? await options.id(event) : param(event, 'id'))
      await checkAuthorized(options.authorize, event, { type, id })
      const after = cursorOf(event, format.cursorQuery)
      const bus = await resolveBus(options)
      const start = after !== undefined ? { after } : typeof options.backfill === 'number' ? { backfill: options.backfill } : { after: '0' }
      // a trimmed range is not an error: the client is told (`event: gap`) and delivery goes on
      sub = await bus.subscribe({ type, id }, { ...start, maxQueue: options.maxQueue, onGap: (gap) => gaps.write(gap) })
    } catch (err) {
      return sendError(event, err)
    }
    return pipeSse(event, sub, options, gaps, format)
  })
}
