// POST /api/_triggers/:id/cancel: cancel a pending trigger (`{ reason }` optional).
import { cancelTriggerHandler } from 'lean-events/nitro'
import { authorize } from '../authorize.js'

export default cancelTriggerHandler({ authorize })
