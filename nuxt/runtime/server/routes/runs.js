// GET /api/_flows/:name/runs?limit=&offset=&state=1: a flow's runs, newest first.
import { runsHandler } from 'lean-events/nitro'
import { authorize } from '../authorize.js'

export default runsHandler({ authorize })
