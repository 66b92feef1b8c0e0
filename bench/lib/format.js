'use strict'
// Number formatting for the report and the progress lines.

const num = (v) => typeof v === 'number' && Number.isFinite(v)

function rate(v) {
  return num(v) ? Math.round(v).toLocaleString('en-US') : '—'
}

function ms(v) {
  if (!num(v)) return '—'
  const d = v < 1 ? 3 : v < 10 ? 2 : 1
  return `${v.toFixed(d)} ms`
}

function us(v) {
  return num(v) ? `${v.toFixed(v < 10 ? 1 : 0)} µs` : '—'
}

function mb(v) {
  return num(v) ? `${v.toFixed(1)} MB` : '—'
}

function pct(v) {
  return num(v) ? `${v.toFixed(v < 1 ? 3 : 2)} %` : '—'
}

function bytes(v) {
  return num(v) ? `${Math.round(v).toLocaleString('en-US')} B` : '—'
}

function ratio(a, b) {
  return num(a) && num(b) && b !== 0 ? `${(a / b).toFixed(2)}×` : '—'
}

function int(v) {
  return num(v) ? Math.round(v).toLocaleString('en-US') : '—'
}

module.exports = { num, rate, ms, us, mb, pct, bytes, ratio, int }
