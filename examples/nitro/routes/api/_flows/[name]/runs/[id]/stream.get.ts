import { eventStreamHandler } from 'lean-events/nitro'

// GET /api/_flows/example-flow/runs/:id/stream: SSE of one run, backfill then live,
// resumable with Last-Event-ID
export default eventStreamHandler({ type: 'flow' })
