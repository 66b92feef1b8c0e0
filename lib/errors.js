'use strict'

// Errors that reach JavaScript: every one carries a stable `code`. A native error's `cause`
// holds the whole error as JSON ({code, message, lastId?, firstId?, detail?}, see
// src/error.rs); it becomes a LeanEventsError with those fields here.

/** An error with a stable `code`. */
class LeanEventsError extends Error {
  constructor(code, message, extra) {
    super(message)
    this.name = 'LeanEventsError'
    this.code = code
    if (extra) Object.assign(this, extra)
  }
}

/** A LeanEventsError from the native layer's JSON form of an error. */
function fromJson(info) {
  const extra = {}
  if (info.lastId != null) extra.lastId = info.lastId
  if (info.firstId != null) extra.firstId = info.firstId
  if (info.detail !== undefined) extra.detail = info.detail
  return new LeanEventsError(info.code, info.message, extra)
}

/** The native error as a LeanEventsError (argument errors of napi itself included). */
function withCode(err) {
  if (!err || typeof err !== 'object' || err instanceof LeanEventsError) return err
  const cause = err.cause
  if (cause && typeof cause.message === 'string' && cause.message.startsWith('{"code":')) {
    try {
      return fromJson(JSON.parse(cause.message))
    } catch {
      // not ours: fall through
    }
  }
  if (err.code === 'InvalidArg' || err.code === 'NumberExpected' || err.code === 'StringExpected') {
    return new LeanEventsError('INVALID_ARGUMENT', err.message)
  }
  return err
}

async function native(promise) {
  try {
    return await promise
  } catch (err) {
    throw withCode(err)
  }
}

function argError(message) {
  return new LeanEventsError('INVALID_ARGUMENT', message)
}

module.exports = { LeanEventsError, fromJson, withCode, native, argError }
