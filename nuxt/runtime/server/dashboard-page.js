// GET /_lean-events[/runs/:id]: the run dashboard's page. A shell: the script
// (/_lean-events/assets/dashboard.js) reads the runs and events from /_lean-events/api/…,
// which ask the same `lean-events:authorize` hooks.
import { defineEventHandler, setResponseHeader, setResponseStatus } from 'h3'
import { authorizeDashboard } from './authorize.js'

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lean-events</title>
<link rel="stylesheet" href="/_lean-events/assets/dashboard.css">
</head>
<body>
<header><a href="/_lean-events" class="brand">lean-events</a><span id="conn" class="conn"></span></header>
<main id="app" data-testid="dashboard"><p class="muted">Loading…</p></main>
<script type="module" src="/_lean-events/assets/dashboard.js"></script>
</body>
</html>
`

export default defineEventHandler(async (event) => {
  setResponseHeader(event, 'cache-control', 'no-store')
  if (!(await authorizeDashboard(event, { type: 'dashboard', id: event.path || '/_lean-events' }).catch(() => false))) {
    setResponseStatus(event, 403)
    setResponseHeader(event, 'content-type', 'text/plain; charset=utf-8')
    return 'forbidden: the lean-events dashboard needs a lean-events:authorize hook that allows it'
  }
  setResponseHeader(event, 'content-type', 'text/html; charset=utf-8')
  return PAGE
})
