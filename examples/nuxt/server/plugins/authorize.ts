// Who may use the lean-events routes and the dashboard. This example lets everyone in; an
// app checks its session here (return false, or throw, to answer 403).
export default defineNitroPlugin((nitroApp) => {
  nitroApp.hooks.hook('lean-events:authorize', (_event, _target) => true)
})
