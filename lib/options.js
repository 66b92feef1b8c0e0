'use strict'

// Checking the arguments and options of the public API before they reach the native layer, and
// turning values into the JSON text the native layer takes.

const { LeanEventsError, argError } = require('./errors.js')

function isPlainObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

function checkOptions(options, name, spec) {
  if (options === undefined || options === null) return {}
  if (!isPlainObject(options)) throw argError(`${name} must be an object`)
  for (const [key, value] of Object.entries(options)) {
    const type = spec[key]
    if (!type) throw argError(`${name}.${key} is not an option (known: ${Object.keys(spec).join(', ')})`)
    if (value === undefined) continue
    if (type === 'any') continue
    if (type === 'int') {
      if (!Number.isSafeInteger(value)) throw argError(`${name}.${key} must be an integer (got ${typeof value} ${String(value)})`)
    } else if (type === 'function') {
      if (typeof value !== 'function') throw argError(`${name}.${key} must be a function`)
    } else if (type === 'strings') {
      if (!Array.isArray(value) || value.length === 0 || !value.every((v) => typeof v === 'string')) {
        throw argError(`${name}.${key} must be a non-empty array of strings`)
      }
    } else if (type === 'object') {
      if (!isPlainObject(value)) throw argError(`${name}.${key} must be an object`)
    } else if (typeof value !== type) {
      throw argError(`${name}.${key} must be a ${type} (got ${typeof value})`)
    }
  }
  return options
}

function checkStream(stream) {
  if (!isPlainObject(stream) || typeof stream.type !== 'string' || typeof stream.id !== 'string') {
    throw argError("a stream is { type: 'flow' | 'trigger' | string, id: string }")
  }
  return stream
}

function serialize(event, what) {
  if (!isPlainObject(event)) {
    throw new LeanEventsError('EVENT_INVALID', `${what} must be an object like { kind, subject, data }`)
  }
  try {
    return JSON.stringify(event)
  } catch (err) {
    throw new LeanEventsError('EVENT_INVALID', `${what} cannot be serialized to JSON: ${err.message}`)
  }
}

function toJson(value, what) {
  try {
    const json = JSON.stringify(value === undefined ? null : value)
    return json === undefined ? 'null' : json
  } catch (err) {
    throw argError(`${what} cannot be serialized to JSON: ${err.message}`)
  }
}

module.exports = { isPlainObject, checkOptions, checkStream, serialize, toJson }
