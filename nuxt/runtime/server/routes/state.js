// GET /api/_events/:type/:id: the stream's reduced state.
import { stateHandler } from 'lean-events/nitro'
import { authorize } from '../authorize.js'

export default stateHandler({ authorize })
