// The HTML shell of both pages; the page logic is in public/app/*.js (ES modules).
export function page(title: string, script: string, body: string) {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · lean-events</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/app/app.css">
<script type="importmap">{ "imports": { "lean-events/client": "/_lean-events/client/index.js" } }</script>
<script type="module" src="/app/${script}"></script>
</head>
<body>
<header><a href="/" class="brand">lean-events</a><span class="sub">example-flow on Nitro</span></header>
<main>${body}</main>
</body>
</html>`
}
