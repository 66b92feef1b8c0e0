import { triggerHandler } from 'lean-events/nitro'

// 200 fired, 404 unknown or expired, 409 already resolved, 400 bad id or body, 413 too large
export default triggerHandler()
