'use strict'

// The default `onWarning`: one `console.warn` line per warning code at most every 10 s, with
// the number left out since the last line (every warning is counted in `bus.warningCounts`).

const QUIET_MS = 10_000

function defaultOnWarning() {
  const last = new Map() // code -> { at, skipped }
  return (code, message, detail) => {
    const now = Date.now()
    const seen = last.get(code)
    if (seen && now - seen.at < QUIET_MS) {
      seen.skipped++
      return
    }
    const skipped = seen && seen.skipped ? ` (${seen.skipped} more since the last one)` : ''
    last.set(code, { at: now, skipped: 0 })
    console.warn(`[lean-events] ${code}: ${message}${detail ? ` (${detail})` : ''}${skipped}`)
  }
}

module.exports = { defaultOnWarning }
