// The `authorize` of the module's routes: the app's `lean-events:authorize` Nitro hooks.
//
//   export default defineNitroPlugin((nitroApp) => {
//     nitroApp.hooks.hook('lean-events:authorize', (event, target) => isAdmin(event))
//   })
//
// A hook that returns `false` or throws denies (403). No hook: the API routes are open, the
// dashboard is open only in development.

import { useNitroApp } from '#imports'

const HOOK = 'lean-events:authorize'

/**
 * true: a hook allowed it (none said no); false: one said no (or threw); undefined: no hook.
 * The hooks get `(event, target)` from this closure, not from hookable's arguments: those
 * differ between hookable 5 (Nitro 2) and 6.
 */
async function askHooks(event, target) {
  const ask = async (fns) => {
    for (const fn of fns) if ((await fn(event, target)) === false) return false
    return fns.length > 0 ? true : undefined
  }
  return useNitroApp().hooks.callHookWith(ask, HOOK, event, target)
}

/** The routes under /_lean-events are the dashboard's; the others the app's API routes. */
export function authorize(event, target) {
  const path = String(event.path || '')
  return path === '/_lean-events' || path.startsWith('/_lean-events/') || path.startsWith('/_lean-events?')
    ? authorizeDashboard(event, target)
    : authorizeRoute(event, target)
}

/** For the API routes (`routes: true`): allowed unless a hook says no. */
export function authorizeRoute(event, target) {
  return askHooks(event, { ...target, route: 'api' }).then((answer) => answer !== false)
}

/** For the dashboard and its API: a hook must say yes, except in development. */
export function authorizeDashboard(event, target) {
  return askHooks(event, { ...target, route: 'dashboard' }).then((answer) =>
    answer === undefined ? process.env.NODE_ENV !== 'production' : answer !== false,
  )
}
