'use strict'
// A realistic 100-event flow run (~220-250 bytes per event serialized), shared by the
// benchmarks and the storage measurement.

function realisticRun(flowId, name = 'example-flow') {
  const events = []
  const t0 = 1764300000000
  events.push({ kind: 'flow.started', subject: flowId, data: { name, queue: 'default', input: { orderId: 'ord_8731', customer: 'cus_1942', amount: 129.5, currency: 'EUR' } } })
  const steps = ['validate_order', 'reserve_stock', 'charge_payment', 'send_confirmation', 'schedule_shipping', 'update_crm', 'notify_warehouse', 'archive_order', 'emit_metrics', 'close_order', 'audit_trail']
  let i = 0
  while (events.length < 99) {
    const step = steps[i % steps.length]
    const attempt = 1 + (i % 3 === 2 ? 1 : 0)
    events.push({ kind: 'step.started', subject: flowId, step, data: { input: { orderId: 'ord_8731', attempt } }, meta: { attempt, jobId: `job_${flowId}_${step}_${attempt}` } })
    for (let l = 0; l < 5 && events.length < 97; l++) {
      events.push({ kind: 'log', subject: flowId, step, data: { level: l === 4 ? 'warn' : 'info', msg: `${step}: processed batch ${l} of 5 for order ord_8731 in ${17 + l * 3} ms`, data: { batch: l, ms: 17 + l * 3 } } })
    }
    if (i === 2) {
      events.push({ kind: 'step.failed', subject: flowId, step, data: { error: 'ECONNRESET while calling payment provider', willRetry: true, nextRetryAt: new Date(t0 + 2000).toISOString() }, meta: { attempt, maxAttempts: 3, backoff: 'exponential' } })
      events.push({ kind: 'step.retry', subject: flowId, step, data: { reason: 'ECONNRESET while calling payment provider', delayMs: 2000 }, meta: { attempt: attempt + 1, scheduledAt: new Date(t0 + 2000).toISOString() } })
    } else {
      events.push({ kind: 'step.completed', subject: flowId, step, data: { result: { ok: true, ref: `ref_${i}_ord_8731`, items: 3 } }, meta: { attempt, duration: 40 + i } })
    }
    i++
  }
  events.length = 99
  events.push({ kind: 'flow.completed', subject: flowId, data: { result: { status: 'shipped', trackingId: 'TRK-99812-DE' }, duration: 5321 } })
  return events
}

module.exports = { realisticRun }
