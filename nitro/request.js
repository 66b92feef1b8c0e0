// Reading and checking what a request carries: route parameters, the SSE cursor, query numbers,
// a size-limited body; and asking the app's `authorize` hook. Bad input is a 4xx HttpError.

import { getQuery, getRequestHeader, getRouterParam, readRawBody } from 'h3'
import { HttpError } from './errors.js'

const RESERVED_TYPES = new Set(['flows', 'triggers', 'kind', 'await', 'sched'])
const TYPE_RE = /^[a-z0-9_-]+$/
const CURSOR_RE = /^\d{1,20}(-\d{1,20})?$/
// eslint-disable-next-line no-control-regex
const BAD_ID_CHAR = /[\s\p{Cc}]/u

export function checkType(type) {
  if (typeof type !== 'string' || !TYPE_RE.test(type) || RESERVED_TYPES.has(type)) {
    throw new HttpError(400, 'INVALID_ARGUMENT', 'invalid stream type: [a-z0-9_-]+, not a reserved name')
  }
  return type
}

export function checkId(id, what = 'id') {
  if (typeof id !== 'string' || id.length === 0 || [...id].length > 256 || BAD_ID_CHAR.test(id)) {
    throw new HttpError(400, 'INVALID_ARGUMENT', `invalid ${what}: 1-256 printable characters without whitespace`)
  }
  return id
}

export function param(event, name) {
  try {
    return getRouterParam(event, name, { decode: true })
  } catch {
    throw new HttpError(400, 'INVALID_ARGUMENT', `invalid ${name}`)
  }
}

export async function checkAuthorized(authorize, event, target) {
  if (typeof authorize !== 'function') return
  let ok
  try {
    ok = await authorize(event, target)
  } catch {
    ok = false
  }
  if (ok === false) throw new HttpError(403, 'FORBIDDEN', 'forbidden')
}

/** Where an event stream resumes: the `Last-Event-ID` header, else the `?<queryName>=` parameter. */
export function cursorOf(event, queryName = 'after') {
  const header = getRequestHeader(event, 'last-event-id')
  const raw = header !== undefined && header !== '' ? header : lastQueryValue(event, queryName)
  if (raw === undefined || raw === '') return undefined
  return checkCursor(raw, `Last-Event-ID / ?${queryName}=`)
}

/** A stream id `<ms>-<seq>` from a request; `what` names where it came from. */
export function checkCursor(raw, what) {
  const cursor = String(raw).trim()
  if (!CURSOR_RE.test(cursor)) throw new HttpError(400, 'INVALID_ARGUMENT', `invalid cursor: ${what} is a stream id "<ms>-<seq>"`)
  return cursor
}

/** The last value of a query parameter given once or more. */
export function lastQueryValue(event, name) {
  const v = getQuery(event)[name]
  return Array.isArray(v) ? v[v.length - 1] : v
}

export function intQuery(value, name, min, max) {
  if (value === undefined || value === '') return undefined
  const n = Number(Array.isArray(value) ? value[value.length - 1] : value)
  if (!Number.isInteger(n) || n < min || n > max) throw new HttpError(400, 'INVALID_ARGUMENT', `${name} must be an integer in ${min}..${max}`)
  return n
}

/** Read at most `limit` bytes of the request body; over it: 413 (without reading the rest). */
export async function readBodyLimited(event, limit) {
  const req = event.node.req
  const declared = Number(req.headers['content-length'])
  if (Number.isFinite(declared) && declared > limit) {
    throw new HttpError(413, 'PAYLOAD_TOO_LARGE', `the body is larger than ${limit} bytes`)
  }
  const consumed = req.readableEnded || req.readableDidRead || event._requestBody || req.rawBody || req.body
  if (consumed) {
    const buf = await readRawBody(event, false)
    if (buf && buf.length > limit) throw new HttpError(413, 'PAYLOAD_TOO_LARGE', `the body is larger than ${limit} bytes`)
    return buf || Buffer.alloc(0)
  }
  return new Promise((resolve, reject) => {
    const chunks = []
    let size = 0
    const onData = (chunk) => {
      size += chunk.length
      if (size > limit) {
        cleanup()
        req.resume() // discard the rest
        reject(new HttpError(413, 'PAYLOAD_TOO_LARGE', `the body is larger than ${limit} bytes`))
        return
      }
      chunks.push(chunk)
    }
    const onEnd = () => {
      cleanup()
      resolve(Buffer.concat(chunks))
    }
    const onError = (err) => {
      cleanup()
      reject(new HttpError(400, 'BODY_INVALID', `could not read the body: ${err.message}`))
    }
    const cleanup = () => {
      req.off('data', onData)
      req.off('end', onEnd)
      req.off('error', onError)
    }
    req.on('data', onData)
    req.on('end', onEnd)
    req.on('error', onError)
  })
}

export function parsePayload(event, buf) {
  if (buf.length === 0) return undefined
  const text = buf.toString('utf8')
  const type = String(getRequestHeader(event, 'content-type') || '').toLowerCase()
  if (type.startsWith('application/x-www-form-urlencoded')) {
    return Object.fromEntries(new URLSearchParams(text))
  }
  try {
    return JSON.parse(text)
  } catch {
    throw new HttpError(400, 'BODY_INVALID', 'the body must be JSON (the payload to fire the trigger with)')
  }
}
