// GET /api/_events/:type/:id/stream (and the dashboard's copy): Server-Sent Events.
import { eventStreamHandler } from 'lean-events/nitro'
import { authorize } from '../authorize.js'

export default eventStreamHandler({ authorize })
