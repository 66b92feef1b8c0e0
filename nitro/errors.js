// Errors of lean-events/nitro and their HTTP form: library codes map to statuses, and no stack
// ever reaches a response.

import { setResponseHeader, setResponseStatus } from 'h3'

/** HTTP status for each library error code; anything else is a 500. */
export const STATUS_BY_CODE = {
  INVALID_ARGUMENT: 400,
  EVENT_INVALID: 400,
  BODY_INVALID: 400,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  TRIGGER_NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  TRIGGER_RESOLVED: 409,
  TRIGGER_CANCELLED: 409,
  WRONG_TYPE: 409,
  NOT_REPLICATED: 503,
  PAYLOAD_TOO_LARGE: 413,
  STORE_UNAVAILABLE: 503,
  TIMEOUT: 503,
  BUS_CLOSED: 503,
}

const STATUS_TEXT = {
  400: 'Bad Request',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  409: 'Conflict',
  413: 'Payload Too Large',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
}

/** An error that becomes an HTTP response. */
export class HttpError extends Error {
  constructor(statusCode, code, message) {
    super(message)
    this.name = 'HttpError'
    this.statusCode = statusCode
    this.code = code
  }
}

export function argError(message) {
  return Object.assign(new TypeError(message), { code: 'INVALID_ARGUMENT' })
}

function isClientHttpError(err) {
  return !!err && Number.isInteger(err.statusCode) && err.statusCode >= 400 && err.statusCode < 500
}

/** The HTTP form of any error: library codes map to statuses; no stack ever leaves. */
function toHttpError(err) {
  if (err instanceof HttpError) return err
  // an h3 error (`createError({ statusCode: 404 })`) from a hook such as `id`: its 4xx stands
  if (isClientHttpError(err)) {
    const code = typeof err.code === 'string' ? err.code : `HTTP_${err.statusCode}`
    return new HttpError(err.statusCode, code, String(err.statusMessage || err.message || code))
  }
  const code = err && typeof err.code === 'string' ? err.code : undefined
  const status = code ? STATUS_BY_CODE[code] : undefined
  if (status && status < 500) return new HttpError(status, code, String(err.message || code))
  if (status) return new HttpError(status, code, 'the event store is unavailable, try again')
  console.error('[lean-events] internal error in a handler:', err)
  return new HttpError(500, 'INTERNAL', 'internal error')
}

export function sendError(event, err) {
  const e = toHttpError(err)
  setResponseStatus(event, e.statusCode, STATUS_TEXT[e.statusCode])
  setResponseHeader(event, 'content-type', 'application/json; charset=utf-8')
  setResponseHeader(event, 'cache-control', 'no-store')
  if (e.statusCode === 405) setResponseHeader(event, 'allow', e.allow || 'POST')
  return { statusCode: e.statusCode, code: e.code, message: e.message }
}
