// POST (or GET, for `curl …/start`) /api/_flows/example-flow/start → { id }: starts a run.
export default defineEventHandler(async (event) => {
  if (getRouterParam(event, 'name') !== FLOW) {
    setResponseStatus(event, 404)
    return { statusCode: 404, message: `no flow named ${getRouterParam(event, 'name')}` }
  }
  const method = getMethod(event)
  if (method !== 'POST' && method !== 'GET') {
    setResponseStatus(event, 405)
    setResponseHeader(event, 'allow', 'GET, POST')
    return { statusCode: 405, message: 'use POST or GET' }
  }
  const body = method === 'POST' ? await readBody(event) : undefined
  const orderId = String(body?.orderId ?? getQuery(event).orderId ?? Math.floor(1000 + Math.random() * 9000))
  const id = await startExampleFlow({ orderId })
  return { id }
})
