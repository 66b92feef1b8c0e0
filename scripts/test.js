'use strict'
// `npm test`: cargo test for the Rust core, then node --test for __test__/, against REDIS_URL.
// With REDIS_CLUSTER=1 both run against a 3-master, 3-replica Redis Cluster on loopback that
// scripts/cluster.sh starts first (REDIS_URL becomes its redis+cluster:// url) and stops after.
// `node scripts/test.js node` runs only the node suite, on the Node.js that runs this script
// (.ci/run does so on each Node line package.json's engines names).

const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const root = path.join(__dirname, '..')
const nodeOnly = process.argv[2] === 'node'
// named one by one: Node 20 expands a folder given to --test, Node 22 and later take globs instead
const specs = fs
  .readdirSync(path.join(root, '__test__'))
  .filter((f) => f.endsWith('.test.js'))
  .sort()
  .map((f) => path.join('__test__', f))
const cluster = path.join(__dirname, 'cluster.sh')

function run(cmd, args, env) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env })
  if (r.error) throw r.error
  return r.status ?? 1
}

const env = { ...process.env }
const onCluster = process.env.REDIS_CLUSTER === '1'
if (onCluster) {
  const started = spawnSync('bash', [cluster, 'start'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] })
  if (started.status !== 0) {
    console.error('test: the Redis Cluster did not start')
    process.exit(1)
  }
  env.REDIS_URL = started.stdout.trim()
  console.log(`test: on the Redis Cluster ${env.REDIS_URL}`)
}

let status = 1
try {
  status = nodeOnly ? 0 : run('cargo', ['test', '--workspace'], env)
  if (status === 0) status = run(process.execPath, ['--test', '--test-concurrency=1', ...specs], env)
} finally {
  if (onCluster) spawnSync('bash', [cluster, 'stop'], { cwd: root, stdio: 'inherit' })
}
process.exit(status)
