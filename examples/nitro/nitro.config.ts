import { createRequire } from 'node:module'
import { realpathSync } from 'node:fs'
import { dirname } from 'node:path'
import { defineNitroConfig } from 'nitropack/config'

const require = createRequire(import.meta.url)
// the browser-safe reducers, served as they are at /_lean-events/client/index.js
const clientDir = dirname(require.resolve('lean-events/client'))
const linked = !realpathSync(require.resolve('lean-events')).includes('node_modules')

export default defineNitroConfig({
  compatibilityDate: '2025-07-01',
  preset: 'node-server',
  publicAssets: [{ dir: clientDir, baseURL: '/_lean-events/client', maxAge: 0 }],
  // Installed from npm, lean-events (a native addon) is traced into .output/server/node_modules
  // like any dependency. Here it is linked from the repository (file:../..), outside any
  // node_modules, which Nitro would inline instead: keep it external, resolved at run time.
  rollupConfig: linked ? { external: ['lean-events', 'lean-events/nitro'] } : {},
})
