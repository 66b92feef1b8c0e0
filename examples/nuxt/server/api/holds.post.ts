// POST /api/holds → { nap, hold }: two runs for the dashboard's pending list, one of the flow
// `nap` (waiting on a durable timer, an hour) and one of `hold` (waiting on an event,
// `hold.released` for this run); both flows are in server/plugins/flows.ts.
export default defineEventHandler(async () => {
  const { scheduler } = await useLeanEvents()
  const nap = await scheduler.startFlow('nap', { id: `nap-${crypto.randomUUID()}`, input: { ms: 3_600_000 } })
  const id = `hold-${crypto.randomUUID()}`
  const hold = await scheduler.startFlow('hold', { id, input: { id } })
  return { nap, hold }
})
