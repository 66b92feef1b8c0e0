export default defineEventHandler(async (event) => {
  const { bus, scheduler } = await useLeanEvents()
  const order = await readBody(event)
  const id = `order-${crypto.randomUUID()}`
  await bus.emit({ kind: 'flow.started', subject: id, data: { name: 'order', input: order } })
  scheduler.run('ship', { flow: id, input: order }) // steps: server/plugins/steps.ts
    .then((result) => bus.emit({ kind: 'flow.completed', subject: id, data: { result } }))
    .catch((err) => bus.emit({ kind: 'flow.failed', subject: id, data: { error: err.message } }))
  return { id }
})
