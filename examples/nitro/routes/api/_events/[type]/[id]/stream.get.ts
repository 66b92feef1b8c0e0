import { eventStreamHandler } from 'lean-events/nitro'

export default eventStreamHandler({ authorize: authorizeDemo })
