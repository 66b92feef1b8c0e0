// The runs page: the run index (newest first) and a button that starts a run.
const $ = (sel) => document.querySelector(sel)

async function load() {
  const res = await fetch('/api/_flows/example-flow/runs?state=1&limit=50')
  const { runs } = await res.json()
  const rows = runs.map((r) => {
    const tr = document.createElement('tr')
    tr.innerHTML = `<td><a></a></td><td class="muted"></td><td><span class="badge"></span></td>`
    const a = tr.querySelector('a')
    a.href = `/runs/${encodeURIComponent(r.id)}`
    a.textContent = r.id
    tr.children[1].textContent = new Date(r.startedAt).toLocaleString()
    const badge = tr.querySelector('.badge')
    badge.textContent = r.status
    badge.classList.add(r.status)
    return tr
  })
  if (rows.length === 0) {
    const tr = document.createElement('tr')
    tr.innerHTML = '<td colspan="3" class="muted">no run yet: start one</td>'
    rows.push(tr)
  }
  $('#runs').replaceChildren(...rows)
}

$('#start').addEventListener('click', async () => {
  $('#start').disabled = true
  try {
    const res = await fetch('/api/_flows/example-flow/start', { method: 'POST' })
    if (!res.ok) throw new Error(`${res.status}`)
    const { id } = await res.json()
    location.href = `/runs/${encodeURIComponent(id)}`
  } catch (err) {
    $('#message').textContent = `could not start a run: ${err.message}`
    $('#start').disabled = false
  }
})

load().catch((err) => ($('#message').textContent = `could not list runs: ${err.message}`))
setInterval(() => load().catch(() => {}), 5000)
