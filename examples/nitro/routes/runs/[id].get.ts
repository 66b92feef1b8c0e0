export default defineEventHandler((event) => {
  setResponseHeader(event, 'content-type', 'text/html; charset=utf-8')
  return page(
    'Run',
    'run.js',
    `<section class="bar">
  <h1>Run <code id="run-id"></code></h1>
  <span id="flow-status" class="badge" data-testid="flow-status">…</span>
  <span id="conn" class="conn">connecting…</span>
</section>
<p id="summary" class="muted"></p>
<p id="message" class="message" role="status"></p>
<h2>Steps</h2>
<table class="steps"><thead><tr><th>step</th><th>status</th><th>attempt</th><th>waiting for</th><th>detail</th></tr></thead>
<tbody id="steps"><tr><td colspan="5" class="muted">no step yet</td></tr></tbody></table>
<h2>Logs</h2>
<ol id="logs" class="logs"></ol>
<details><summary>Events (<span id="event-count">0</span>)</summary><ol id="events" class="events"></ol></details>`,
  )
})
