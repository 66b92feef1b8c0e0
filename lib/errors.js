'use strict'

// Errors that reach JavaScript: every one carries a stable `code`. The native layer puts the
// code in front of its message (`CODE: message`); it is moved to `err.code` here.

const CODE_PREFIX = /^([A-Z][A-Z_]+): ([\s\S]*)$/

/** An error with a stable `code`. */
class LeanEventsError extends Error {
  constructor(code, message, extra) {
    super(message)
    this.name = 'LeanEventsError'
    this.code = code
    if (extra) Object.assign(this, extra)
  }
}

/** Move the code the native layer put in front of the message to `err.code`. */
function withCode(err) {
  if (err && typeof err.message === 'string' && !(err instanceof LeanEventsError)) {
    const m = CODE_PREFIX.exec(err.message)
    if (m) return new LeanEventsError(m[1], m[2])
    if (err.code === 'InvalidArg' || err.code === 'NumberExpected' || err.code === 'StringExpected') {
      return new LeanEventsError('INVALID_ARGUMENT', err.message)
    }
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

module.exports = { LeanEventsError, withCode, native, argError }
