// POST /api/_triggers/:id: fire a trigger with the JSON body as payload.
import { triggerHandler } from 'lean-events/nitro'
import { authorize } from '../authorize.js'

export default triggerHandler({ authorize })
