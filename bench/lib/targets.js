'use strict'
// The project's targets, checked against the medians of this run.

const f = require('./format.js')

const med = (scenario, system) => scenario?.systems?.[system]?.median ?? {}

// show(v): how a measured value or goal is written (a ratio by default).
const asRatio = (v) => `${v.toFixed(2)}×`

function atLeast(label, measured, goal, show = asRatio) {
  if (!f.num(measured)) return { ok: false, unmeasured: true, label, text: `${label}: not measured` }
  if (measured >= goal) return { ok: true, text: `${label}: met` }
  return {
    ok: false,
    label,
    text: `${label} ${show(measured)} < ${show(goal)}: ${((1 - measured / goal) * 100).toFixed(0)} % short (needs ${(goal / measured).toFixed(2)}× more)`,
  }
}

function atMost(label, measured, goal, show = asRatio) {
  if (!f.num(measured)) return { ok: false, unmeasured: true, label, text: `${label}: not measured` }
  if (measured <= goal) return { ok: true, text: `${label}: met` }
  return {
    ok: false,
    label,
    text: `${label} ${show(measured)} > ${show(goal)}: ${((measured / goal - 1) * 100).toFixed(0)} % over (needs ${(measured / goal).toFixed(2)}× less)`,
  }
}

function status(checks) {
  if (checks.every((c) => c.ok)) return 'met'
  const missed = checks.filter((c) => !c.ok).map((c) => c.text)
  return `**missed** — ${missed.join('; ')}`
}

function evaluate(s) {
  const rows = []
  const push = (target, goal, measured, checks) => rows.push({ target, goal, measured, status: checks ? status(checks) : 'not measured' })

  {
    const a = med(s.inFlight256, 'addon').eventsPerSec
    const b = med(s.inFlight256, 'lua').eventsPerSec
    push('256 in flight, events/s', '≥ 2.0× ioredis+Lua', `${f.ratio(a, b)} (${f.rate(a)} vs ${f.rate(b)})`, [atLeast('ratio', a / b, 2.0)])
  }
  {
    const a = s.emitMany?.oneInFlight?.addon?.median?.eventsPerSec
    const a4 = s.emitMany?.fourInFlight?.addon?.median?.eventsPerSec
    push('emitMany ×100, events/s', '≥ 250 000', `${f.rate(a)} (one batch in flight; ${f.rate(a4)} with 4 in flight)`, [atLeast('events/s', a, 250000, f.rate)])
  }
  {
    const a = med(s.sequential, 'addon')
    const b = med(s.sequential, 'lua')
    push('sequential emit p50 / p99', '≤ 1.0× ioredis+Lua',
      `p50 ${f.ratio(a.p50, b.p50)} (${f.ms(a.p50)} vs ${f.ms(b.p50)}), p99 ${f.ratio(a.p99, b.p99)} (${f.ms(a.p99)} vs ${f.ms(b.p99)})`,
      [atMost('p50', a.p50 / b.p50, 1.0), atMost('p99', a.p99 / b.p99, 1.0)])
  }
  {
    const runs = s.live?.runs ?? {}
    const o = (sys) => runs['other.rate2000']?.systems?.[sys]?.median ?? {}
    const m = (sys) => runs['same.rate2000']?.systems?.[sys]?.median ?? {}
    push('live delivery at 2 000/s, p50 / p99', '≤ 1.0× ioredis, other process; ≤ 0.6× in the same process',
      `other process: p50 ${f.ratio(o('addon').p50, o('lua').p50)} (${f.ms(o('addon').p50)} vs ${f.ms(o('lua').p50)}), p99 ${f.ratio(o('addon').p99, o('lua').p99)} (${f.ms(o('addon').p99)} vs ${f.ms(o('lua').p99)}); ` +
        `same process: p50 ${f.ratio(m('addon').p50, m('lua').p50)} (${f.ms(m('addon').p50)} vs ${f.ms(m('lua').p50)}), p99 ${f.ratio(m('addon').p99, m('lua').p99)} (${f.ms(m('addon').p99)} vs ${f.ms(m('lua').p99)})`,
      [
        atMost('other p50', o('addon').p50 / o('lua').p50, 1.0),
        atMost('other p99', o('addon').p99 / o('lua').p99, 1.0),
        atMost('same p50', m('addon').p50 / m('lua').p50, 0.6),
        atMost('same p99', m('addon').p99 / m('lua').p99, 0.6),
      ])
  }
  {
    const a = med(s.fanout, 'addon')
    push('10 000 idle subscriptions', 'CPU < 0.5 % of a core, RSS < 100 MB', `CPU ${f.pct(a.idleCpuPct)}, RSS ${f.mb(a.rssAfterSetupMB)}`,
      [atMost('CPU', a.idleCpuPct, 0.5, f.pct), atMost('RSS', a.rssAfterSetupMB, 100, f.mb)])
  }
  {
    const st = s.storage
    push('storage per 100-event run', '≤ 0.75× the spec layout', st?.ours ? `${f.ratio(st.ours, st.spec)} (${f.bytes(st.ours)} vs ${f.bytes(st.spec)})` : '—',
      [atMost('ratio', st?.ours / st?.spec, 0.75)])
  }
  {
    const t = s.timers?.median
    push('timer lateness p99 (10 000 pending)', '≤ 10 ms', t ? `fired p99 ${t.firedP99} ms (handler resumed p99 ${t.resumedP99} ms)` : '—',
      t ? [atMost('fired p99', t.firedP99, 10, (v) => `${v} ms`)] : null)
  }
  {
    const b = s.timers?.burst
    const shown = b ? `${b.firedOnce ? 'each fired once' : 'NOT each fired once'}, fired p99 ${b.firedP99} ms (handler resumed p99 ${b.resumedP99} ms)` : '—'
    push('timer burst (1 000 due at once, 2 instances)', 'each fires once, lateness p99 ≤ 10 ms', shown,
      b ? [atMost('fired p99', b.firedP99, 10, (v) => `${v} ms`), { ok: b.firedOnce, text: 'some timer fired more or less than once' }] : null)
  }
  {
    const a = med(s.cpuPerEvent, 'addon').cpuUsPerEvent
    const b = med(s.cpuPerEvent, 'lua').cpuUsPerEvent
    const c = med(s.cpuPerEvent, 'spec').cpuUsPerEvent
    push('CPU per event', '≤ 0.5× baseline (ioredis+Lua)', `${f.ratio(a, b)} (${f.us(a)} vs ${f.us(b)}; vs XADD+PUBLISH ${f.ratio(a, c)}, ${f.us(c)})`,
      [atMost('ratio', a / b, 0.5)])
  }
  return rows
}

/**
 * The hot-path targets: ratios to ioredis+Lua in the same run, medians of the repetitions;
 * once as measured (section 1, 2, 4) and once with node pinned to CPU 0 and Redis to CPU 1
 * (section 14). Each row is the addon on its default transport ('loop'); `thread` says the same
 * for the addon with transport 'thread' where it was measured (measured ratios, met or missed).
 */
function hotPath(s) {
  const rows = []
  const v = (scenario, system, key) => med(scenario, system)[key]
  const p = s.pinned && !s.pinned.skipped && !s.pinned.error ? s.pinned : null
  const setups = [
    ['', { sequential: s.sequential, inFlight256: s.inFlight256, bursts256: s.bursts256, live: s.live?.runs?.['same.rate2000'] }, 'not measured'],
    ['pinned: ', p && { sequential: { systems: p.sequential }, inFlight256: { systems: p.inFlight256 }, bursts256: { systems: p.bursts256 }, live: { systems: p.live } },
      s.pinned?.skipped ? `not measured (${s.pinned.skipped})` : 'not measured'],
  ]
  for (const [label, x, absent] of setups) {
    const push = (target, goal, measured, checks) => {
      const row = { target: label + target, goal, measured: x ? measured('addon') : '—', status: x ? status(checks('addon')) : absent }
      if (x && Object.values(x).some((scenario) => scenario?.systems?.thread)) {
        const c = checks('thread')
        const missed = c.filter((k) => !k.ok && !k.unmeasured).map((k) => k.label)
        const verdict = missed.length ? `missed (${missed.join(', ')})` : c.some((k) => k.unmeasured) ? 'not all measured' : 'met'
        row.thread = `${measured('thread')}: ${verdict}`
      }
      rows.push(row)
    }
    const ratio = (sys, scenario, key) => v(scenario, sys, key) / v(scenario, 'lua', key)
    const shown = (sys, scenario, key, unit) => `${f.ratio(v(scenario, sys, key), v(scenario, 'lua', key))} (${unit(v(scenario, sys, key))} vs ${unit(v(scenario, 'lua', key))})`
    push('sequential emit p50 / p99', '≤ 0.8× / ≤ 0.8×',
      (sys) => `p50 ${shown(sys, x.sequential, 'p50', f.ms)}, p99 ${shown(sys, x.sequential, 'p99', f.ms)}`,
      (sys) => [atMost('p50', ratio(sys, x.sequential, 'p50'), 0.8), atMost('p99', ratio(sys, x.sequential, 'p99'), 0.8)])
    push('live delivery at 2 000/s, same process, p50 / p99', '≤ 0.8× / ≤ 0.8×',
      (sys) => `p50 ${shown(sys, x.live, 'p50', f.ms)}, p99 ${shown(sys, x.live, 'p99', f.ms)}`,
      (sys) => [atMost('p50', ratio(sys, x.live, 'p50'), 0.8), atMost('p99', ratio(sys, x.live, 'p99'), 0.8)])
    push('256 in flight, events/s: sliding window / bursts awaited together', '≥ 1.8× / ≥ 1.8×',
      (sys) => `window ${shown(sys, x.inFlight256, 'eventsPerSec', f.rate)}, bursts ${shown(sys, x.bursts256, 'eventsPerSec', f.rate)}`,
      (sys) => [atLeast('window', ratio(sys, x.inFlight256, 'eventsPerSec'), 1.8), atLeast('bursts', ratio(sys, x.bursts256, 'eventsPerSec'), 1.8)])
    push('process CPU per event: sequential / 256 in flight', '≤ 0.7× / ≤ 0.5×',
      (sys) => `sequential ${shown(sys, x.sequential, 'cpuUsPerEvent', f.us)}, 256 in flight ${shown(sys, x.inFlight256, 'cpuUsPerEvent', f.us)}`,
      (sys) => [atMost('sequential', ratio(sys, x.sequential, 'cpuUsPerEvent'), 0.7), atMost('256 in flight', ratio(sys, x.inFlight256, 'cpuUsPerEvent'), 0.5)])
  }
  return rows
}

module.exports = { evaluate, hotPath }
