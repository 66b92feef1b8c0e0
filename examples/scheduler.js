// A step with retries, each kind of await, and a trigger fired from outside the step.
// Runs on the embedded store; set REDIS_URL to run it on Redis.
//   node examples/scheduler.js
const { EventBus, Scheduler } = require('lean-events')

async function main() {
  const bus = await EventBus.connect({ url: process.env.REDIS_URL })
  const scheduler = new Scheduler(bus)
  const flow = `order-run-${Date.now()}`

  scheduler.define(
    'process_order',
    async (input, ctx) => {
      await ctx.log('info', `attempt ${ctx.attempt}`)
      if (ctx.attempt < 2) throw Object.assign(new Error('payment API timed out'), { code: 'ETIMEDOUT' })
      await ctx.await.time(200) // a durable timer, not a setTimeout
      const paid = await ctx.await.event({
        kind: 'payment.confirmed',
        match: { 'data.orderId': input.orderId },
        timeoutMs: 10_000,
      })
      const approval = await ctx.await.trigger({ type: 'webhook', timeoutMs: 60_000 })
      console.log(`waiting for trigger ${approval.id}`) // POST /api/_triggers/<id> would fire it
      const decision = await approval.wait()
      return { orderId: input.orderId, paidIn: paid.id, decision }
    },
    { retry: { attempts: 3, backoff: { type: 'exponential', delayMs: 100, maxDelayMs: 1000 } } },
  )

  const result = scheduler.run('process_order', { flow, input: { orderId: '42' } })

  // elsewhere (any instance): the payment arrives, then a person approves
  const waitingFor = async (kind) => {
    while (!(await bus.read({ type: 'flow', id: flow })).some((e) => e.kind === kind)) {
      await new Promise((r) => setTimeout(r, 20))
    }
  }
  await waitingFor('step.await.event')
  await bus.emit({ kind: 'payment.confirmed', subject: 'payment-7', data: { orderId: '42' } })
  await waitingFor('step.await.trigger')
  const registered = (await bus.read({ type: 'flow', id: flow })).find((e) => e.kind === 'step.await.trigger')
  if (process.env.FIRE_BY_HAND && process.env.REDIS_URL) {
    // fire it yourself, from another shell (any process on the same Redis can):
    console.log(`node -e "const {EventBus,Scheduler}=require('lean-events');EventBus.connect({url:'${process.env.REDIS_URL}'})` +
      `.then(async b=>{await new Scheduler(b).fire('${registered.data.triggerId}',{approved:true,by:'you'});await b.close()})"`)
  } else {
    await scheduler.fire(registered.data.triggerId, { approved: true, by: 'ann' })
  }

  console.log('result:', JSON.stringify(await result))
  console.log('events:', (await bus.read({ type: 'flow', id: flow })).map((e) => e.kind).join(' '))
  console.log('state:', (await bus.state({ type: 'flow', id: flow })).steps.process_order.status)
  await scheduler.close()
  await bus.close()
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
