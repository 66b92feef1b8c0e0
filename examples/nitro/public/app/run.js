// The run page: the run's events over Server-Sent Events, folded into its state in the browser
// with the same reducer the server uses (lean-events/client).
import { applyFlowEvent, initialFlowState } from 'lean-events/client'

const id = decodeURIComponent(location.pathname.split('/').filter(Boolean).pop())
const $ = (sel) => document.querySelector(sel)

let state = initialFlowState()
const events = []
let firing = false

$('#run-id').textContent = id
document.title = `Run ${id} · lean-events`

const source = new EventSource(`/api/_flows/example-flow/runs/${encodeURIComponent(id)}/stream`)
const onEvent = (msg) => {
  const event = JSON.parse(msg.data)
  events.push(event)
  state = applyFlowEvent(state, event)
  render()
  appendEvent(event)
}
// every event arrives as an unnamed message (its kind is in the record)
source.onmessage = onEvent
source.onopen = () => setConn('live', 'live')
source.onerror = () => setConn(source.readyState === EventSource.CLOSED ? 'closed' : 'reconnecting…', 'down')

function setConn(text, cls) {
  const el = $('#conn')
  el.textContent = text
  el.className = `conn ${cls}`
}

const time = (iso) => (iso ? new Date(iso).toLocaleTimeString() : '')
const short = (v) => {
  if (v === undefined) return ''
  const s = JSON.stringify(v)
  return s.length > 90 ? `${s.slice(0, 87)}…` : s
}
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') node.className = v
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v)
    else node.setAttribute(k, v)
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)))
  return node
}

function waitCell(step, name) {
  if (step.status !== 'waiting' && step.status !== 'timeout') return ''
  const d = step.awaitData || {}
  if (step.awaitType === 'time') {
    const left = Math.max(0, Math.round((Date.parse(d.resumeAt) - Date.now()) / 100) / 10)
    return el('span', {}, `timer until ${time(d.resumeAt)}`, el('span', { class: 'muted' }, ` (${left}s)`))
  }
  if (step.awaitType === 'trigger') {
    const question = d.payload && d.payload.question ? el('div', { class: 'question' }, d.payload.question) : ''
    const wrap = el('span', {}, question, `trigger `, el('code', {}, d.triggerId || '?'), ' ')
    if (step.status === 'waiting' && d.triggerId) {
      wrap.append(
        el('button', { 'data-testid': 'fire-trigger', 'data-step': name, onclick: () => fire(d.triggerId), ...(firing ? { disabled: '' } : {}) }, 'Approve (fire trigger)'),
      )
    }
    return wrap
  }
  if (step.awaitType === 'event') return el('span', {}, `event ${d.eventKind || ''}`)
  return step.awaitType || ''
}

const retries = (name) => events.filter((e) => e.kind === 'step.retry' && e.step === name).length

function detail(step) {
  if (step.status === 'completed') return short(step.result)
  if (step.error) return short(step.error.error ?? step.error)
  return ''
}

function render() {
  const status = $('#flow-status')
  status.textContent = state.status
  status.className = `badge ${state.status}`
  status.dataset.status = state.status
  const parts = []
  if (state.name) parts.push(state.name)
  if (state.startedAt) parts.push(`started ${time(state.startedAt)}`)
  if (state.completedAt) parts.push(`ended ${time(state.completedAt)}`)
  if (state.duration !== undefined) parts.push(`${(state.duration / 1000).toFixed(1)} s`)
  $('#summary').textContent = parts.join(' · ')

  const rows = Object.entries(state.steps).map(([name, step]) =>
    el('tr', { 'data-step': name, 'data-status': step.status },
      el('td', {}, el('code', {}, name)),
      el('td', {}, el('span', { class: `badge ${step.status}` }, step.status)),
      el('td', { class: 'num' }, step.attempt, retries(name) ? el('span', { class: 'muted' }, ` (${retries(name)} ${retries(name) === 1 ? 'retry' : 'retries'})`) : ''),
      el('td', {}, waitCell(step, name)),
      el('td', { class: 'detail' }, detail(step)),
    ),
  )
  // the awaits of the flow function itself (ctx.await.*), pending: listed under the flow's name
  for (const w of state.waiting ?? []) {
    const name = state.name || 'flow'
    const pending = { status: 'waiting', awaitType: w.awaitType, awaitData: w.awaitData }
    rows.push(
      el('tr', { 'data-step': name, 'data-status': 'waiting' },
        el('td', {}, el('code', {}, name)),
        el('td', {}, el('span', { class: 'badge waiting' }, 'waiting')),
        el('td', { class: 'num' }, ''),
        el('td', {}, waitCell(pending, name)),
        el('td', { class: 'detail' }, w.since ? `since ${time(w.since)}` : ''),
      ),
    )
  }
  $('#steps').replaceChildren(...(rows.length ? rows : [el('tr', {}, el('td', { colspan: '5', class: 'muted' }, 'no step yet'))]))

  const logs = state.logs.map((l) => el('li', { class: `log ${l.level || ''}` },
    el('span', { class: 'muted' }, time(l.ts)), ' ', l.step ? el('code', {}, l.step) : '', ' ', l.msg || ''))
  $('#logs').replaceChildren(...logs)
  $('#event-count').textContent = events.length
  if (state.status !== 'running') source.close(), setConn('done', 'done')
}

function appendEvent(e) {
  $('#events').append(el('li', {}, el('code', {}, e.id), ' ', e.kind, e.step ? ` (${e.step})` : ''))
}

async function fire(triggerId) {
  firing = true
  render()
  const msg = $('#message')
  try {
    const res = await fetch(`/api/_triggers/${encodeURIComponent(triggerId)}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ approved: true, by: 'browser', at: new Date().toISOString() }),
    })
    const body = await res.json().catch(() => ({}))
    msg.textContent = res.ok ? `trigger fired (${res.status})` : `could not fire: ${res.status} ${body.code || ''} ${body.message || ''}`
    msg.className = `message ${res.ok ? 'ok' : 'err'}`
  } catch (err) {
    msg.textContent = `could not fire: ${err.message}`
    msg.className = 'message err'
  } finally {
    firing = false
    render()
  }
}

// keep the timer countdown moving while a step waits
setInterval(() => {
  const timer = (s) => s.status === 'waiting' && s.awaitType === 'time'
  if (Object.values(state.steps).some(timer) || (state.waiting ?? []).some((w) => w.awaitType === 'time')) render()
}, 500)
