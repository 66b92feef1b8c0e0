// GET /api/_metrics: the bus metrics in Prometheus text format (mounted with `metrics: true`).
import { metricsHandler } from 'lean-events/nitro'
import { authorize } from '../authorize.js'

export default metricsHandler({ authorize })
