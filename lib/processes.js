'use strict'

// Whether this process is one of several that would each open their own embedded store:
// a worker of Node's `cluster` module (Nitro's `node-cluster` preset forks one per CPU), or
// a primary that has forked workers. Events emitted in one such process never reach another.

const cluster = require('node:cluster')

/** Why the embedded store would be split across processes here, or null. */
function embeddedInSeveralProcesses() {
  if (cluster.isWorker) return 'this process is a worker of a Node cluster (e.g. Nitro\'s node-cluster preset)'
  if (cluster.isPrimary && cluster.workers && Object.keys(cluster.workers).length > 0) {
    return 'this process is the primary of a Node cluster with workers'
  }
  return null
}

module.exports = { embeddedInSeveralProcesses }
