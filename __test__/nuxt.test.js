'use strict'
// lean-events/nuxt, the Nuxt module: what it adds to a Nuxt app (runtime config, plugin,
// auto-imports, routes, dashboard, DevTools tab, Vite and Nitro settings), then the example
// Nuxt app (examples/nuxt: `modules: ['lean-events/nuxt']`, durable flows defined in a Nitro
// plugin, an API route that starts a run, a page with useFlowRun) built once with `nuxt build`,
// served by `node .output/server/index.mjs` and driven in Debian's chromium: the page follows a
// run live to completion, the dashboard shows it (timeline, attempts, the pending trigger) and
// its Fire button completes it; on the embedded store and on Redis, where a run waiting on its
// trigger also survives a SIGTERM and a restart. Screenshots go to test-results/.

const test = require('node:test')
const { describe } = test
const assert = require('node:assert/strict')
const crypto = require('node:crypto')
const fs = require('node:fs')
const path = require('node:path')
const { spawnSync } = require('node:child_process')
const { EventBus, REDIS_URL, waitFor, freePort, startChild, deleteRedisPrefix, redisKeysUnder } = require('./helpers')
const { walkFiles } = require('../scripts/install.js')

const ROOT = path.join(__dirname, '..')
const APP = path.join(ROOT, 'examples', 'nuxt')
const RESULTS = path.join(ROOT, 'test-results')
// Debian's chromium (.ci/run installs it); LEAN_EVENTS_CHROMIUM names another binary
const CHROMIUM = process.env.LEAN_EVENTS_CHROMIUM || '/usr/bin/chromium'
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run']
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm'

const moduleEntry = () => import('../nuxt/index.js')
const configModule = () => import('../nuxt/runtime/config.js')
const seconds = (ms) => `${(ms / 1000).toFixed(1)} s`

// ---------------------------------------------------------------------------------------------
// The module, given a stand-in for Nuxt

function fakeNuxt(options = {}) {
  const hooks = {}
  return {
    hooks,
    options: { runtimeConfig: {}, vite: {}, ...options },
    hook: (name, fn) => {
      ;(hooks[name] ||= []).push(fn)
    },
  }
}

test('the module: runtime config, plugin, server and app auto-imports, Vite pre-bundling; no routes unless asked', async () => {
  const { default: leanEventsNuxt, COMPOSABLES } = await moduleEntry()
  const nuxt = fakeNuxt({ leanEvents: { prefix: 'p1', redisUrl: 'redis://a:1' }, vite: { optimizeDeps: { include: ['x'] } } })
  await leanEventsNuxt({ maxLen: 500, retention: { finishedRunsMs: 60_000 } }, nuxt)
  assert.equal(leanEventsNuxt.meta.configKey, 'leanEvents')
  assert.equal(leanEventsNuxt.meta.name, 'lean-events/nuxt')
  assert.deepEqual(nuxt.options.runtimeConfig.leanEvents, {
    redisUrl: 'redis://a:1',
    prefix: 'p1',
    maxLen: 500,
    retention: { finishedRunsMs: 60_000 },
    flows: [],
  })
  assert.deepEqual(nuxt.options.vite.optimizeDeps.include, ['x', 'lean-events/client', 'lean-events/vue'])
  const config = { plugins: ['/app/server/plugins/mine.js'], imports: {} }
  for (const fn of nuxt.hooks['nitro:config']) fn(config)
  assert.equal(config.plugins.length, 2)
  assert.match(config.plugins[1], /nuxt[\\/]runtime[\\/]server[\\/]plugin\.js$/)
  assert.deepEqual(config.handlers, [], 'routes: false, dashboard: false')
  assert.deepEqual(config.imports.imports, [{ name: 'useLeanEvents', from: 'lean-events/nitro' }])
  const [external] = config.externals.external
  assert.equal(external('lean-events'), true)
  assert.equal(external('/app/node_modules/lean-events/lib/native.js'), true)
  assert.equal(external('/app/node_modules/lean-events/nitro/index.js'), true)
  assert.equal(external('/app/node_modules/lean-events/nuxt/runtime/server/plugin.js'), false, 'runtime files import #imports: bundled')
  assert.equal(external('lean-events/vue'), false, 'bundled with the app\'s vue')
  assert.equal(external('/app/node_modules/vue/index.js'), false)
  const imports = []
  for (const fn of nuxt.hooks['imports:extend']) fn(imports)
  assert.deepEqual(imports, COMPOSABLES.map((name) => ({ name, from: 'lean-events/vue' })))
  assert.deepEqual(COMPOSABLES, ['useEventStream', 'useFlowRun', 'useRuns', 'fireTrigger'])
  assert.equal(nuxt.hooks['devtools:customTabs'], undefined, 'no dashboard, no tab')
})

test('the module: routes: true mounts the handlers, dashboard: true its page, API, assets and a DevTools tab', async () => {
  const { default: leanEventsNuxt } = await moduleEntry()
  const nuxt = fakeNuxt()
  await leanEventsNuxt({ routes: true, dashboard: { flows: ['order'] }, flows: ['billing'] }, nuxt)
  const config = {}
  for (const fn of nuxt.hooks['nitro:config']) fn(config)
  const routes = config.handlers.map((h) => `${(h.method || 'any').toUpperCase()} ${h.route}`)
  for (const r of [
    'GET /api/_events/:type/:id/stream',
    'GET /api/_events/:type/:id',
    'GET /api/_flows/:name/runs',
    'POST /api/_triggers/:id',
    'POST /api/_triggers/:id/cancel',
    'GET /_lean-events/api/_events/:type/:id/stream',
    'GET /_lean-events/api/_flows/:name/runs',
    'POST /_lean-events/api/_triggers/:id',
    'GET /_lean-events/api/flows',
    'ANY /_lean-events',
    'ANY /_lean-events/**',
  ]) {
    assert.ok(routes.includes(r), `${r} is mounted (${routes.join(', ')})`)
  }
  for (const h of config.handlers) assert.ok(fs.existsSync(h.handler), `${h.handler} exists`)
  assert.equal(routes.includes('GET /api/_metrics'), false, 'metrics: not asked')
  assert.deepEqual(
    config.publicAssets.map((a) => a.baseURL),
    ['/_lean-events/assets/client', '/_lean-events/assets'],
  )
  assert.deepEqual(nuxt.options.runtimeConfig.leanEvents.flows, ['billing', 'order'])
  const tabs = []
  for (const fn of nuxt.hooks['devtools:customTabs']) fn(tabs)
  assert.equal(tabs.length, 1)
  assert.deepEqual(tabs[0].view, { type: 'iframe', src: '/_lean-events' })
})

test('the module: metrics: true mounts /api/_metrics only where lean-events/nitro has metricsHandler', async () => {
  const { default: leanEventsNuxt } = await moduleEntry()
  const nitro = await import('../nitro/index.js')
  const nuxt = fakeNuxt()
  const warn = console.warn
  const warnings = []
  console.warn = (...args) => warnings.push(args.join(' '))
  try {
    await leanEventsNuxt({ metrics: true }, nuxt)
  } finally {
    console.warn = warn
  }
  const config = {}
  for (const fn of nuxt.hooks['nitro:config']) fn(config)
  const mounted = config.handlers.some((h) => h.route === '/api/_metrics')
  assert.equal(mounted, typeof nitro.metricsHandler === 'function')
  assert.equal(warnings.length, mounted ? 0 : 1, warnings.join('\n'))
})

test('the plugin\'s settings: redisUrl (NUXT_LEAN_EVENTS_REDIS_URL) else no url (REDIS_URL, else embedded); the rest passed as set', async () => {
  const { connectOptions } = await configModule()
  assert.deepEqual(connectOptions({}), {})
  assert.deepEqual(connectOptions({ redisUrl: '', prefix: '', flows: ['x'] }), {}, 'empty: lean-events/nitro falls back to REDIS_URL')
  assert.deepEqual(connectOptions({ redisUrl: 'redis://h:1', prefix: 'p', maxLen: 10, retention: { finishedRunsMs: 5 }, scheduler: { concurrency: 4 } }), {
    url: 'redis://h:1',
    prefix: 'p',
    maxLen: 10,
    retention: { finishedRunsMs: 5 },
    scheduler: { concurrency: 4 },
  })
})

test("README's Nuxt section: each code block is an examples/nuxt file as it is (the app the browser test drives), under 40 lines together", () => {
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8')
  const start = readme.indexOf('\n## Nuxt\n')
  assert.ok(start > 0, 'README has a Nuxt section')
  assert.ok(start < readme.indexOf('\n## Example: emit and subscribe'), 'it comes before the plain-Node examples')
  const section = readme.slice(start + 1, readme.indexOf('\n## ', start + 1))
  const blocks = [...section.matchAll(/```(\w+)\n([\s\S]*?)```/g)].map((m) => m[2])
  assert.equal(blocks.length, 3)
  let lines = 0
  const files = []
  for (const block of blocks) {
    const [first, ...rest] = block.split('\n')
    const file = /^(?:\/\/|<!--) ([\w./[\]-]+)/.exec(first)[1]
    files.push(file)
    assert.equal(rest.join('\n'), fs.readFileSync(path.join(APP, file), 'utf8'), `the README's ${file} is examples/nuxt/${file}`)
    lines += block.trimEnd().split('\n').length
  }
  assert.deepEqual(files, ['nuxt.config.ts', 'server/api/orders.post.ts', 'app/pages/runs/[id].vue'])
  assert.ok(lines < 40, `${lines} lines`)
})

test('authorize: the app\'s lean-events:authorize hooks decide (false or a throw: no); without one the routes are open, the dashboard only in development', async (t) => {
  const { importWithShims, shimState } = require('./fixtures/nvent-reference/load.js')
  const { authorize, authorizeRoute, authorizeDashboard } = await importWithShims('nuxt/runtime/server/authorize.js')
  const registry = {}
  // hookable 5's callHookWith (Nitro 2): (caller, name, ...args) → caller(hooks, args)
  shimState().nitroApp = { hooks: { callHookWith: (caller, name, ...args) => caller(registry[name] ? [...registry[name]] : [], args) } }
  const savedEnv = process.env.NODE_ENV
  t.after(() => {
    if (savedEnv === undefined) delete process.env.NODE_ENV
    else process.env.NODE_ENV = savedEnv
  })
  const api = { path: '/api/_events/flow/r1/stream' }
  const dash = { path: '/_lean-events/api/_flows/order/runs' }

  process.env.NODE_ENV = 'production'
  assert.equal(await authorizeRoute(api, { type: 'flow', id: 'r1' }), true, 'no hook: the API routes are open')
  assert.equal(await authorizeDashboard(dash, { type: 'dashboard', id: '/' }), false, 'no hook: no dashboard in production')
  assert.equal(await authorize(dash, { type: 'flows', id: 'order' }), false, 'a path under /_lean-events is the dashboard\'s')
  process.env.NODE_ENV = 'development'
  assert.equal(await authorize(dash, { type: 'flows', id: 'order' }), true, 'in development it is open')

  process.env.NODE_ENV = 'production'
  const seen = []
  registry['lean-events:authorize'] = [
    (event, target) => {
      seen.push({ path: event.path, ...target })
      return target.id !== 'secret'
    },
    async (_event, target) => {
      if (target.id === 'boom') throw new Error('session store down')
    },
  ]
  assert.equal(await authorize(api, { type: 'flow', id: 'r1' }), true)
  assert.equal(await authorize(api, { type: 'flow', id: 'secret' }), false)
  assert.equal(await authorize(dash, { type: 'flows', id: 'order' }), true, 'a hook that does not say no lets the dashboard in')
  await assert.rejects(authorize(api, { type: 'flow', id: 'boom' }), /session store down/, 'a throw: the handler answers 403')
  assert.deepEqual(seen.slice(0, 3), [
    { path: api.path, type: 'flow', id: 'r1', route: 'api' },
    { path: api.path, type: 'flow', id: 'secret', route: 'api' },
    { path: dash.path, type: 'flows', id: 'order', route: 'dashboard' },
  ])
})

// ---------------------------------------------------------------------------------------------
// The example Nuxt app: installed and built once per run (again only when its inputs change)

const APP_INPUTS = ['nuxt.config.ts', 'package.json', 'package-lock.json', 'app', 'server']
const PACKAGE_INPUTS = ['package.json', 'index.js', 'lib', 'binding.js', 'client', 'nitro', 'nuxt', 'vue']
const STAMP = path.join(APP, '.output', '.lean-events-build-stamp')

function buildStamp() {
  const hash = crypto.createHash('sha256')
  for (const [base, entries] of [
    [APP, APP_INPUTS],
    [ROOT, PACKAGE_INPUTS],
  ]) {
    for (const e of entries) {
      walkFiles(path.join(base, e), ['node_modules', '.output', '.nuxt', '.data'], (p) => {
        hash.update(path.relative(base, p))
        hash.update('\0')
        hash.update(fs.readFileSync(p))
        hash.update('\0')
      })
    }
  }
  // not the Node version: one build serves the suite on every Node line (.ci/run)
  return hash.digest('hex')
}

function run(cmd, args, what) {
  const r = spawnSync(cmd, args, { cwd: APP, encoding: 'utf8', shell: process.platform === 'win32', maxBuffer: 64 * 1024 * 1024 })
  if (r.status !== 0) throw new Error(`${what} failed (exit ${r.status}):\n${r.stdout}\n${r.stderr}`)
  return r
}

let built
function buildApp() {
  built ??= (async () => {
    const t0 = Date.now()
    const did = []
    if (!fs.existsSync(path.join(APP, 'node_modules', 'nuxt', 'package.json')) || !fs.existsSync(path.join(APP, 'node_modules', 'lean-events'))) {
      run(NPM, ['ci', '--no-audit', '--no-fund', '--prefer-offline'], 'npm ci in examples/nuxt')
      did.push(`dependencies installed in ${seconds(Date.now() - t0)}`)
    }
    const stamp = buildStamp()
    if (fs.existsSync(STAMP) && fs.readFileSync(STAMP, 'utf8') === stamp) {
      did.push('the build is up to date')
    } else {
      const t1 = Date.now()
      run(process.execPath, [path.join(APP, 'node_modules', 'nuxt', 'bin', 'nuxt.mjs'), 'build'], 'nuxt build')
      fs.writeFileSync(STAMP, stamp)
      did.push(`nuxt build in ${seconds(Date.now() - t1)}`)
    }
    console.log(`example Nuxt app ready in ${seconds(Date.now() - t0)} (${did.join('; ')})`)
  })()
  return built
}

async function startApp(extraEnv = {}) {
  await buildApp()
  const port = await freePort()
  const env = { ...process.env, PORT: String(port), HOST: '127.0.0.1', LEAN_EVENTS_SSE_HEARTBEAT_MS: '1000', ...extraEnv }
  for (const k of ['REDIS_URL', 'NUXT_QUEUE_REDIS_URL', 'NUXT_LEAN_EVENTS_REDIS_URL']) if (!(k in extraEnv)) delete env[k]
  const child = startChild(process.execPath, [path.join(APP, '.output', 'server', 'index.mjs')], { cwd: APP, env })
  const url = `http://127.0.0.1:${port}`
  try {
    await waitFor(
      async () => {
        if (child.done) throw new Error(`the app exited: ${child.stdout}${child.stderr}`)
        try {
          return (await fetch(`${url}/api/_flows/order/runs`)).status === 200
        } catch {
          return false
        }
      },
      30_000,
      () => `the app to answer on ${url}: ${child.stdout}${child.stderr}`,
    )
  } catch (err) {
    await stopApp({ child })
    throw err
  }
  return { url, child }
}

/** SIGTERM (Nitro closes the bus and scheduler), SIGKILL if it has not exited within 10 s. */
async function stopApp(app) {
  if (!app || app.child.done) return
  const term = app.child.kill('SIGTERM')
  const late = await Promise.race([term.then(() => false), new Promise((resolve) => setTimeout(resolve, 10_000, true).unref())])
  if (late) await app.child.kill('SIGKILL')
}

/** Stop the app and the browser, whichever of them was started, even if one of them throws. */
async function stopAll(app, browser) {
  try {
    await stopApp(app)
  } finally {
    if (browser) await browser.close().catch(() => {})
  }
}

async function launchChromium(t) {
  let chromium
  try {
    ;({ chromium } = require('playwright-core'))
  } catch (err) {
    t.skip(`playwright-core is not installed: ${err.message}`)
    return undefined
  }
  if (!fs.existsSync(CHROMIUM)) {
    const why = `the example Nuxt app is driven in chromium and there is none at ${CHROMIUM} (apt-get install chromium, or LEAN_EVENTS_CHROMIUM=<path>)`
    console.log(`browser test skipped: ${why}`)
    t.skip(why)
    return undefined
  }
  try {
    return await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS })
  } catch (err) {
    console.log(`browser test skipped: chromium cannot be launched: ${err.message.split('\n')[0]}`)
    t.skip(`chromium cannot be launched: ${err.message.split('\n')[0]}`)
    return undefined
  }
}

/** A page that records uncaught errors and console errors. */
async function newPage(browser, problems) {
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } })
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`))
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`console: ${msg.text()}`)
  })
  return page
}

async function shot(page, name) {
  fs.mkdirSync(RESULTS, { recursive: true })
  const file = path.join(RESULTS, name)
  await page.screenshot({ path: file, fullPage: true })
  return file
}

/** Start a run from the app's index page; the run page (useFlowRun) follows it until it waits for approval. */
async function startRunFromPage(page, url) {
  await page.goto(`${url}/`)
  // hydrated: the click runs the handler (before that the button is plain HTML)
  await page.waitForFunction(() => !!window.useNuxtApp || !!document.querySelector('#__nuxt')?.__vue_app__, null, { timeout: 20_000 })
  await page.click('[data-testid=start]')
  await page.waitForURL(/\/runs\/order-/, { timeout: 15_000 })
  const id = decodeURIComponent(new URL(page.url()).pathname.split('/').pop())
  // live, with no reload: `pack` fails its first attempt and completes its second, then the
  // flow waits for approval (the page lists the flow's own awaits, state.waiting, under its name)
  await page.waitForSelector('p[data-step=order][data-status=waiting]', { timeout: 20_000 })
  assert.equal(await page.getAttribute('p[data-step=pack]', 'data-status'), 'completed')
  assert.match(await page.textContent('p[data-step=pack]'), /attempt 2/)
  assert.equal(await page.$('p[data-step=ship]'), null, 'not shipped before the approval')
  assert.equal(await page.getAttribute('[data-testid=run]', 'data-status'), 'running')
  return id
}

describe('example Nuxt app in chromium (embedded store)', { timeout: 600_000 }, () => {
  test('the page follows a run live; the dashboard lists it, shows its timeline and pending trigger, and Fire completes it', async (t) => {
    const browser = await launchChromium(t)
    if (!browser) return
    let app
    try {
      app = await startApp()
      const problems = []
      const page = await newPage(browser, problems)
      const id = await startRunFromPage(page, app.url)
      await shot(page, 'nuxt-run-waiting.png')

      // the dashboard: runs of the flow, with status filter and search
      const dash = await newPage(browser, problems)
      await dash.goto(`${app.url}/_lean-events?flow=order`)
      await dash.waitForSelector(`tr[data-run="${id}"][data-status=running]`, { timeout: 10_000 })
      await dash.selectOption('[data-testid=status-filter]', 'completed')
      await dash.waitForURL(/status=completed/)
      await dash.waitForSelector('[data-testid=runs][data-filter=completed]')
      assert.equal(await dash.$(`tr[data-run="${id}"]`), null, 'a running run is not among the completed ones')
      await dash.fill('[data-testid=search]', id)
      await dash.press('[data-testid=search]', 'Enter')
      await dash.waitForURL(new RegExp(`/_lean-events/runs/${id}$`))

      // the run: timeline of both attempts, the first one's error, the pending trigger
      await dash.waitForSelector('[data-testid=attempt][data-step=pack][data-attempt="2"][data-status=completed]', { timeout: 10_000 })
      assert.equal(await dash.getAttribute('[data-testid=attempt][data-step=pack][data-attempt="1"]', 'data-status'), 'failed, retried')
      assert.match(await dash.textContent('[data-testid=timeline]'), /pack #1[\s\S]*pack #2/)
      assert.equal(await dash.getAttribute('[data-testid=run-status]', 'data-status'), 'running')
      await dash.click('summary:has-text("pack #1")')
      assert.match(await dash.textContent('[data-testid=error]'), /the packing station was busy/)
      const trigger = await dash.getAttribute('[data-testid=pending-trigger]', 'data-trigger')
      assert.match(trigger, /^[0-9a-f]{32}$/)
      assert.match(await dash.textContent('[data-testid=pending-trigger]'), /Ship tea\?|Ship a teapot\?/)
      const waitingShot = await shot(dash, 'nuxt-dashboard-run-waiting.png')

      // fire from the dashboard: the run completes, on the dashboard and on the app's page
      await dash.click('[data-testid=fire]')
      await dash.waitForSelector('[data-testid=run-status][data-status=completed]', { timeout: 15_000 })
      assert.equal(await dash.$('[data-testid=pending-trigger]'), null, 'nothing pending any more')
      await dash.waitForSelector('[data-testid=attempt][data-step=ship][data-attempt="1"][data-status=completed]', { timeout: 10_000 })
      const completedShot = await shot(dash, 'nuxt-dashboard-run-completed.png')
      await page.waitForSelector('[data-testid=run][data-status=completed]', { timeout: 15_000 })
      assert.equal(await page.getAttribute('p[data-step=ship]', 'data-status'), 'completed')
      const pageShot = await shot(page, 'nuxt-run-completed.png')

      // the list, filtered by status, shows it completed
      await dash.goto(`${app.url}/_lean-events?flow=order&status=completed`)
      await dash.waitForSelector(`tr[data-run="${id}"][data-status=completed]`, { timeout: 10_000 })
      const listShot = await shot(dash, 'nuxt-dashboard-runs.png')
      assert.deepEqual(problems, [])
      console.log(`screenshots: ${[waitingShot, completedShot, pageShot, listShot].map((f) => path.relative(ROOT, f)).join(', ')}`)
    } finally {
      await stopAll(app, browser)
    }
  })

  test('the dashboard shows a pending timer (due time) and event await (kind and match), and cancels a pending trigger', async (t) => {
    const browser = await launchChromium(t)
    if (!browser) return
    let app
    try {
      app = await startApp()
      const problems = []
      const dash = await newPage(browser, problems)
      const { nap, hold } = await (await fetch(`${app.url}/api/holds`, { method: 'POST' })).json()
      // a flow's awaits are listed under its name: `nap` waits on a timer, `hold` on an event
      await dash.goto(`${app.url}/_lean-events/runs/${nap}`)
      await dash.waitForSelector('[data-testid=pending-timer][data-step=nap]', { timeout: 10_000 })
      assert.match(await dash.textContent('[data-testid=pending-timer]'), /due .+ \(in (59 min( \d+ s)?|1 h)\)/, 'an hour from now')
      await shot(dash, 'nuxt-dashboard-pending-timer.png')
      await dash.goto(`${app.url}/_lean-events/runs/${hold}`)
      await dash.waitForSelector('[data-testid=pending-event][data-step=hold]', { timeout: 10_000 })
      const awaitText = await dash.textContent('[data-testid=pending-event]')
      assert.match(awaitText, /hold\.released/)
      assert.ok(awaitText.includes(`{"data.id":"${hold}"}`), awaitText)
      await shot(dash, 'nuxt-dashboard-pending.png')

      const order = await (await fetch(`${app.url}/api/orders`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"item":"a kettle"}' })).json()
      await dash.goto(`${app.url}/_lean-events/runs/${order.id}`)
      await dash.waitForSelector('[data-testid=pending-trigger]', { timeout: 15_000 })
      const trigger = await dash.getAttribute('[data-testid=pending-trigger]', 'data-trigger')
      await dash.click('[data-testid=cancel]')
      // the flow's wait() rejects with TRIGGER_CANCELLED: the flow asks again, with a new trigger
      await dash.waitForFunction(
        (old) => {
          const el = document.querySelector('[data-testid=pending-trigger]')
          return !!el && el.dataset.trigger !== old
        },
        trigger,
        { timeout: 15_000 },
      )
      const state = await (await fetch(`${app.url}/api/_events/trigger/${trigger}`)).json()
      assert.equal(state.state.status, 'cancelled')
      const run = await (await fetch(`${app.url}/api/_events/flow/${order.id}`)).json()
      assert.equal(run.state.status, 'running', 'a cancelled approval does not end the run')
      assert.equal((await dash.$$('[data-testid=pending-trigger]')).length, 1, 'only the new trigger is pending')
      assert.deepEqual(problems, [])
    } finally {
      await stopAll(app, browser)
    }
  })

  test('the routes answer as lean-events/nitro does; a denying lean-events:authorize hook is not needed for the example', async () => {
    const app = await startApp()
    try {
      const res = await fetch(`${app.url}/api/_triggers/${'0'.repeat(32)}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })
      assert.equal(res.status, 404)
      assert.equal((await res.json()).code, 'TRIGGER_NOT_FOUND')
      const cancel = await fetch(`${app.url}/api/_triggers/${'0'.repeat(32)}/cancel`, { method: 'POST' })
      assert.equal(cancel.status, 404)
      const flows = await (await fetch(`${app.url}/_lean-events/api/flows`)).json()
      assert.deepEqual(flows, { flows: ['order'] })
      const asset = await fetch(`${app.url}/_lean-events/assets/client/index.js`)
      assert.equal(asset.status, 200)
      assert.match(await asset.text(), /export function applyFlowEvent/)
    } finally {
      await stopApp(app)
    }
  })
})

/** Wait, yielding to the event loop, until the clock is past the millisecond `ms`. */
async function waitUntilClockPasses(ms) {
  while (Date.now() <= ms) await new Promise((resolve) => setTimeout(resolve, 1))
}

/** Whether Redis answers on REDIS_URL; the test is skipped with the reason when not. */
async function redisAnswers(t) {
  try {
    const probe = await EventBus.connect({ url: REDIS_URL, timeoutMs: 1000, prefix: 'nuxt-probe' })
    await probe.read({ type: 'flow', id: 'probe' })
    await probe.close()
    return true
  } catch (err) {
    t.skip(`no Redis at ${REDIS_URL}: ${err.message}`)
    return false
  }
}

/** A run's reduced state, from the app's state route. */
async function runState(app, id) {
  const res = await fetch(`${app.url}/api/_events/flow/${id}`)
  assert.equal(res.status, 200, await res.clone().text())
  return (await res.json()).state
}

/** The kinds of a run's events, read from Redis under `prefix`. */
async function runEvents(prefix, id) {
  const bus = await EventBus.connect({ url: REDIS_URL, prefix })
  try {
    return await bus.read({ type: 'flow', id }, { limit: 1000 })
  } finally {
    await bus.close()
  }
}

describe('example Nuxt app on Redis', { timeout: 300_000 }, () => {
  test('NUXT_LEAN_EVENTS_REDIS_URL puts the app on Redis; the page follows a run to completion', async (t) => {
    if (!(await redisAnswers(t))) return
    const browser = await launchChromium(t)
    if (!browser) return
    const prefix = `nuxt-e2e-${process.pid}-${Date.now()}`
    let app
    try {
      app = await startApp({ NUXT_LEAN_EVENTS_REDIS_URL: REDIS_URL, NUXT_LEAN_EVENTS_PREFIX: prefix })
      const problems = []
      const page = await newPage(browser, problems)
      const id = await startRunFromPage(page, app.url)
      // the run is in Redis, under the prefix the runtime config was given
      const bus = await EventBus.connect({ url: REDIS_URL, prefix })
      let triggerId
      try {
        const events = await bus.read({ type: 'flow', id })
        assert.equal(events[0].kind, 'flow.started')
        triggerId = events.find((e) => e.kind === 'step.await.trigger').data.triggerId
      } finally {
        await bus.close()
      }
      // a webhook (or another instance) fires it
      const fired = await fetch(`${app.url}/api/_triggers/${triggerId}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"approved":true}' })
      assert.equal(fired.status, 200, await fired.clone().text())
      await page.waitForSelector('[data-testid=run][data-status=completed]', { timeout: 15_000 })
      await shot(page, 'nuxt-run-completed-redis.png')

      // the dashboard's status filter is the server's: the completed run, behind 25 newer
      // running ones (more than a page of 20), is found; the running ones take two pages
      const writer = await EventBus.connect({ url: REDIS_URL, prefix })
      try {
        for (let i = 0; i < 25; i++) {
          const started = await writer.emit({ kind: 'flow.started', subject: `order-later-${i}`, data: { name: 'order' } })
          // each run starts in a later millisecond (the index orders runs of one ms by name,
          // and emits are fast enough to put ten in one): wait for the clock to pass it
          const ms = Number(started.id.split('-')[0])
          await waitUntilClockPasses(ms)
        }
      } finally {
        await writer.close()
      }
      const dash = await newPage(browser, problems)
      await dash.goto(`${app.url}/_lean-events?flow=order&status=completed`)
      await dash.waitForSelector(`tr[data-run="${id}"][data-status=completed]`, { timeout: 10_000 })
      assert.equal((await dash.$$('tr[data-run]')).length, 1, 'only the completed run')
      assert.equal(await dash.getAttribute('[data-testid=runs]', 'data-next-offset'), 'none')
      await dash.selectOption('[data-testid=status-filter]', 'running')
      await dash.waitForSelector('[data-testid=runs][data-filter=running][data-next-offset="20"]', { timeout: 10_000 })
      assert.equal((await dash.$$('tr[data-run][data-status=running]')).length, 20)
      await dash.click('[data-testid=next]')
      await dash.waitForURL(/status=running&offset=20/)
      await dash.waitForSelector('[data-testid=runs][data-filter=running][data-offset="20"][data-next-offset=none]', { timeout: 10_000 })
      const older = await dash.$$eval('tr[data-run]', (rows) => rows.map((r) => [r.dataset.run, r.dataset.status]))
      // the five oldest of them
      const oldest = [0, 1, 2, 3, 4].map((i) => [`order-later-${i}`, 'running'])
      assert.deepEqual(older.sort(), oldest.sort())
      await shot(dash, 'nuxt-dashboard-runs-filtered-redis.png')
      assert.deepEqual(problems, [])
      // stopped, the app writes nothing more: its prefix is deleted, and nothing is left under it
      await stopAll(app, browser)
      assert.equal(app.child.signal, null, 'the app exited on SIGTERM by itself')
      await deleteRedisPrefix(prefix)
      assert.deepEqual(await redisKeysUnder(prefix), [])
    } finally {
      await stopAll(app, browser)
      await deleteRedisPrefix(prefix)
    }
  })

  test('a run survives a restart: SIGTERM while it waits on its trigger, the next server fires it and the run completes', async (t) => {
    if (!(await redisAnswers(t))) return
    const prefix = `nuxt-restart-${process.pid}-${Date.now()}`
    const env = { NUXT_LEAN_EVENTS_REDIS_URL: REDIS_URL, NUXT_LEAN_EVENTS_PREFIX: prefix }
    let app
    try {
      app = await startApp(env)
      const started = await fetch(`${app.url}/api/orders`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"item":"a lamp"}' })
      const { id } = await started.json()
      const waiting = await waitFor(
        async () => {
          const state = await runState(app, id)
          return state.waiting?.find((w) => w.awaitType === 'trigger') ? state : null
        },
        15_000,
        'the run to wait for approval',
      )
      const triggerId = waiting.waiting.find((w) => w.awaitType === 'trigger').awaitData.triggerId
      await stopApp(app)
      assert.equal(app.child.signal, null, 'the app exited on SIGTERM by itself')
      const stopped = app
      app = undefined

      // nothing ended the run: stopping leaves it to the next instance
      const before = (await runEvents(prefix, id)).map((e) => e.kind)
      assert.deepEqual(before.filter((k) => k.startsWith('flow.')), ['flow.started'], `after SIGTERM: ${before.join(' ')}`)

      app = await startApp(env)
      const fired = await fetch(`${app.url}/api/_triggers/${triggerId}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"approved":true}' })
      assert.equal(fired.status, 200, await fired.clone().text())
      const t0 = Date.now()
      const done = await waitFor(
        async () => {
          const state = await runState(app, id)
          return state.status !== 'running' ? state : null
        },
        30_000,
        'the run to end on the new server',
      )
      console.log(`run completed ${seconds(Date.now() - t0)} after the fire, on the restarted server`)
      assert.equal(done.status, 'completed', JSON.stringify(done))
      assert.deepEqual(done.steps.ship.result, { shipped: 'a lamp', decision: { approved: true } })
      const events = await runEvents(prefix, id)
      const kinds = events.map((e) => e.kind)
      assert.deepEqual(kinds.filter((k) => k.startsWith('flow.')), ['flow.started', 'flow.completed'], kinds.join(' '))
      // `pack` finished before the restart: replayed from its record, not run again
      assert.equal(events.filter((e) => e.kind === 'step.started' && e.step === 'pack').length, 2)
      assert.ok(!stopped.child.stderr.includes("Error"), stopped.child.stderr)
    } finally {
      await stopApp(app)
      await deleteRedisPrefix(prefix)
    }
  })
})
