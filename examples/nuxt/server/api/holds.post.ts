// POST /api/holds → { id }: a run with two steps waiting at once, one on a durable timer (an
// hour) and one on an event (`hold.released` for this run), for the dashboard's pending list.
export default defineEventHandler(async () => {
  const { bus, scheduler } = await useLeanEvents()
  const id = `hold-${crypto.randomUUID()}`
  await bus.emit({ kind: 'flow.started', subject: id, data: { name: 'hold', input: {} } })
  Promise.all([scheduler.run('nap', { flow: id, input: { ms: 3_600_000 } }), scheduler.run('hold', { flow: id, input: { id } })])
    .then((result) => bus.emit({ kind: 'flow.completed', subject: id, data: { result } }))
    .catch((err) => bus.emit({ kind: 'flow.failed', subject: id, data: { error: err.message } }))
  return { id }
})
