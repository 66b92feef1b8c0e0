// The flows, defined at startup on every instance: a run started on one (server/api/orders.post.ts)
// goes on after a restart, or on another instance, from its last finished step. `order` packs
// the order (its first attempt fails, to show a retry), then waits for a person to approve the
// shipment (a trigger, fired from the dashboard or with POST /api/_triggers/:id; a cancelled
// one is asked again), then ships. `nap` and `hold` (server/api/holds.post.ts) wait on a
// durable timer and on an event.
export default defineNitroPlugin(async () => {
  const { scheduler } = await useLeanEvents()
  scheduler.defineFlow('order', async (order: { item?: string }, ctx) => {
    const packed = await ctx.step(
      'pack',
      async ({ attempt }) => {
        await ctx.log('info', `packing ${order.item ?? 'the order'} (attempt ${attempt})`)
        if (attempt === 1) throw new Error('the packing station was busy')
        return { item: order.item }
      },
      { retry: { attempts: 3, backoff: { type: 'fixed', delayMs: 300 } } },
    )
    for (;;) {
      const approval = await ctx.await.trigger({ type: 'approval', payload: { question: `Ship ${order.item}?` } })
      try {
        const decision = await approval.wait()
        return ctx.step('ship', () => ({ shipped: packed.item, decision }))
      } catch (err) {
        if ((err as { code?: string }).code !== 'TRIGGER_CANCELLED') throw err
      }
    }
  })
  scheduler.defineFlow('nap', async (input: { ms: number }, ctx) => {
    await ctx.await.time(input.ms)
    return { napped: input.ms }
  })
  scheduler.defineFlow('hold', async (input: { id: string }, ctx) => {
    const released = await ctx.await.event({ kind: 'hold.released', match: { 'data.id': input.id }, timeoutMs: 3_600_000 })
    return { releasedBy: released.data }
  })
})
