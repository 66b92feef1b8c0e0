// GET /api/_metrics: the bus metrics in Prometheus text format (mounted with `metrics: true`
// when lean-events/nitro has metricsHandler).
import * as nitro from 'lean-events/nitro'
import { authorize } from '../authorize.js'

export default nitro.metricsHandler({ authorize })
