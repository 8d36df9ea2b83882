// openlambda runtime server for Node.js: follows images/PROTOCOL.md (version
// PROTOCOL below), as the Python runtime does. Listens for HTTP/1.1 on
// /host/sock/ol.sock, on connections the manager keeps open and reuses:
//   POST /load    once per container: code directory, handler, environment;
//   POST /invoke  one call: the event as JSON (OpenLambda's /run), or, with
//                 X-Ol-Meta-Length, the function URL's request, which becomes
//                 the payload format 2.0 event of `exports.handler = async
//                 (event, context) => ...`; the result maps back as AWS
//                 documents it;
//   GET  /health  liveness.
// What a call prints (console, stdout, stderr) is kept per call (up to 64
// KiB) and sent after the answer's body (X-Ol-Result-Length).
'use strict';

const http = require('http');
const fs = require('fs');
const path = require('path');
const { AsyncLocalStorage } = require('async_hooks');

const SOCKET = process.env.OL_SOCKET || '/host/sock/ol.sock';
const LOG_LIMIT = 64 * 1024;
// The protocol version (images/PROTOCOL.md): a load spec of another version is
// refused, and every reply carries X-Ol-Protocol.
const PROTOCOL = 1;
const CUT_MARKER = '\n[output cut at 64 KiB]\n';
const TEXT_TYPES = ['text/', 'application/json', 'application/xml', 'application/javascript',
  'application/x-www-form-urlencoded', '+json', '+xml'];

let handler = null;
let loaded = {};
const calls = new AsyncLocalStorage();

// Output of a call goes to that call's buffer; anything else to the log.
for (const stream of [process.stdout, process.stderr]) {
  const write = stream.write.bind(stream);
  stream.write = (chunk, encoding, callback) => {
    const output = calls.getStore();
    if (!output) return write(chunk, encoding, callback);
    const data = Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk), encoding);
    const room = LOG_LIMIT - output.size;
    if (data.length > room) output.cut = true;
    const kept = data.subarray(0, Math.max(room, 0));
    output.parts.push(kept);
    output.size += kept.length;
    if (typeof callback === 'function') callback();
    return true;
  };
}

function outputOf(store) {
  let out = Buffer.concat(store.parts);
  if (store.cut) out = Buffer.concat([out, Buffer.from(CUT_MARKER)]);
  return out;
}

function send(res, status, body, { headers = [], output = Buffer.alloc(0), raised = false } = {}) {
  const data = Buffer.isBuffer(body) ? body : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
  // X-Ol-* frames the reply (PROTOCOL.md): a handler's own is dropped.
  const list = headers.filter(([k]) => !String(k).toLowerCase().startsWith('x-ol-'));
  if (!list.some(([k]) => k.toLowerCase() === 'content-type')) list.push(['Content-Type', 'application/json']);
  if (raised) list.push(['X-Ol-Status', 'error']);
  list.push(['Content-Length', String(data.length + output.length)]);
  list.push(['X-Ol-Result-Length', String(data.length)]);
  list.push(['X-Ol-Protocol', String(PROTOCOL)]);
  res.writeHead(status, list.flat());
  res.end(Buffer.concat([data, output]));
}

function errorBody(err) {
  const type = (err && err.constructor && err.constructor.name) || 'Error';
  return { error: { type, message: err && err.message !== undefined ? String(err.message) : String(err) } };
}

function isText(type) {
  type = (type || '').toLowerCase();
  return TEXT_TYPES.some((t) => type.includes(t));
}

function context(meta) {
  const deadline = Date.now() + (meta.timeoutMs || 30000);
  return {
    functionName: loaded.function_name || '',
    functionVersion: loaded.version || '$LATEST',
    memoryLimitInMB: String(loaded.memory_mb || 0),
    awsRequestId: meta.requestId || '',
    invokedFunctionArn: 'arn:openlambda:function:' + (loaded.function_name || ''),
    logGroupName: '/openlambda/' + (loaded.function_name || ''),
    logStreamName: meta.requestId || '',
    callbackWaitsForEmptyEventLoop: false,
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
  };
}

function awsEvent(meta, body) {
  const headers = {};
  const cookies = [];
  for (const [rawName, value] of meta.headers || []) {
    const name = rawName.toLowerCase();
    if (name === 'cookie') {
      cookies.push(...value.split(';').map((c) => c.trim()).filter(Boolean));
      continue;
    }
    headers[name] = name in headers ? headers[name] + ',' + value : value;
  }
  const query = meta.query || '';
  const params = {};
  for (const [k, v] of new URLSearchParams(query)) params[k] = k in params ? params[k] + ',' + v : v;
  let binary = body.length > 0 && !isText(headers['content-type']);
  let text = binary ? body.toString('base64') : body.toString('utf8');
  if (!binary && Buffer.compare(Buffer.from(text, 'utf8'), body) !== 0) {
    binary = true;
    text = body.toString('base64');
  }
  const now = Date.now();
  const event = {
    version: '2.0',
    routeKey: '$default',
    rawPath: meta.path || '/',
    rawQueryString: query,
    headers,
    requestContext: {
      accountId: 'anonymous',
      apiId: loaded.function_name || '',
      domainName: headers.host || '',
      domainPrefix: loaded.function_name || '',
      http: { method: meta.method || 'GET', path: meta.path || '/', protocol: 'HTTP/1.1',
        sourceIp: meta.sourceIp || '', userAgent: headers['user-agent'] || '' },
      requestId: meta.requestId || '',
      routeKey: '$default',
      stage: '$default',
      time: new Date(now).toUTCString(),
      timeEpoch: now,
    },
    isBase64Encoded: binary,
  };
  if (cookies.length) event.cookies = cookies;
  if (Object.keys(params).length) event.queryStringParameters = params;
  if (body.length) event.body = text;
  return event;
}

function awsResponse(result) {
  if (!(result && typeof result === 'object' && !Array.isArray(result) && 'statusCode' in result)) {
    return [200, [['Content-Type', 'application/json']], Buffer.from(JSON.stringify(result === undefined ? null : result))];
  }
  const headers = Object.entries(result.headers || {}).map(([k, v]) => [k, String(v)]);
  for (const [k, values] of Object.entries(result.multiValueHeaders || {})) {
    for (const v of values) headers.push([k, String(v)]);
  }
  for (const c of result.cookies || []) headers.push(['Set-Cookie', String(c)]);
  let body = result.body;
  if (body === undefined || body === null) body = Buffer.alloc(0);
  else if (result.isBase64Encoded) body = Buffer.from(body, 'base64');
  else if (typeof body !== 'string') body = Buffer.from(JSON.stringify(body));
  else body = Buffer.from(body, 'utf8');
  return [Number(result.statusCode) || 200, headers, body];
}

async function invoke(req, res, raw) {
  if (!handler) return send(res, 409, { error: { type: 'NotLoaded', message: 'no handler loaded' } });
  const metaLength = req.headers['x-ol-meta-length'];
  const store = { parts: [], size: 0, cut: false };
  await calls.run(store, async () => {
    try {
      if (metaLength === undefined) {
        let event = null;
        try {
          event = raw.toString().trim() ? JSON.parse(raw) : null;
        } catch (err) {
          return send(res, 400, { error: { type: 'InvalidEvent', message: 'event is not JSON: ' + err.message } });
        }
        const result = await handler(event, context({}));
        return send(res, 200, JSON.stringify(result === undefined ? null : result), { output: outputOf(store) });
      }
      const n = Number(metaLength);
      const meta = JSON.parse(raw.subarray(0, n).toString());
      const result = await handler(awsEvent(meta, raw.subarray(n)), context(meta));
      const [status, headers, body] = awsResponse(result);
      return send(res, status, body, { headers, output: outputOf(store) });
    } catch (err) {
      console.error(err && err.stack ? err.stack : String(err));
      const output = outputOf(store);
      process.stderr.write(output);
      return send(res, 500, errorBody(err), { output, raised: true });
    }
  });
}

function load(res, raw) {
  const started = Date.now();
  try {
    const spec = JSON.parse(raw.toString() || '{}');
    if (spec.protocol !== PROTOCOL) {
      return send(res, 400, { error: { type: 'ProtocolMismatch', message:
        `the manager speaks protocol ${JSON.stringify(spec.protocol)}, this runtime ${PROTOCOL}; rebuild the runtime images (ol images)` } });
    }
    Object.assign(process.env, spec.env || {});
    process.chdir(spec.dir);
    const mod = require(path.join(spec.dir, spec.module));
    const fn = mod[spec.function];
    if (typeof fn !== 'function') throw new TypeError(`module ${spec.module} has no function ${spec.function}`);
    handler = fn;
    loaded = { handler: `${spec.module}.${spec.function}`, function_name: spec.function_name,
      version: spec.version, memory_mb: spec.memory_mb };
    send(res, 200, { loaded: loaded.handler, style: 'aws', ms: Date.now() - started });
  } catch (err) {
    console.error(err && err.stack ? err.stack : String(err));
    send(res, 500, errorBody(err));
  }
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const raw = Buffer.concat(chunks);
    if (req.method === 'GET' && req.url === '/health') return send(res, 200, { ok: true, loaded: loaded.handler || null, protocol: PROTOCOL });
    if (req.method === 'POST' && req.url === '/load') return load(res, raw);
    if (req.method === 'POST' && req.url === '/invoke') return invoke(req, res, raw);
    return send(res, 404, { error: { type: 'NotFound', message: req.url } });
  });
});
// The manager keeps its connections open and reuses them (keep-alive, every
// reply with a Content-Length, each request's body read whole before the
// reply): no idle timeout, so a kept connection ends only when the manager
// drops it.
server.keepAliveTimeout = 0;

try { fs.unlinkSync(SOCKET); } catch (_) { /* not there */ }
const oldMask = process.umask(0);
server.listen(SOCKET, () => {
  process.umask(oldMask);
  console.log('openlambda runtime listening on ' + SOCKET);
});
process.on('unhandledRejection', (err) => console.error('unhandled rejection:', err));
