'use strict'
// Child processes: fork a bench script with IPC, exchange request/reply messages, and make sure
// no child outlives the benchmark (also on error or Ctrl-C).

const { fork } = require('node:child_process')

const active = new Set()

/** Fork `file` (node, --expose-gc so RSS can be read after a collection). */
function forkChild(file) {
  const child = fork(file, [], { execArgv: ['--expose-gc'], stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
  active.add(child)
  child.once('exit', () => active.delete(child))
  return child
}

/** Send `msg` and resolve with the next message of type `type` (reject on error/exit/timeout). */
function request(child, msg, type, timeoutMs = 60000) {
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      clearTimeout(timer)
      child.off('message', onMessage)
      child.off('exit', onExit)
    }
    const onMessage = (m) => {
      if (m && m.type === 'error') {
        cleanup()
        reject(new Error(`child ${child.pid}: ${m.message}`))
      } else if (m && m.type === type) {
        cleanup()
        resolve(m)
      }
    }
    const onExit = (code, signal) => {
      cleanup()
      reject(new Error(`child ${child.pid} exited (${code ?? signal}) while waiting for '${type}'`))
    }
    const timer = setTimeout(() => {
      cleanup()
      reject(new Error(`child ${child.pid} did not answer '${type}' within ${timeoutMs} ms`))
    }, timeoutMs)
    child.on('message', onMessage)
    child.on('exit', onExit)
    if (msg) child.send(msg)
  })
}

/** Wait for a child to exit; kill it if it does not within timeoutMs. */
function waitExit(child, timeoutMs = 5000) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
    }, timeoutMs)
    child.once('exit', () => {
      clearTimeout(timer)
      resolve()
    })
  })
}

/** Kill every child still running (by its own pid). */
function killChildren() {
  for (const child of active) child.kill('SIGKILL')
}

/** In a child: answer each message with `handlers[msg.cmd](msg)`'s result, errors as {type:'error'}. */
function serve(handlers) {
  process.on('message', async (msg) => {
    try {
      const handler = handlers[msg.cmd]
      if (!handler) throw new Error(`unknown command ${msg.cmd}`)
      const reply = await handler(msg)
      if (reply) process.send(reply)
    } catch (err) {
      process.send({ type: 'error', message: err && err.stack ? err.stack : String(err) }, () => process.exit(1))
    }
  })
  process.on('disconnect', () => process.exit(0))
}

/** gc() when --expose-gc is on, then RSS in bytes. */
function rssAfterGc() {
  if (global.gc) {
    global.gc()
    global.gc()
  }
  return process.memoryUsage().rss
}

module.exports = { forkChild, request, waitExit, killChildren, serve, rssAfterGc }
