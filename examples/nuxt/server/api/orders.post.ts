export default defineEventHandler(async (event) => {
  const { scheduler } = await useLeanEvents()
  const order = await readBody(event)
  const id = await scheduler.startFlow('order', { id: `order-${crypto.randomUUID()}`, input: order })
  return { id } // flow.started is stored; the engine runs the flow and writes how it ends
})
