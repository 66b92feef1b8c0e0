import { runsHandler } from 'lean-events/nitro'

export default runsHandler()
