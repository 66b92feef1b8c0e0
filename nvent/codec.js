// How values are stored where nvent's Redis adapters store them, so that a fleet of lean-events
// and nvent-redis instances reads the same values from the same keys:
//
// - stream fields and kv strings: JSON for objects and null, String() for other values; the
//   reader JSON-parses and falls back to the raw text. A string that would parse as JSON
//   ("42", "true", "[1]") is stored as a JSON string, so both readers give it back as a string.
// - index documents: one hash field per leaf, named by its dot path; arrays as JSON, other
//   leaves as String(). The reference reader turns numeric text into numbers and "true"/"false"
//   into booleans; a string it would misread (or that starts with `"`) is stored as a JSON
//   string. An empty object at path p is the field `p.` (empty): it survives (a flattened `{}`
//   has no leaf), and the reference reads it as an object too (with one empty-named key).

/** Characters JSON text can start with (after whitespace). */
const JSON_START = /^[\s]*[[{"\-0-9tfn]/

/** True when `text` is JSON (without throwing for the common case of plain words). */
function isJson(text) {
  if (!JSON_START.test(text)) return false
  try {
    JSON.parse(text)
    return true
  } catch {
    return false
  }
}

/** A value as nvent's Redis adapters store a stream field or a kv string. */
export function encodeText(value) {
  if (typeof value === 'string') {
    // quoted when a JSON reader would turn it into something else, or when it holds the
    // separator of lean-events' live messages
    // (an empty string too: the reference reads an empty kv string as null)
    return value === '' || isJson(value) || value.includes('\u001f') ? JSON.stringify(value) : value
  }
  if (value === undefined) return 'null'
  if (typeof value === 'object') return JSON.stringify(value) ?? 'null'
  if (typeof value === 'bigint') return String(value)
  return String(value)
}

/** A stream field or kv string back into its value: JSON, else the text itself. */
export function decodeText(text) {
  if (!JSON_START.test(text)) return text
  try {
    return JSON.parse(text)
  } catch {
    return text
  }
}

/** What the reference reader makes of a hash field's text (numbers, booleans, arrays). */
function referenceLeaf(text) {
  if (text.startsWith('[')) {
    try {
      return JSON.parse(text)
    } catch {
      // not JSON: one of the cases below
    }
  }
  if (text === 'true') return true
  if (text === 'false') return false
  const n = Number(text)
  if (!Number.isNaN(n) && text.trim() !== '') return n
  return text
}

/** A leaf of a document as its hash field's text (see the module's comment). */
export function encodeLeaf(value) {
  if (typeof value === 'string') {
    return value.startsWith('"') || referenceLeaf(value) !== value ? JSON.stringify(value) : value
  }
  if (Array.isArray(value)) return JSON.stringify(value)
  return String(value)
}

/** A hash field's text back into its leaf. */
export function decodeLeaf(text) {
  if (text.startsWith('"')) {
    try {
      const s = JSON.parse(text)
      if (typeof s === 'string') return s
    } catch {
      // the reference's reading applies
    }
  }
  return referenceLeaf(text)
}

/** A Date as JSON gives it, another object with toJSON as it gives it, else the value. */
function jsonValue(value) {
  if (value !== null && typeof value === 'object' && typeof value.toJSON === 'function') return value.toJSON()
  return value
}

function isPlainObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

function skipped(value) {
  return value === undefined || typeof value === 'function' || typeof value === 'symbol'
}

/**
 * The merge steps of a partial update: `set` per leaf, `delete` per null (the whole subtree),
 * `object` per empty object; undefined is skipped. Keys are taken as they are (the caller
 * refused dotted ones); a top-level `version` is left to the store.
 */
export function mergeSteps(partial, path = '', out = []) {
  for (const [key, raw] of Object.entries(partial)) {
    if (path === '' && key === 'version') continue
    const value = jsonValue(raw)
    if (skipped(value)) continue
    const p = path ? `${path}.${key}` : key
    if (value === null) out.push(['delete', p])
    else if (isPlainObject(value)) {
      if (Object.keys(value).length === 0) out.push(['object', p])
      else mergeSteps(value, p, out)
    } else out.push(['set', p, encodeLeaf(value)])
  }
  return out
}

/** What one merge step does to a document's fields (the rules of the store's merge). */
function applyStep(fields, [op, path, text]) {
  const below = `${path}.`
  for (let i = path.indexOf('.'); i !== -1; i = path.indexOf('.', i + 1)) {
    fields.delete(path.slice(0, i))
    fields.delete(path.slice(0, i + 1))
  }
  fields.delete(path)
  if (op === 'set') {
    for (const k of [...fields.keys()]) if (k.startsWith(below)) fields.delete(k)
    fields.set(path, text)
  } else if (![...fields.keys()].some((k) => k.startsWith(below))) {
    fields.set(below, '')
  }
}

/**
 * A whole document's hash fields: `version` first (0 unless the metadata names one), dotted
 * keys expanded into paths, null and undefined left out, later keys winning over earlier ones
 * where their paths meet.
 */
export function documentFields(metadata) {
  const fields = new Map([['version', '0']])
  const walk = (obj, path) => {
    for (const [key, raw] of Object.entries(obj)) {
      const value = jsonValue(raw)
      if (skipped(value) || value === null) continue
      const p = path ? `${path}.${key}` : key
      if (isPlainObject(value)) {
        if (Object.keys(value).length === 0) applyStep(fields, ['object', p])
        else walk(value, p)
      } else applyStep(fields, ['set', p, encodeLeaf(value)])
    }
  }
  walk(metadata, '')
  return [...fields]
}

/** Set `value` at `segments` of `root`; an object already there wins over a leaf. */
function place(root, segments, value, isObject) {
  let cur = root
  for (let i = 0; i < segments.length - 1; i++) {
    const s = segments[i]
    if (!isPlainObject(cur[s])) cur[s] = {}
    cur = cur[s]
  }
  const last = segments[segments.length - 1]
  if (isObject) {
    if (!isPlainObject(cur[last])) cur[last] = {}
  } else if (!isPlainObject(cur[last])) {
    cur[last] = value
  }
}

/** A document from its hash fields (`[[path, text], …]`); undefined when it has none. */
export function documentFromFields(fields) {
  if (fields.length === 0) return undefined
  const doc = {}
  for (const [path, text] of fields) {
    if (path === 'version') {
      doc.version = decodeLeaf(text)
      continue
    }
    const mark = path.endsWith('.') && text === ''
    const segments = (mark ? path.slice(0, -1) : path).split('.')
    if (segments.includes('__proto__')) continue
    place(doc, segments, mark ? undefined : decodeLeaf(text), mark)
  }
  return doc
}

/** The texts a top-level metadata value may be stored as, for a filter; null: none. */
export function filterTexts(value) {
  const v = jsonValue(value)
  if (v === null || skipped(v) || isPlainObject(v)) return null
  return encodeLeaf(v)
}
