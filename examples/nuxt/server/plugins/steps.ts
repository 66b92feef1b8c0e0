// The order flow's step: packs the order (its first attempt fails, to show a retry), then
// waits for a person to approve the shipment (a trigger, fired from the dashboard or with
// POST /api/_triggers/:id). Defined at startup, so a run resumes after a restart.
export default defineNitroPlugin(async () => {
  const { scheduler } = await useLeanEvents()
  scheduler.define(
    'ship',
    async (order: { item?: string }, ctx) => {
      await ctx.log('info', `packing ${order.item ?? 'the order'} (attempt ${ctx.attempt})`)
      if (ctx.attempt === 1) throw new Error('the packing station was busy')
      const approval = await ctx.await.trigger({ type: 'approval', payload: { question: `Ship ${order.item}?` } })
      await ctx.log('info', `waiting for approval: trigger ${approval.id}`)
      const decision = await approval.wait()
      return { shipped: true, decision }
    },
    { retry: { attempts: 3, backoff: { type: 'fixed', delayMs: 300 } } },
  )
})
