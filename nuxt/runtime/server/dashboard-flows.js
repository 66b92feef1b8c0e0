// GET /_lean-events/api/flows → { flows }: the flow names the dashboard offers (the module's
// `flows` option; other names can be typed in).
import { defineEventHandler, setResponseHeader, setResponseStatus } from 'h3'
import { useRuntimeConfig } from '#imports'
import { authorizeDashboard } from './authorize.js'

export default defineEventHandler(async (event) => {
  setResponseHeader(event, 'cache-control', 'no-store')
  if (!(await authorizeDashboard(event, { type: 'flows', id: '*' }).catch(() => false))) {
    setResponseStatus(event, 403)
    return { statusCode: 403, code: 'FORBIDDEN', message: 'forbidden' }
  }
  return { flows: (useRuntimeConfig().leanEvents || {}).flows || [] }
})
