'use strict'
// lean-events/nvent, the Nuxt module: what it adds to a Nuxt app, where its Nitro plugin goes
// among the others, where it takes its settings from, and what the plugin registers (with
// LEAN_EVENTS=1) or does not (without), run against nvent's hook with #imports shimmed.

const test = require('node:test')
const assert = require('node:assert/strict')
const path = require('node:path')
const { REDIS_URL, CLUSTER, uniquePrefix, deleteRedisPrefix, waitFor, expectCode } = require('./helpers.js')
const { importWithShims, shimState } = require('./fixtures/nvent-reference/load.js')

const moduleEntry = import('../nvent/index.js')
const config = import('../nvent/runtime/config.js')
const PLUGIN = path.join(__dirname, '..', 'nvent', 'runtime', 'plugin.js')

/** Run `fn` with some environment variables set (undefined: unset), then restore them. */
async function withEnv(vars, fn) {
  const saved = {}
  for (const [k, v] of Object.entries(vars)) {
    saved[k] = process.env[k]
    if (v === undefined) delete process.env[k]
    else process.env[k] = v
  }
  try {
    return await fn()
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k]
      else process.env[k] = v
    }
  }
}

test('the module adds its Nitro plugin and runtime config, and places the plugin right before nvent\'s adapter plugin', async () => {
  const { default: leanEventsNvent, placePlugin } = await moduleEntry
  const hooks = {}
  const nuxt = {
    options: { runtimeConfig: {}, nitro: { plugins: ['/app/server/plugins/mine.js'] }, leanEvents: { prefix: 'p1', url: 'redis://a:1' } },
    hook: (name, fn) => {
      hooks[name] = fn
    },
  }
  leanEventsNvent({ url: 'redis://b:2' }, nuxt)
  assert.deepEqual(nuxt.options.runtimeConfig.leanEventsNvent, { enabled: false, url: 'redis://b:2', connection: null, prefix: 'p1', streams: null })
  assert.deepEqual(nuxt.options.nitro.plugins, ['/app/server/plugins/mine.js', PLUGIN])
  assert.equal(leanEventsNvent.meta.configKey, 'leanEvents')

  const nvent = '/app/node_modules/nvent/dist/runtime/nitro/plugins/00.adapters'
  const redisStore = '/app/node_modules/@nvent-addon/adapter-store-redis/dist/runtime/adapter'
  // listed first in `modules`: ours would run before the Redis adapters and be overwritten
  const cfg = { plugins: [PLUGIN, redisStore, nvent, `${nvent.replace('00.adapters', '01.ws-lifecycle')}`] }
  hooks['nitro:config'](cfg)
  assert.deepEqual(cfg.plugins.slice(0, 3), [redisStore, PLUGIN, nvent])
  // Nuxt inlines a module's package into Nitro's bundle; the addon must stay external
  const [external] = cfg.externals.external
  assert.equal(external('lean-events'), true)
  assert.equal(external('/app/node_modules/lean-events/lib/native.js'), true)
  assert.equal(external('/app/node_modules/lean-events/nvent/runtime/plugin.js'), false, 'the plugin is bundled (it imports #imports)')
  assert.equal(external('/app/node_modules/nvent/dist/module.mjs'), false)
  assert.ok(external.score > 'lean-events'.length + 1000, "it outranks Nuxt's inline entry for the package")
  // listed after nvent: ours would run after nvent read the registry
  assert.deepEqual(placePlugin([nvent, '/x.js', PLUGIN]), [PLUGIN, nvent, '/x.js'])
  assert.deepEqual(placePlugin(['/x.js', PLUGIN]), ['/x.js', PLUGIN], 'no nvent plugin: left alone')
})

test('settings: enabled by LEAN_EVENTS or the option; the url from the module, then nvent\'s Redis settings, then the environment', async () => {
  const { isEnabled, resolveUrl, redisUrl, pluginSettings } = await config
  assert.equal(isEnabled({}, {}), false)
  assert.equal(isEnabled({}, { LEAN_EVENTS: '1' }), true)
  assert.equal(isEnabled({}, { LEAN_EVENTS: 'true' }), true)
  assert.equal(isEnabled({}, { LEAN_EVENTS: '0' }), false)
  assert.equal(isEnabled({ enabled: true }, {}), true)

  assert.equal(redisUrl({ host: 'h', port: 7000, username: 'u', password: 'p@ss', db: 2 }), 'redis://u:p%40ss@h:7000/2')
  assert.equal(redisUrl({ host: '::1', port: 6380 }), 'redis://[::1]:6380')
  assert.equal(redisUrl({}), 'redis://127.0.0.1:6379')
  assert.equal(redisUrl(null), undefined)

  const nvent = { store: { redis: { host: 'store', port: 1 } }, connections: { redis: { host: 'shared', port: 2 } } }
  assert.equal(resolveUrl({ url: 'redis://mine:9', connection: { host: 'c' } }, nvent, {}), 'redis://mine:9')
  assert.equal(resolveUrl({ connection: { host: 'c', port: 3 } }, nvent, {}), 'redis://c:3')
  assert.equal(resolveUrl({}, nvent, { REDIS_URL: 'redis://env:4' }), 'redis://store:1', "nvent's store connection first")
  assert.equal(resolveUrl({}, { connections: nvent.connections }, {}), 'redis://shared:2')
  assert.equal(resolveUrl({}, {}, { REDIS_URL: 'redis://env:4' }), 'redis://env:4')
  assert.equal(resolveUrl({}, {}, { REDIS_HOST: 'rh', REDIS_PORT: '5', REDIS_PASSWORD: 'pw' }), 'redis://:pw@rh:5')
  assert.equal(resolveUrl({}, {}, {}), undefined, 'nothing configured: the embedded store')

  const s = pluginSettings({}, { store: { adapter: 'redis', prefix: 'np' }, stream: { adapter: 'redis' } }, {})
  assert.deepEqual(s, { storeName: 'redis', streamName: 'redis', prefix: 'np', url: undefined, maxLen: 10000 })
  const d = pluginSettings({ prefix: 'own', streams: { trim: { maxLen: 0 } } }, {}, {})
  assert.deepEqual([d.storeName, d.streamName, d.prefix, d.maxLen], ['file', 'memory', 'own', 0])
})

/** The plugin against a fake Nitro app; resolves to what registering did. */
async function runPlugin(runtimeConfig) {
  const state = shimState()
  state.runtimeConfig = runtimeConfig
  state.registered = []
  const { default: plugin } = await importWithShims('nvent/runtime/plugin.js')
  const handlers = {}
  plugin({ hooks: { hook: (name, fn) => (handlers[name] = fn) } })
  return { handlers, state }
}

test('without LEAN_EVENTS=1 the plugin registers nothing and opens no connection', async () => {
  await withEnv({ LEAN_EVENTS: undefined }, async () => {
    const { handlers, state } = await runPlugin({ nvent: { store: { adapter: 'redis' }, stream: { adapter: 'redis' } }, leanEventsNvent: {} })
    assert.deepEqual(Object.keys(handlers), [], 'not even a hook')
    assert.deepEqual(state.registered, [])
  })
})

test('with LEAN_EVENTS=1 and no Redis configured, the plugin registers the embedded store under the selected names', async () => {
  await withEnv({ LEAN_EVENTS: '1', REDIS_URL: undefined, REDIS_HOST: undefined, REDIS_PORT: undefined }, async () => {
    const log = console.log
    console.log = () => {}
    const { handlers, state } = await runPlugin({ nvent: { store: { adapter: 'memory', prefix: 'emb' }, stream: { adapter: 'memory' } }, leanEventsNvent: {} }).finally(() => {
      console.log = log
    })
    console.log = () => {}
    await handlers['nvent:register-adapters']().finally(() => {
      console.log = log
    })
    assert.deepEqual(
      state.registered.map((r) => [r.kind, r.name]),
      [
        ['store', 'memory'],
        ['stream', 'memory'],
      ],
    )
    const store = state.registered[0].adapter
    const stream = state.registered[1].adapter
    const rec = await store.stream.append('emb:flow:run:r1', { type: 'flow.start', runId: 'r1', flowName: 'f' })
    assert.ok(rec.id)
    const bus = await store._bus.get()
    assert.equal(bus, await stream._bus.get(), 'one bus for both')
    assert.equal(bus.embedded, true)
    await Promise.all([store.close(), stream.shutdown()])
    await expectCode(bus.keyspace.get('emb:x'), 'BUS_CLOSED', 'closed once nvent closed both')
  })
})

test('with LEAN_EVENTS=1 the plugin registers lean-events as `redis` on nvent\'s Redis connection, one bus for both adapters', { skip: CLUSTER && 'one Redis' }, async (t) => {
  const prefix = uniquePrefix('nv-plugin')
  t.after(() => deleteRedisPrefix(prefix))
  const url = new URL(REDIS_URL)
  await withEnv({ LEAN_EVENTS: '1' }, async () => {
    const nvent = {
      store: { adapter: 'redis', prefix, redis: { host: url.hostname, port: Number(url.port || 6379), password: url.password || undefined } },
      stream: { adapter: 'redis', prefix },
      connections: { redis: { host: 'unused', port: 1 } },
    }
    const lines = []
    const log = console.log
    const { handlers, state } = await runPlugin({ nvent, leanEventsNvent: {} })
    console.log = (...args) => lines.push(args.join(' '))
    await handlers['nvent:register-adapters']().finally(() => {
      console.log = log
    })
    assert.match(lines.join('\n'), /store adapter 'redis' and stream adapter 'redis' run on lean-events/)
    const store = state.registered.find((r) => r.kind === 'store').adapter
    const stream = state.registered.find((r) => r.kind === 'stream').adapter
    await stream.init()
    const got = []
    await stream.subscribe(`${prefix}:stream:flow:events:r1`, (m) => got.push(m))
    const rec = await store.stream.append(`${prefix}:flow:run:r1`, { type: 'flow.start', runId: 'r1', flowName: 'f' })
    await stream.publish(`${prefix}:stream:flow:events:r1`, { type: 'flow.event', data: { event: rec } })
    await waitFor(() => got.length === 1, 5000, 'the message arrived')
    assert.deepEqual(got[0].data.event, rec)
    assert.equal((await store.stream.read(`${prefix}:flow:run:r1`)).length, 1)
    const bus = await store._bus.get()
    assert.equal(bus, await stream._bus.get(), 'one bus for both')
    assert.equal(bus.embedded, false)
    await store.close()
    await expectCode(store.stream.read(`${prefix}:flow:run:r1`), 'BUS_CLOSED', 'a closed adapter')
    assert.equal((await bus.keyspace.readEntries(`${prefix}:flow:run:r1`)).length, 1, 'the bus stays open for the stream adapter')
    await stream.shutdown()
    await expectCode(bus.keyspace.get(`${prefix}:x`), 'BUS_CLOSED', 'closed with the last adapter')
  })
})
