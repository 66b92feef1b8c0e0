// The example flow, durable: one function defined with the lean-events Scheduler's defineFlow.
//   fetch_order  a step that fails its first attempt and is retried after a back-off
//   (a timer)    ctx.await.time: a durable wait
//   approval     waits for a trigger fired over HTTP (POST /api/_triggers/:id), its decision
//                recorded as a step
// A restart, a deploy or Ctrl-C (on Redis) does not break a run: an instance that defines the
// flow runs the function again, and each step or await already finished returns its recorded
// result. The engine writes flow.started / flow.completed / flow.failed.
import { randomBytes } from 'node:crypto'
import { useLeanEvents } from 'lean-events/nitro'

export const FLOW = 'example-flow'
const RETRY_MS = Number(process.env.EXAMPLE_RETRY_MS) || 800
const WAIT_MS = Number(process.env.EXAMPLE_WAIT_MS) || 2000

let defined: Promise<any> | undefined

/** The shared bus and scheduler, with this flow defined on it (once, at startup). */
export function useExampleFlow() {
  defined ??= useLeanEvents().then((le: any) => {
    le.scheduler.defineFlow(FLOW, async (input: any, ctx: any) => {
      const order = await ctx.step(
        'fetch_order',
        async ({ attempt }: { attempt: number }) => {
          await ctx.log('info', `fetching order ${input.orderId} (attempt ${attempt})`)
          if (attempt === 1) throw Object.assign(new Error('inventory API timed out'), { code: 'ETIMEDOUT' })
          return { orderId: input.orderId, items: 3, total: 42.5 }
        },
        { retry: { attempts: 3, backoff: { type: 'fixed', delayMs: RETRY_MS } } },
      )
      await ctx.await.time(WAIT_MS)
      const trigger = await ctx.await.trigger({
        type: 'user',
        payload: { question: `Ship order ${order.orderId}?` },
        timeoutMs: 30 * 60_000,
      })
      // code between steps runs again on a replay: this log may appear twice
      await ctx.log('info', `waiting for approval: POST /api/_triggers/${trigger.id}`)
      const decision = await trigger.wait()
      const approval = await ctx.step('approval', async () => ({ decision }))
      return { order, approval }
    })
    return le
  })
  defined.catch(() => {
    defined = undefined
  })
  return defined
}

/** Start a run: `flow.started` is stored before this returns; the engine runs the rest. */
export async function startExampleFlow(input: Record<string, unknown>) {
  const { scheduler } = await useExampleFlow()
  const id = `run-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`
  return scheduler.startFlow(FLOW, { id, input })
}

/** The demo's authorization policy: the generic routes expose flow and trigger streams only. */
export function authorizeDemo(_event: unknown, target: { type: string; id: string }) {
  return target.type === 'flow' || target.type === 'trigger'
}
