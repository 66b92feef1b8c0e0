export default defineEventHandler((event) => {
  setResponseHeader(event, 'content-type', 'text/html; charset=utf-8')
  return page(
    'Runs',
    'index.js',
    `<section class="bar">
  <h1>example-flow runs</h1>
  <button id="start" data-testid="start">Start a run</button>
</section>
<p class="hint">Each run: <code>fetch_order</code> (fails once, retried) → <code>cool_down</code> (durable timer)
→ <code>approval</code> (waits for a trigger you fire from the run page).</p>
<p id="message" class="message" role="status"></p>
<table class="runs"><thead><tr><th>run</th><th>started</th><th>status</th></tr></thead>
<tbody id="runs"><tr><td colspan="3" class="muted">loading…</td></tr></tbody></table>`,
  )
})
