'use strict'
// lean-events/vue: the composables against a fake EventSource (and fetch), in Vue effect
// scopes standing in for components: events and state as they arrive, reconnect from the last
// id, the `gap` message (read again, not silently folded), a switched stream, clean-up on
// unmount, nothing opened on the server.

const test = require('node:test')
const assert = require('node:assert/strict')
const { waitFor } = require('./helpers')

const vueModule = () => import('../vue/index.js')
const clientModule = () => import('../client/index.js')
const vue = () => import('vue')

/** A stand-in for the browser's EventSource: records what was opened; the test plays the server. */
class FakeEventSource {
  static CONNECTING = 0
  static OPEN = 1
  static CLOSED = 2
  static opened = []
  constructor(url) {
    this.url = url
    this.readyState = FakeEventSource.CONNECTING
    this.listeners = {}
    this.closed = false
    FakeEventSource.opened.push(this)
  }
  addEventListener(type, fn) {
    ;(this.listeners[type] ||= []).push(fn)
  }
  close() {
    this.closed = true
    this.readyState = FakeEventSource.CLOSED
  }
  // the server's side
  open() {
    this.readyState = FakeEventSource.OPEN
    this.onopen && this.onopen({})
  }
  send(record) {
    this.onmessage && this.onmessage({ data: JSON.stringify(record), lastEventId: record.id })
  }
  gap(after, firstId) {
    for (const fn of this.listeners.gap || []) fn({ data: JSON.stringify({ after, firstId }) })
  }
  fail(readyState) {
    this.readyState = readyState
    this.onerror && this.onerror({})
  }
}

function inBrowser(t) {
  const saved = { window: globalThis.window, EventSource: globalThis.EventSource }
  globalThis.window = globalThis
  globalThis.EventSource = FakeEventSource
  FakeEventSource.opened = []
  t.after(() => {
    if (saved.window === undefined) delete globalThis.window
    else globalThis.window = saved.window
    if (saved.EventSource === undefined) delete globalThis.EventSource
    else globalThis.EventSource = saved.EventSource
  })
}

/** A component's lifetime: run `fn` in an effect scope; `unmount()` stops it. */
async function mount(fn) {
  const { effectScope } = await vue()
  const scope = effectScope()
  const value = scope.run(fn)
  return { value, unmount: () => scope.stop() }
}

let n = 0
const ev = (kind, extra = {}) => ({ id: `${1000 + ++n}-0`, ts: new Date(Date.UTC(2026, 0, 1, 0, 0, n)).toISOString(), kind, subject: 'r1', ...extra })

test('useEventStream: events in order, lastId, status; an error the browser gave up on reconnects after the last id', async (t) => {
  inBrowser(t)
  const { useEventStream } = await vueModule()
  const { value: s, unmount } = await mount(() => useEventStream({ type: 'flow', id: 'r 1' }, { base: '/x/' }))
  t.after(unmount)
  assert.equal(FakeEventSource.opened.length, 1)
  const first = FakeEventSource.opened[0]
  assert.equal(first.url, '/x/_events/flow/r%201/stream', 'no cursor: the whole stream')
  assert.equal(s.status.value, 'connecting')
  first.open()
  assert.equal(s.status.value, 'open')
  const a = ev('flow.started', { data: { name: 'f' } })
  const b = ev('step.started', { step: 's', meta: { attempt: 1 } })
  first.send(a)
  first.send(b)
  assert.deepEqual(s.events.value, [a, b])
  assert.equal(s.lastId.value, b.id)

  // the browser reconnects by itself (with Last-Event-ID): nothing to do but say so
  first.fail(FakeEventSource.CONNECTING)
  assert.equal(s.status.value, 'reconnecting')
  assert.equal(FakeEventSource.opened.length, 1)
  first.open()

  // it gave up (an HTTP error): a new connection after the last id, after a back-off
  first.fail(FakeEventSource.CLOSED)
  assert.equal(s.status.value, 'reconnecting')
  assert.equal(s.error.value.code, 'STREAM_CLOSED')
  assert.equal(first.closed, true)
  await waitFor(() => FakeEventSource.opened.length === 2, 5000, 'the reconnect')
  const second = FakeEventSource.opened[1]
  assert.equal(second.url, `/x/_events/flow/r%201/stream?after=${encodeURIComponent(b.id)}`)
  second.open()
  assert.equal(s.error.value, null)
  const c = ev('step.completed', { step: 's', data: { result: 1 }, meta: { attempt: 1 } })
  second.send(c)
  assert.deepEqual(s.events.value, [a, b, c], 'nothing twice, nothing lost')
  // a message from the old connection is not mixed in
  first.send(ev('log'))
  assert.equal(s.events.value.length, 3)
})

test('useEventStream: `after` resumes; a gap reads the stream again from its start (and says so)', async (t) => {
  inBrowser(t)
  const { useEventStream } = await vueModule()
  const resets = []
  const { value: s, unmount } = await mount(() => useEventStream('flow/r2', { after: '5-0', onReset: (g) => resets.push(g) }))
  t.after(unmount)
  const first = FakeEventSource.opened[0]
  assert.equal(first.url, '/api/_events/flow/r2/stream?after=5-0')
  first.open()
  first.gap('5-0', '9-0')
  assert.deepEqual(s.gap.value, { after: '5-0', firstId: '9-0' })
  assert.deepEqual(resets, [{ after: '5-0', firstId: '9-0' }])
  assert.equal(first.closed, true)
  assert.equal(FakeEventSource.opened.length, 2)
  assert.equal(FakeEventSource.opened[1].url, '/api/_events/flow/r2/stream', 'read again from the start')
  const a = ev('flow.started')
  FakeEventSource.opened[1].send(a)
  assert.deepEqual(s.events.value, [a])
  assert.equal(s.lastId.value, a.id)
})

test('useFlowRun: the state is the server reducer over the events, started over after a gap', async (t) => {
  inBrowser(t)
  const { useFlowRun } = await vueModule()
  const { reduceFlowState } = await clientModule()
  const { watch, nextTick } = await vue()
  const id = (await vue()).ref('r3')
  const { value: run, unmount } = await mount(() => useFlowRun(id))
  t.after(unmount)
  let renders = 0
  watch(
    () => run.state.value.steps.fetch && run.state.value.steps.fetch.status,
    () => renders++,
  )
  const es = FakeEventSource.opened[0]
  assert.equal(es.url, '/api/_events/flow/r3/stream')
  es.open()
  const events = [
    ev('flow.started', { data: { name: 'f' } }),
    ev('step.started', { step: 'fetch', data: { input: 1 }, meta: { attempt: 1 } }),
    ev('step.failed', { step: 'fetch', data: { error: 'boom', willRetry: true }, meta: { attempt: 1 } }),
    ev('step.started', { step: 'fetch', data: { input: 1 }, meta: { attempt: 2 } }),
    ev('step.completed', { step: 'fetch', data: { result: 2 }, meta: { attempt: 2 } }),
    ev('log', { step: 'fetch', data: { level: 'info', msg: 'hi' } }),
    ev('flow.completed', { data: { duration: 5 } }),
  ]
  for (const e of events.slice(0, 3)) es.send(e)
  await nextTick()
  assert.equal(run.state.value.steps.fetch.status, 'retrying')
  assert.ok(renders >= 1, 'a change deep in the state reaches a watcher')
  for (const e of events.slice(3)) es.send(e)
  assert.deepEqual(JSON.parse(JSON.stringify(run.state.value)), reduceFlowState(events))
  assert.equal(run.state.value.status, 'completed')

  // a gap after a resume: the state starts over with what is read again
  es.gap(events[6].id, '9999-0')
  assert.deepEqual(JSON.parse(JSON.stringify(run.state.value)), reduceFlowState([]))
  const again = FakeEventSource.opened[1]
  for (const e of events) again.send(e)
  assert.deepEqual(JSON.parse(JSON.stringify(run.state.value)), reduceFlowState(events))

  // another run id (a route change): the old stream closes, the new one opens, the state is new
  id.value = 'r4'
  await nextTick()
  assert.equal(again.closed, true)
  assert.equal(FakeEventSource.opened[2].url, '/api/_events/flow/r4/stream')
  assert.equal(run.state.value.status, 'unknown', 'no event of the new run yet')
  assert.deepEqual(run.state.value.steps, {})
})

test('unmount closes the stream and cancels a pending reconnect', async (t) => {
  inBrowser(t)
  const { useEventStream } = await vueModule()
  const { value: s, unmount } = await mount(() => useEventStream({ type: 'flow', id: 'r5' }))
  const es = FakeEventSource.opened[0]
  es.open()
  es.fail(FakeEventSource.CLOSED) // a reconnect is now due in 0.5 s
  unmount()
  assert.equal(s.status.value, 'closed')
  assert.equal(es.closed, true)
  // past the reconnect's due time: still one connection
  const until = Date.now() + 900
  await waitFor(() => Date.now() >= until, 2000, 'the reconnect delay to pass')
  assert.equal(FakeEventSource.opened.length, 1, 'no reconnect after unmount')
  es.send(ev('log'))
  assert.equal(s.events.value.length, 0)
})

test('on the server (no window): nothing is opened, the state is the empty one', async (t) => {
  const saved = globalThis.EventSource
  let opened = 0
  globalThis.EventSource = class {
    constructor() {
      opened++
    }
  }
  t.after(() => {
    if (saved === undefined) delete globalThis.EventSource
    else globalThis.EventSource = saved
  })
  assert.equal(typeof globalThis.window, 'undefined')
  const { useFlowRun, useRuns } = await vueModule()
  const { value: run, unmount } = await mount(() => useFlowRun('r6'))
  const { value: runs, unmount: unmount2 } = await mount(() => useRuns('f'))
  assert.equal(opened, 0)
  assert.equal(run.status.value, 'idle')
  assert.equal(run.state.value.status, 'unknown')
  assert.deepEqual(runs.runs.value, [])
  unmount()
  unmount2()
})

test('useRuns reads the runs with their status and again on refresh, filtered by status on the server with nextOffset to go on; fireTrigger posts JSON and surfaces the error code', async (t) => {
  inBrowser(t)
  const saved = globalThis.fetch
  t.after(() => {
    globalThis.fetch = saved
  })
  const calls = []
  let answer = { status: 200, body: { name: 'f', runs: [{ id: 'a', startedAt: 'x', status: 'running' }] } }
  globalThis.fetch = async (url, init) => {
    calls.push({ url, init })
    return new Response(JSON.stringify(answer.body), { status: answer.status, headers: { 'content-type': 'application/json' } })
  }
  const { useRuns, fireTrigger } = await vueModule()
  const { value: r, unmount } = await mount(() => useRuns('my flow', { limit: 5, intervalMs: 0 }))
  t.after(unmount)
  await waitFor(() => r.status.value === 'ready', 5000, 'the first read')
  assert.equal(calls[0].url, '/api/_flows/my%20flow/runs?state=1&limit=5&offset=0')
  assert.deepEqual(r.runs.value, answer.body.runs)
  assert.equal(r.nextOffset.value, null, 'an answer without nextOffset: the end')
  answer = { status: 200, body: { name: 'f', runs: [{ id: 'a', startedAt: 'x', status: 'completed' }], nextOffset: 5 } }
  await r.refresh()
  assert.equal(r.runs.value[0].status, 'completed')
  assert.equal(r.nextOffset.value, 5)

  // status: the server filters (?status=), a new value reads again from the given offset
  const { ref } = await vue()
  const only = ref('failed')
  const offset = ref(0)
  answer = { status: 200, body: { name: 'f', status: 'failed', runs: [], scanned: 1000, nextOffset: 1000 } }
  const { value: f, unmount: unmountFiltered } = await mount(() => useRuns('f', { status: only, offset, intervalMs: 0 }))
  t.after(unmountFiltered)
  await waitFor(() => f.status.value === 'ready', 5000, 'the filtered read')
  assert.equal(calls[calls.length - 1].url, '/api/_flows/f/runs?state=1&limit=20&offset=0&status=failed')
  assert.deepEqual(f.runs.value, [])
  assert.equal(f.nextOffset.value, 1000, 'none among the first 1000: go on from there')
  answer = { status: 200, body: { name: 'f', status: 'failed', runs: [{ id: 'old', startedAt: 'x', status: 'failed' }], scanned: 3, nextOffset: null } }
  offset.value = f.nextOffset.value
  await waitFor(() => f.runs.value.length === 1, 5000, 'the next filtered read')
  assert.equal(calls[calls.length - 1].url, '/api/_flows/f/runs?state=1&limit=20&offset=1000&status=failed')
  assert.equal(f.nextOffset.value, null)
  const before = calls.length
  only.value = null
  await waitFor(() => calls.length > before, 5000, 'the unfiltered read')
  assert.equal(calls[calls.length - 1].url, '/api/_flows/f/runs?state=1&limit=20&offset=1000')

  answer = { status: 200, body: { id: 't1', status: 'fired' } }
  assert.deepEqual(await fireTrigger('t1', { ok: true }), { id: 't1', status: 'fired' })
  const post = calls[calls.length - 1]
  assert.equal(post.url, '/api/_triggers/t1')
  assert.equal(post.init.method, 'POST')
  assert.equal(post.init.body, '{"ok":true}')
  answer = { status: 409, body: { statusCode: 409, code: 'TRIGGER_RESOLVED', message: 'already fired' } }
  await assert.rejects(fireTrigger('t1', {}), { code: 'TRIGGER_RESOLVED', status: 409, message: 'already fired' })
})

test('useRuns: a listed run follows the flow.* events of a stream already open on the page, and opens none itself', async (t) => {
  inBrowser(t)
  const saved = globalThis.fetch
  t.after(() => {
    globalThis.fetch = saved
  })
  let reads = 0
  globalThis.fetch = async () => {
    reads++
    const body = { name: 'f', runs: [{ id: 'r9', startedAt: 'x', status: 'running' }, { id: 'r8', startedAt: 'w', status: 'running' }], nextOffset: null }
    return new Response(JSON.stringify(body), { status: 200, headers: { 'content-type': 'application/json' } })
  }
  const { useRuns, useFlowRun } = await vueModule()
  const { value: list, unmount } = await mount(() => useRuns('f', { intervalMs: 0 }))
  t.after(unmount)
  await waitFor(() => list.status.value === 'ready', 5000, 'the first read')
  assert.equal(FakeEventSource.opened.length, 0, 'useRuns opens no stream')

  const { value: run, unmount: closeRun } = await mount(() => useFlowRun('r9'))
  assert.equal(FakeEventSource.opened.length, 1)
  const es = FakeEventSource.opened[0]
  es.open()
  es.send({ ...ev('flow.started', { data: { name: 'f' } }), subject: 'r9' })
  assert.equal(list.runs.value[0].status, 'running')
  const done = { ...ev('flow.completed', { data: { duration: 5 } }), subject: 'r9' }
  es.send(done)
  assert.equal(run.state.value.status, 'completed')
  assert.deepEqual(list.runs.value[0], { id: 'r9', startedAt: 'x', status: 'completed', completedAt: done.ts })
  assert.equal(list.runs.value[1].status, 'running', 'the other run is untouched')
  assert.equal(reads, 1, 'no read of the runs route')

  // unmounted, the list no longer listens
  unmount()
  es.send({ ...ev('flow.failed', { data: { error: { message: 'late' } } }), subject: 'r9' })
  assert.equal(list.runs.value[0].status, 'completed')
  closeRun()
})
