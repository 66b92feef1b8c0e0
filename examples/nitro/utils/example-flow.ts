// The example flow: three steps run one after the other by the lean-events Scheduler.
//   fetch_order  fails its first attempt and is retried after a back-off
//   cool_down    waits on a durable timer (ctx.await.time)
//   approval     waits for a trigger fired over HTTP (ctx.await.trigger, POST /api/_triggers/:id)
import { randomBytes } from 'node:crypto'
import { useLeanEvents } from 'lean-events/nitro'

export const FLOW = 'example-flow'
const RETRY_MS = Number(process.env.EXAMPLE_RETRY_MS) || 800
const WAIT_MS = Number(process.env.EXAMPLE_WAIT_MS) || 2000

let defined: Promise<any> | undefined

/** The shared bus and scheduler, with this flow's steps defined on it (once). */
export function useExampleFlow() {
  defined ??= useLeanEvents().then((le: any) => {
    const { scheduler } = le
    scheduler.define(
      'fetch_order',
      async (input: any, ctx: any) => {
        await ctx.log('info', `fetching order ${input.orderId} (attempt ${ctx.attempt})`)
        if (ctx.attempt === 1) throw Object.assign(new Error('inventory API timed out'), { code: 'ETIMEDOUT' })
        return { orderId: input.orderId, items: 3, total: 42.5 }
      },
      { retry: { attempts: 3, backoff: { type: 'fixed', delayMs: RETRY_MS } } },
    )
    scheduler.define('cool_down', async (_input: any, ctx: any) => {
      await ctx.log('info', `waiting ${WAIT_MS} ms on a durable timer`)
      await ctx.await.time(WAIT_MS)
      return { waitedMs: WAIT_MS }
    })
    scheduler.define('approval', async (input: any, ctx: any) => {
      const trigger = await ctx.await.trigger({
        type: 'user',
        payload: { question: `Ship order ${input.orderId}?` },
        timeoutMs: 30 * 60_000,
      })
      await ctx.log('info', `waiting for approval: POST /api/_triggers/${trigger.id}`)
      const decision = await trigger.wait()
      await ctx.log('info', 'approved', decision)
      return { decision }
    })
    return le
  })
  defined.catch(() => {
    defined = undefined
  })
  return defined
}

/** Start a run: `flow.started` is stored before this returns; the steps go on in the background. */
export async function startExampleFlow(input: Record<string, unknown>) {
  const { bus, scheduler } = await useExampleFlow()
  const id = `run-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`
  await bus.emit({ kind: 'flow.started', subject: id, data: { name: FLOW, input } })
  const t0 = Date.now()
  ;(async () => {
    try {
      const order = await scheduler.run('fetch_order', { flow: id, input })
      await scheduler.run('cool_down', { flow: id, input: order })
      const approval = await scheduler.run('approval', { flow: id, input: order })
      await bus.emit({ kind: 'flow.completed', subject: id, data: { result: { order, approval }, duration: Date.now() - t0 } })
    } catch (err: any) {
      const error = { message: String(err?.message ?? err), code: err?.code, step: err?.step }
      await bus.emit({ kind: 'flow.failed', subject: id, data: { error, duration: Date.now() - t0 } }).catch(() => {})
    }
  })()
  return id
}

/** The demo's authorization policy: the generic routes expose flow and trigger streams only. */
export function authorizeDemo(_event: unknown, target: { type: string; id: string }) {
  return target.type === 'flow' || target.type === 'trigger'
}
