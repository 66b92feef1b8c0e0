import { stateHandler } from 'lean-events/nitro'

export default stateHandler({ authorize: authorizeDemo })
