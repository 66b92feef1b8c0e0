// The lean-events run dashboard (served at /_lean-events by lean-events/nuxt with
// `dashboard: true`, and shown in a Nuxt DevTools tab). Plain browser ESM, no build step:
//   /_lean-events?flow=&status=&offset= a flow's runs: status filter (on the server), run id
//                                       search, pages
//   /_lean-events/runs/:id              one run, live: waterfall of steps and attempts, each
//                                       attempt's input, result or error, logs and events,
//                                       pending awaits (fire or cancel a trigger)
// Everything is read from /_lean-events/api/… (the lean-events/nitro handlers); a run's events
// arrive over Server-Sent Events and are folded by the server's reducer (lean-events/client).

import { applyFlowEvent, initialFlowState } from './client/index.js'

const API = '/_lean-events/api'
const PAGE_SIZE = 20
const $app = document.getElementById('app')
const $conn = document.getElementById('conn')

// ---------------------------------------------------------------------------------------------
// small DOM helpers

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue
    if (k === 'class') node.className = v
    else if (k === 'style') node.style.cssText = v
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v)
    else node.setAttribute(k, v === true ? '' : String(v))
  }
  return fill(node, children, false)
}

/** Put `children` (nested arrays; null, undefined and false left out) into `node`. */
function fill(node, children, replace = true) {
  const nodes = []
  for (const c of [children].flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue
    nodes.push(c instanceof Node ? c : document.createTextNode(String(c)))
  }
  if (replace) node.replaceChildren(...nodes)
  else node.append(...nodes)
  return node
}

const json = (v) => (v === undefined ? '' : JSON.stringify(v, null, 2))
const time = (iso) => (iso ? new Date(iso).toLocaleTimeString(undefined, { hour12: false }) : '')
/** A duration for people: 840 ms, 2.35 s, 14.2 s, 3 min 20 s, 1 h 5 min. */
function ms(n) {
  if (n === undefined || n === null || Number.isNaN(n)) return ''
  if (n < 1000) return `${Math.round(n)} ms`
  if (n < 60_000) return `${(n / 1000).toFixed(n < 10_000 ? 2 : 1)} s`
  const s = Math.round(n / 1000)
  if (s < 3600) return `${Math.floor(s / 60)} min${s % 60 ? ` ${s % 60} s` : ''}`
  const m = Math.round(s / 60)
  return `${Math.floor(m / 60)} h${m % 60 ? ` ${m % 60} min` : ''}`
}
const tsOf = (e) => Date.parse(e.ts)

function setConn(text, cls) {
  $conn.textContent = text
  $conn.className = `conn ${cls || ''}`
}

async function api(path, init) {
  const res = await fetch(`${API}${path}`, { headers: { accept: 'application/json', 'content-type': 'application/json' }, ...init })
  const text = await res.text()
  let body
  try {
    body = text ? JSON.parse(text) : undefined
  } catch {
    body = undefined
  }
  if (!res.ok) throw Object.assign(new Error((body && body.message) || `HTTP ${res.status}`), { status: res.status, code: body && body.code })
  return body
}

function navigate(url) {
  history.pushState(null, '', url)
  route()
}

document.addEventListener('click', (e) => {
  const a = e.target.closest && e.target.closest('a[data-nav]')
  if (!a || e.metaKey || e.ctrlKey || e.shiftKey || e.button !== 0) return
  e.preventDefault()
  navigate(a.getAttribute('href'))
})
window.addEventListener('popstate', () => route())

// ---------------------------------------------------------------------------------------------
// routing

let teardown = () => {}

function route() {
  teardown()
  teardown = () => {}
  const path = location.pathname.replace(/\/+$/, '')
  const m = /^\/_lean-events\/runs\/(.+)$/.exec(path)
  if (m) teardown = runPage(decodeURIComponent(m[1]))
  else teardown = runsPage(new URLSearchParams(location.search))
}

// ---------------------------------------------------------------------------------------------
// the runs of a flow

function runsPage(query) {
  let stopped = false
  let timer = null
  const state = {
    flow: query.get('flow') || '',
    status: query.get('status') || '',
    // the position in the flow's run index (newest first) this page starts at
    offset: Math.max(0, Math.trunc(Number(query.get('offset'))) || 0),
    flows: [],
    runs: [],
    nextOffset: null,
    scanned: 0,
    error: null,
  }
  document.title = 'Runs · lean-events'
  setConn('', '')

  const urlFor = (over = {}) => {
    const q = new URLSearchParams()
    const s = { ...state, ...over }
    if (s.flow) q.set('flow', s.flow)
    if (s.status) q.set('status', s.status)
    if (s.offset > 0) q.set('offset', String(s.offset))
    const qs = q.toString()
    return `/_lean-events${qs ? `?${qs}` : ''}`
  }

  async function load() {
    if (!state.flow) return
    try {
      // the server filters by status: it reads the run index from offset on (up to its cap of
      // runs per request) and says where the next page starts
      const q = new URLSearchParams({ state: '1', limit: String(PAGE_SIZE), offset: String(state.offset) })
      if (state.status) q.set('status', state.status)
      const body = await api(`/_flows/${encodeURIComponent(state.flow)}/runs?${q}`)
      state.runs = body.runs
      state.nextOffset = body.nextOffset ?? null
      state.scanned = body.scanned ?? body.runs.length
      state.error = null
      setConn('live', 'live')
    } catch (err) {
      state.error = err
      setConn('error', 'down')
    }
  }

  function render() {
    const shown = state.runs
    const more = state.nextOffset !== null
    const empty = !state.status
      ? 'No runs on this page.'
      : more
        ? `No ${state.status} runs among the ${state.scanned} runs read here; older ones may have some.`
        : `No ${state.status} runs${state.offset > 0 ? ' further back' : ''}.`
    const flowInput = h('input', { name: 'flow', list: 'flows', placeholder: 'flow name', value: state.flow, 'data-testid': 'flow' })
    const search = h('input', { name: 'run', placeholder: 'run id', 'data-testid': 'search' })
    fill($app, [
      h(
        'form',
        {
          class: 'toolbar',
          onsubmit: (e) => {
            e.preventDefault()
            navigate(urlFor({ flow: flowInput.value.trim(), offset: 0 }))
          },
        },
        h('label', {}, 'Flow ', flowInput),
        h('datalist', { id: 'flows' }, state.flows.map((f) => h('option', { value: f }))),
        h(
          'label',
          {},
          'Status ',
          h(
            'select',
            { 'data-testid': 'status-filter', onchange: (e) => navigate(urlFor({ status: e.target.value, offset: 0 })) },
            ['', 'running', 'completed', 'failed', 'cancelled'].map((s) => h('option', { value: s, selected: s === state.status }, s || 'all')),
          ),
        ),
        h('button', { type: 'submit' }, 'Show'),
      ),
      h(
        'form',
        {
          class: 'toolbar',
          onsubmit: (e) => {
            e.preventDefault()
            const id = search.value.trim()
            if (id) navigate(`/_lean-events/runs/${encodeURIComponent(id)}`)
          },
        },
        h('label', {}, 'Open run ', search),
        h('button', { type: 'submit' }, 'Open'),
      ),
      state.error ? h('p', { class: 'error' }, `Could not read the runs: ${state.error.message}`) : null,
      !state.flow
        ? h('p', { class: 'muted' }, 'Pick a flow: ', state.flows.map((f) => [h('a', { href: urlFor({ flow: f, offset: 0 }), 'data-nav': true }, f), ' ']))
        : h(
            'table',
            {
              class: 'runs',
              'data-testid': 'runs',
              'data-flow': state.flow,
              'data-filter': state.status || 'all',
              'data-offset': state.offset,
              'data-next-offset': more ? state.nextOffset : 'none',
            },
            h('thead', {}, h('tr', {}, h('th', {}, 'Run'), h('th', {}, 'Status'), h('th', {}, 'Started'), h('th', {}, 'Completed'))),
            h(
              'tbody',
              {},
              shown.length === 0 ? h('tr', {}, h('td', { colspan: 4, class: 'muted', 'data-testid': 'no-runs' }, empty)) : null,
              shown.map((r) =>
                h(
                  'tr',
                  { 'data-run': r.id, 'data-status': r.status },
                  h('td', {}, h('a', { href: `/_lean-events/runs/${encodeURIComponent(r.id)}`, 'data-nav': true }, r.id)),
                  h('td', {}, h('span', { class: `badge ${r.status}` }, r.status || '')),
                  h('td', {}, r.startedAt ? new Date(r.startedAt).toLocaleString() : ''),
                  h('td', {}, r.completedAt ? new Date(r.completedAt).toLocaleString() : ''),
                ),
              ),
            ),
          ),
      state.flow
        ? h(
            'nav',
            { class: 'pager' },
            // a filtered page's start cannot be worked back from this one's: back to the newest
            state.offset > 0
              ? state.status
                ? h('a', { href: urlFor({ offset: 0 }), 'data-nav': true, 'data-testid': 'prev' }, '← newest')
                : h('a', { href: urlFor({ offset: Math.max(0, state.offset - PAGE_SIZE) }), 'data-nav': true, 'data-testid': 'prev' }, '← newer')
              : null,
            h(
              'span',
              { 'data-testid': 'range' },
              state.status && state.scanned > 0
                ? ` runs ${state.offset + 1}–${state.offset + state.scanned} of the index read `
                : !state.status && shown.length > 0
                  ? ` runs ${state.offset + 1}–${state.offset + shown.length} `
                  : ' ',
            ),
            more ? h('a', { href: urlFor({ offset: state.nextOffset }), 'data-nav': true, 'data-testid': 'next' }, 'older →') : null,
          )
        : null,
    ])
  }

  ;(async () => {
    try {
      state.flows = (await api('/flows')).flows
    } catch (err) {
      state.error = err
    }
    if (!state.flow && state.flows.length === 1) state.flow = state.flows[0]
    await load()
    if (stopped) return
    render()
    const tick = async () => {
      await load()
      if (stopped) return
      // re-render unless the user is typing in the form
      if (!document.activeElement || !document.activeElement.closest('form')) render()
      timer = setTimeout(tick, 2000)
    }
    timer = setTimeout(tick, 2000)
  })()

  return () => {
    stopped = true
    if (timer) clearTimeout(timer)
  }
}

// ---------------------------------------------------------------------------------------------
// one run

/** Each step's attempts from the run's events: start, end, awaits, input, result/error, logs, events. */
function attemptsOf(events) {
  const steps = new Map()
  const current = new Map()
  const attemptFor = (e) => {
    if (!steps.has(e.step)) steps.set(e.step, [])
    const list = steps.get(e.step)
    const n = e.meta && typeof e.meta.attempt === 'number' ? e.meta.attempt : undefined
    if (e.kind === 'step.started') {
      const a = { n: n ?? list.length + 1, start: tsOf(e), input: e.data && e.data.input, awaits: [], logs: [], events: [], status: 'running' }
      list.push(a)
      current.set(e.step, a)
      return a
    }
    return current.get(e.step) || (list.length ? list[list.length - 1] : null)
  }
  for (const e of events) {
    if (!e.step) continue
    if (e.kind === 'step.retry') continue
    const a = attemptFor(e)
    if (!a) continue
    a.events.push(e)
    switch (e.kind) {
      case 'step.completed':
        a.status = 'completed'
        a.end = tsOf(e)
        a.result = e.data && e.data.result
        break
      case 'step.failed':
        a.status = e.data && e.data.willRetry ? 'failed, retried' : 'failed'
        a.end = tsOf(e)
        a.error = e.data
        break
      case 'step.await.time':
      case 'step.await.event':
      case 'step.await.trigger':
        a.awaits.push({ type: e.kind.slice('step.await.'.length), start: tsOf(e), data: e.data })
        a.status = 'waiting'
        break
      case 'step.resumed':
      case 'step.await.timeout': {
        const open = a.awaits.find((w) => w.end === undefined)
        if (open) {
          open.end = tsOf(e)
          open.outcome = e.kind === 'step.resumed' ? 'resumed' : 'timed out'
        }
        a.status = e.kind === 'step.resumed' ? 'running' : 'timeout'
        break
      }
      case 'log':
        a.logs.push(e)
        break
      default:
    }
  }
  return steps
}

function runPage(id) {
  let flow = initialFlowState()
  let events = []
  let source = null
  let stopped = false
  let renderQueued = false
  let clock = null
  const busy = new Set()
  const messages = new Map()
  const open = new Set()
  document.title = `Run ${id} · lean-events`

  const url = (after) => `${API}/_events/flow/${encodeURIComponent(id)}/stream${after ? `?after=${encodeURIComponent(after)}` : ''}`

  function connect() {
    const es = new EventSource(url())
    source = es
    setConn('connecting…', '')
    es.onopen = () => setConn('live', 'live')
    es.onmessage = (msg) => {
      let e
      try {
        e = JSON.parse(msg.data)
      } catch {
        return
      }
      events.push(e)
      flow = applyFlowEvent(flow, e)
      queueRender()
    }
    // older entries were trimmed while we were away: read what is left from the start
    es.addEventListener('gap', () => {
      es.close()
      events = []
      flow = initialFlowState()
      if (!stopped) connect()
    })
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) {
        setConn('closed', 'down')
        // e.g. 403: show it once instead of retrying in a loop
        fetch(url(), { headers: { accept: 'text/event-stream' } }).then(
          (res) => {
            if (!res.ok) {
              messages.set('stream', `the event stream answered ${res.status}`)
              queueRender()
            }
            res.body && res.body.cancel()
          },
          () => {},
        )
      } else setConn('reconnecting…', 'down')
    }
  }

  function queueRender() {
    if (renderQueued) return
    renderQueued = true
    requestAnimationFrame(() => {
      renderQueued = false
      if (!stopped) render()
    })
  }

  async function act(key, fn, done) {
    busy.add(key)
    queueRender()
    try {
      await fn()
      messages.set(key, done)
    } catch (err) {
      messages.set(key, `${err.code || 'ERROR'}: ${err.message}`)
    } finally {
      busy.delete(key)
      queueRender()
    }
  }

  function fire(triggerId, textarea) {
    let payload
    try {
      payload = textarea.value.trim() ? JSON.parse(textarea.value) : null
    } catch {
      messages.set(`fire:${triggerId}`, 'the payload must be JSON')
      queueRender()
      return
    }
    act(`fire:${triggerId}`, () => api(`/_triggers/${encodeURIComponent(triggerId)}`, { method: 'POST', body: JSON.stringify(payload) }), 'fired')
  }

  function cancel(triggerId) {
    act(
      `fire:${triggerId}`,
      () => api(`/_triggers/${encodeURIComponent(triggerId)}/cancel`, { method: 'POST', body: JSON.stringify({ reason: 'cancelled from the dashboard' }) }),
      'cancelled',
    )
  }

  function pendingAwaits() {
    const list = []
    for (const [name, step] of Object.entries(flow.steps || {})) {
      if (step.status !== 'waiting') continue
      list.push({ step: name, type: step.awaitType, data: step.awaitData || {} })
    }
    // the awaits of the flow function itself (ctx.await.* in defineFlow), shown under its name
    for (const w of Array.isArray(flow.waiting) ? flow.waiting : []) {
      list.push({ step: flow.name || 'flow', type: w.awaitType, data: w.awaitData || {} })
    }
    return list
  }

  function awaitView(w) {
    const d = w.data
    if (w.type === 'time') {
      const due = Date.parse(d.resumeAt)
      return h(
        'li',
        { 'data-testid': 'pending-timer', 'data-step': w.step },
        h('b', {}, `${w.step}: timer`),
        ` due ${d.resumeAt ? new Date(due).toLocaleString() : '?'} `,
        Number.isFinite(due) ? h('span', { class: 'muted' }, `(in ${ms(Math.max(0, due - Date.now()))})`) : null,
      )
    }
    if (w.type === 'event') {
      return h(
        'li',
        { 'data-testid': 'pending-event', 'data-step': w.step },
        h('b', {}, `${w.step}: event `),
        h('code', {}, d.eventKind || '?'),
        d.match && Object.keys(d.match).length ? [' matching ', h('code', {}, JSON.stringify(d.match))] : null,
        d.timeout ? h('span', { class: 'muted' }, ` (timeout ${ms(d.timeout)})`) : null,
      )
    }
    const key = `fire:${d.triggerId}`
    const ta = h('textarea', { rows: 2, 'data-testid': 'payload', placeholder: '{"approved": true}' }, '{"approved": true}')
    return h(
      'li',
      { 'data-testid': 'pending-trigger', 'data-step': w.step, 'data-trigger': d.triggerId },
      h('b', {}, `${w.step}: trigger `),
      h('code', {}, d.triggerId),
      d.triggerType ? ` (${d.triggerType})` : null,
      d.payload !== undefined ? h('pre', {}, json(d.payload)) : null,
      h(
        'div',
        { class: 'actions' },
        ta,
        h('button', { 'data-testid': 'fire', disabled: busy.has(key), onclick: () => fire(d.triggerId, ta) }, 'Fire'),
        h('button', { 'data-testid': 'cancel', class: 'secondary', disabled: busy.has(key), onclick: () => cancel(d.triggerId) }, 'Cancel'),
        messages.has(key) ? h('span', { 'data-testid': 'action-result' }, messages.get(key)) : null,
      ),
    )
  }

  function details(key, summary, ...body) {
    const d = h('details', { open: open.has(key) }, h('summary', {}, summary), ...body)
    d.addEventListener('toggle', () => (d.open ? open.add(key) : open.delete(key)))
    return d
  }

  function render() {
    const t0 = flow.startedAt ? Date.parse(flow.startedAt) : events.length ? tsOf(events[0]) : Date.now()
    const done = flow.status === 'completed' || flow.status === 'failed' || flow.status === 'cancelled'
    const tEnd = done && flow.completedAt ? Date.parse(flow.completedAt) : Date.now()
    const span = Math.max(1, tEnd - t0)
    const pct = (t) => `${(Math.min(Math.max(0, t - t0), span) / span) * 100}%`
    const width = (a, b) => `${Math.max(0.4, ((Math.min(b, tEnd) - Math.max(a, t0)) / span) * 100)}%`
    const steps = attemptsOf(events)
    const pending = pendingAwaits()

    fill($app, [
      h('p', {}, h('a', { href: `/_lean-events${flow.name ? `?flow=${encodeURIComponent(flow.name)}` : ''}`, 'data-nav': true }, '← runs')),
      h(
        'h1',
        {},
        'Run ',
        h('code', {}, id),
        ' ',
        h('span', { class: `badge ${flow.status}`, 'data-testid': 'run-status', 'data-status': events.length ? flow.status : 'unknown' }, events.length ? flow.status : 'no events yet'),
      ),
      h(
        'p',
        { class: 'muted' },
        flow.name ? `flow ${flow.name} · ` : '',
        flow.startedAt ? `started ${new Date(flow.startedAt).toLocaleString()} · ` : '',
        done ? `took ${ms(flow.duration ?? tEnd - t0)}` : `running for ${ms(Date.now() - t0)}`,
        ` · ${events.length} events`,
      ),
      messages.has('stream') ? h('p', { class: 'error' }, messages.get('stream')) : null,
      flow.status === 'failed' && flow.error ? h('pre', { class: 'error' }, json(flow.error)) : null,

      h('h2', {}, 'Pending'),
      pending.length ? h('ul', { class: 'pending' }, pending.map(awaitView)) : h('p', { class: 'muted' }, 'Nothing is waiting.'),

      h('h2', {}, 'Timeline'),
      h(
        'div',
        { class: 'waterfall', 'data-testid': 'timeline' },
        [...steps.entries()].map(([name, attempts]) =>
          attempts.map((a) =>
            h(
              'div',
              { class: 'lane', 'data-testid': 'attempt', 'data-step': name, 'data-attempt': a.n, 'data-status': a.status },
              h('div', { class: 'label' }, `${name} #${a.n}`),
              h(
                'div',
                { class: 'track' },
                h(
                  'div',
                  { class: `bar ${a.status.split(',')[0]}`, style: `left:${pct(a.start)};width:${width(a.start, a.end ?? tEnd)}`, title: `${a.status} · ${ms((a.end ?? tEnd) - a.start)}` },
                  a.awaits.map((w) =>
                    h('div', {
                      class: 'wait',
                      style: `left:${(((w.start - a.start) / Math.max(1, (a.end ?? tEnd) - a.start)) * 100).toFixed(2)}%;width:${((((w.end ?? a.end ?? tEnd) - w.start) / Math.max(1, (a.end ?? tEnd) - a.start)) * 100).toFixed(2)}%`,
                      title: `await ${w.type}${w.outcome ? `, ${w.outcome}` : ''}`,
                    }),
                  ),
                ),
              ),
              h('div', { class: 'dur' }, a.end ? ms(a.end - a.start) : a.status),
            ),
          ),
        ),
      ),

      h('h2', {}, 'Attempts'),
      [...steps.entries()].map(([name, attempts]) =>
        attempts.map((a) =>
          details(
            `attempt:${name}:${a.n}`,
            h('span', {}, h('b', {}, `${name} #${a.n}`), ' ', h('span', { class: `badge ${a.status.split(',')[0]}` }, a.status), ` ${time(new Date(a.start).toISOString())}${a.end ? ` · ${ms(a.end - a.start)}` : ''}`),
            h('h4', {}, 'Input'),
            h('pre', {}, json(a.input)),
            a.result !== undefined ? [h('h4', {}, 'Result'), h('pre', { 'data-testid': 'result' }, json(a.result))] : null,
            a.error !== undefined
              ? [
                  h('h4', {}, 'Error'),
                  h(
                    'pre',
                    { class: 'error', 'data-testid': 'error' },
                    typeof a.error.error === 'string' ? a.error.error : json(a.error.error ?? a.error),
                    a.error.stack ? `\n\n${a.error.stack}` : '',
                    a.error.willRetry ? `\n\nretried at ${a.error.nextRetryAt}` : '',
                  ),
                ]
              : null,
            a.awaits.length
              ? [h('h4', {}, 'Awaits'), h('ul', {}, a.awaits.map((w) => h('li', {}, `${w.type} ${JSON.stringify(w.data)}${w.end ? ` · ${w.outcome} after ${ms(w.end - w.start)}` : ' · waiting'}`)))]
              : null,
            a.logs.length ? [h('h4', {}, 'Logs'), h('ul', { class: 'logs' }, a.logs.map((l) => h('li', {}, `${time(l.ts)} [${(l.data && l.data.level) || 'info'}] ${(l.data && l.data.msg) || ''}`)))] : null,
          ),
        ),
      ),

      h('h2', {}, 'Events'),
      h(
        'table',
        { class: 'events', 'data-testid': 'events' },
        h('tbody', {}, events.map((e) => h('tr', { 'data-kind': e.kind }, h('td', {}, time(e.ts)), h('td', {}, h('code', {}, e.kind)), h('td', {}, e.step || ''), h('td', {}, e.data === undefined ? '' : details(`event:${e.id}`, h('code', {}, shorten(JSON.stringify(e.data))), h('pre', {}, json(e.data), e.meta ? `\nmeta ${json(e.meta)}` : '')))))),
      ),
    ])
  }

  function shorten(s) {
    return s.length > 80 ? `${s.slice(0, 77)}…` : s
  }

  connect()
  render()
  // durations of what is still running grow with the clock
  clock = setInterval(() => {
    if (flow.status === 'running') queueRender()
  }, 1000)

  return () => {
    stopped = true
    clearInterval(clock)
    if (source) source.close()
  }
}

route()
