#!/usr/bin/env node
// End-to-end scenario against a running Abacus with the official TypeScript SDK client
// (@modelcontextprotocol/sdk 1.32.2, legacy era: initialize + Mcp-Session-Id, protocol 2025-11-25).
//
//   ABACUS_URL=http://127.0.0.1:1453/mcp node tests/clients/ts_scenario.mjs      (or: hack/run-clients.sh URL)
//
// The SDK is loaded from .tools/npm (hack/install-tools.sh); ABACUS_TOOLS_DIR overrides where .tools is.
// Prints `PASS <n> checks` and exits 0, or prints the failing check and exits 1.
// Env: ABACUS_URL (default http://127.0.0.1:1453/mcp), ABACUS_CLIENT_TIMEOUT_S (whole run, default 120),
// ABACUS_VERBOSE=1 (log each check).
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const URL_STR = process.env.ABACUS_URL || 'http://127.0.0.1:1453/mcp';
const VERBOSE = process.env.ABACUS_VERBOSE === '1';
const RUN_TIMEOUT_MS = Number(process.env.ABACUS_CLIENT_TIMEOUT_S || 120) * 1000;
const REQ = { timeout: 30_000 }; // per-request timeout (SDK default is 60 s)

const toolsDir = process.env.ABACUS_TOOLS_DIR || fileURLToPath(new URL('../../.tools/', import.meta.url));
const sdkDir = join(toolsDir, 'npm', 'node_modules', '@modelcontextprotocol', 'sdk');
if (!existsSync(join(sdkDir, 'package.json'))) {
  console.error(`FAIL setup: @modelcontextprotocol/sdk not found in ${sdkDir}; run hack/install-tools.sh node`);
  process.exit(1);
}
// ESM imports do not search .tools/npm, so load the SDK's ESM entry points by path (stable for the pin).
const load = (p) => import(pathToFileURL(join(sdkDir, 'dist', 'esm', p)).href);
const { Client } = await load('client/index.js');
const { StreamableHTTPClientTransport } = await load('client/streamableHttp.js');
const { ResourceUpdatedNotificationSchema, CallToolResultSchema, McpError } = await load('types.js');
const sdkVersion = (await import(pathToFileURL(join(sdkDir, 'package.json')).href, { with: { type: 'json' } }))
  .default.version;

let checks = 0;
let current = 'setup';
async function check(name, fn) {
  current = name;
  await fn();
  checks++;
  if (VERBOSE) console.log(`ok ${checks} ${name}`);
}
const text = (result) => {
  assert.ok(Array.isArray(result.content) && result.content.length >= 1, `no content: ${JSON.stringify(result)}`);
  assert.equal(result.content[0].type, 'text', `first content item is not text: ${JSON.stringify(result.content[0])}`);
  return result.content[0].text;
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function waitFor(pred, ms, what) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) assert.fail(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}
function assertIncreasing(events, what) {
  for (let i = 1; i < events.length; i++) {
    assert.ok(
      events[i].progress > events[i - 1].progress,
      `${what}: progress not strictly increasing: ${JSON.stringify(events.map((e) => e.progress))}`,
    );
  }
}

const clients = [];
const transportErrors = [];
function newClient(name) {
  const c = new Client({ name, version: '0.1.0' });
  // Transport/protocol errors that do not reject a request (e.g. late progress for a finished request,
  // GET stream hiccups) land here; the late-progress ones fail the run at the end.
  c.onerror = (e) => {
    transportErrors.push(e);
    if (VERBOSE) console.log(`  (${name} onerror: ${e?.message ?? e})`);
  };
  clients.push(c);
  return c;
}

async function scenario() {
  const url = new URL(URL_STR);
  const t1 = new StreamableHTTPClientTransport(url);
  const c1 = newClient('abacus-ts-scenario');

  await check('initialize', async () => {
    await c1.connect(t1, REQ);
    assert.ok(t1.sessionId, 'server returned no Mcp-Session-Id');
    assert.match(t1.sessionId, /^[\x21-\x7e]+$/, 'session id must be visible ASCII');
    assert.ok(c1.getServerVersion()?.name, 'serverInfo.name missing');
    const caps = c1.getServerCapabilities();
    assert.ok(caps?.tools, 'tools capability missing');
    assert.ok(caps?.resources?.subscribe, 'resources.subscribe capability missing');
    assert.ok(caps?.prompts, 'prompts capability missing');
    assert.ok(caps?.completions, 'completions capability missing');
    assert.equal(t1.protocolVersion, '2025-11-25', 'negotiated protocol version');
  });

  await check('tools/list', async () => {
    const { tools } = await c1.listTools({}, REQ);
    const names = tools.map((t) => t.name);
    for (const n of ['calculate', 'batch_calculate', 'advanced_calculate', 'demo_progress']) {
      assert.ok(names.includes(n), `tool ${n} missing from ${JSON.stringify(names)}`);
    }
    for (const t of tools) assert.ok(t.description && t.inputSchema?.type === 'object', `tool ${t.name} shape`);
  });

  const call = (name, args, opts = {}) =>
    c1.callTool({ name, arguments: args }, CallToolResultSchema, { ...REQ, ...opts });

  let calculationId;
  await check('calculate 100 add 50', async () => {
    const r = await call('calculate', { a: 100, b: 50, op: 'add' });
    assert.notEqual(r.isError, true);
    assert.equal(text(r), '100 add 50 = 150');
    const sc = r.structuredContent;
    assert.ok(sc && typeof sc === 'object', `calculate result has no structuredContent: ${JSON.stringify(r)}`);
    calculationId = sc.calculationId ?? sc.id;
    assert.ok(typeof calculationId === 'string' && calculationId.length > 0, `no calculationId in ${JSON.stringify(sc)}`);
  });
  await check('calculate float texts', async () => {
    assert.equal(text(await call('calculate', { a: 1, b: 3, op: 'divide' })), '1 divide 3 = 0.3333333333333333');
    assert.equal(text(await call('calculate', { a: 7.5, b: 10, op: 'subtract' })), '7.5 subtract 10 = -2.5');
    assert.equal(text(await call('calculate', { a: 6, b: 7, op: 'multiply' })), '6 multiply 7 = 42');
  });
  await check('calculate divide by zero is a tool error', async () => {
    const r = await call('calculate', { a: 1, b: 0, op: 'divide' });
    assert.equal(r.isError, true);
    assert.equal(text(r), 'MCP error -32602: Division by zero is not allowed');
  });
  await check('batch_calculate', async () => {
    const r = await call('batch_calculate', {
      calculations: [
        { a: 1, b: 2, op: 'add' },
        { a: 5, b: 0, op: 'divide' },
        { a: 9, b: 3, op: 'divide' },
      ],
    });
    assert.notEqual(r.isError, true);
    assert.equal(text(r), 'Batch calculation completed. Results:\n1 add 2 = 3\nError: Division by zero\n9 divide 3 = 3');
  });
  await check('advanced_calculate', async () => {
    assert.equal(text(await call('advanced_calculate', { operation: 'power', value: 3, base: 2 })), 'power(3, 2) = 8');
    assert.equal(text(await call('advanced_calculate', { operation: 'factorial', value: 5 })), 'factorial(5) = 120');
    const r = await call('advanced_calculate', { operation: 'sqrt', value: -1 });
    assert.equal(r.isError, true);
    assert.equal(text(r), 'MCP error -32602: Square root of negative number');
  });
  await check('unknown tool is an error', async () => {
    // Spec (2025-11-25 server/tools): a protocol error -32602; the TS SDK's own McpServer answers isError
    // instead. Accept either, never a success.
    let r;
    try {
      r = await call('nosuchtool', {});
    } catch (e) {
      assert.ok(e instanceof McpError && e.code === -32602, `unexpected error ${e?.code}: ${e?.message}`);
      return;
    }
    assert.equal(r.isError, true, `unknown tool succeeded: ${JSON.stringify(r)}`);
  });

  await check('demo_progress steps=3 with progress', async () => {
    const events = [];
    const r = await call('demo_progress', { steps: 3 }, { onprogress: (p) => events.push(p) });
    assert.equal(text(r), 'Progress demonstration completed with 3 steps');
    assert.equal(events.length, 3, `expected 3 progress notifications, got ${JSON.stringify(events)}`);
    for (const e of events) {
      assert.equal(e.total, 3, `total must be 3: ${JSON.stringify(e)}`);
      assert.ok(Number.isFinite(e.progress) && e.progress <= 3, `bad progress ${JSON.stringify(e)}`);
    }
    assertIncreasing(events, 'demo_progress');
  });
  await check('calculate stream:true with progress token', async () => {
    const events = [];
    const r = await call('calculate', { a: 2, b: 3, op: 'multiply', stream: true }, { onprogress: (p) => events.push(p) });
    assert.equal(text(r), '2 multiply 3 = 6');
    assert.ok(events.length >= 1, 'no progress notification for calculate stream:true');
    assertIncreasing(events, 'calculate stream');
    for (const e of events) if (e.total !== undefined) assert.ok(e.progress <= e.total, `progress > total: ${JSON.stringify(e)}`);
  });
  await check('calculate stream:true without token sends no progress', async () => {
    const before = transportErrors.length;
    assert.equal(text(await call('calculate', { a: 2, b: 2, op: 'add', stream: true })), '2 add 2 = 4');
    await sleep(100);
    const late = transportErrors.slice(before).filter((e) => /progress notification/.test(e?.message ?? ''));
    assert.equal(late.length, 0, `unsolicited progress: ${late.map((e) => e.message).join('; ')}`);
  });

  await check('resources/list', async () => {
    const { resources } = await c1.listResources({}, REQ);
    const uris = resources.map((r) => r.uri);
    for (const u of ['calculator://constants', 'calculator://stats', 'formulas://library']) {
      assert.ok(uris.includes(u), `resource ${u} missing from ${JSON.stringify(uris)}`);
    }
  });
  await check('resources/read calculator://constants', async () => {
    const r = await c1.readResource({ uri: 'calculator://constants' }, REQ);
    assert.equal(r.contents.length, 1);
    assert.equal(r.contents[0].uri, 'calculator://constants');
    assert.equal(r.contents[0].mimeType, 'application/json');
    const obj = JSON.parse(r.contents[0].text);
    assert.equal(obj.pi, Math.PI);
    assert.equal(obj.e, Math.E);
  });
  await check('resources/templates/list has calculator://history/{calculationId}', async () => {
    const { resourceTemplates } = await c1.listResourceTemplates({}, REQ);
    const t = resourceTemplates.map((x) => x.uriTemplate);
    assert.ok(t.includes('calculator://history/{calculationId}'), `templates: ${JSON.stringify(t)}`);
  });
  await check('resources/read calculator://history/<id>', async () => {
    const uri = `calculator://history/${calculationId}`;
    const r = await c1.readResource({ uri }, REQ);
    assert.equal(r.contents.length, 1);
    const obj = JSON.parse(r.contents[0].text);
    assert.equal(obj.id ?? obj.calculationId, calculationId, `history entry: ${r.contents[0].text}`);
    assert.equal(obj.result, 150, `history entry result: ${r.contents[0].text}`);
  });
  await check('resources/read unknown uri is an error', async () => {
    await assert.rejects(c1.readResource({ uri: 'calculator://nosuch' }, REQ), (e) => e instanceof McpError);
  });

  await check('resources/subscribe calculator://stats -> notifications/resources/updated', async () => {
    const updated = [];
    c1.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) => {
      updated.push(n.params.uri);
    });
    const res = await c1.subscribeResource({ uri: 'calculator://stats' }, REQ);
    assert.deepEqual(Object.keys(res).filter((k) => k !== '_meta'), [], `subscribe result ${JSON.stringify(res)}`);
    assert.equal(text(await call('calculate', { a: 4, b: 5, op: 'add' })), '4 add 5 = 9');
    await waitFor(() => updated.includes('calculator://stats'), 5000, 'notifications/resources/updated for calculator://stats');
    await c1.unsubscribeResource({ uri: 'calculator://stats' }, REQ);
  });

  await check('prompts/list', async () => {
    const { prompts } = await c1.listPrompts({}, REQ);
    const names = prompts.map((p) => p.name).sort();
    assert.deepEqual(names, [
      'calculator_assistant',
      'explain-calculation',
      'explain_formula',
      'generate-problems',
      'solve_math_problem',
    ]);
  });
  await check('prompts/get generate-problems', async () => {
    const r = await c1.getPrompt(
      { name: 'generate-problems', arguments: { topic: 'fractions', difficulty: 'easy', count: '3' } },
      REQ,
    );
    assert.equal(r.description, 'Generate 3 easy fractions problems');
    assert.equal(r.messages.length, 1);
    assert.equal(r.messages[0].role, 'user');
    assert.equal(
      r.messages[0].content.text,
      'Generate 3 easy-level practice problems for fractions. Include solutions and explanations.',
    );
  });
  await check('prompts/get explain-calculation default level', async () => {
    const r = await c1.getPrompt({ name: 'explain-calculation', arguments: { operation: 'long division' } }, REQ);
    assert.equal(
      r.messages[0].content.text,
      'Please explain how to long division step by step at a basic level. Include examples and common mistakes to avoid.',
    );
  });
  await check('completion/complete explain-calculation level "b"', async () => {
    const r = await c1.complete(
      { ref: { type: 'ref/prompt', name: 'explain-calculation' }, argument: { name: 'level', value: 'b' } },
      REQ,
    );
    assert.ok(r.completion.values.includes('basic'), `completion values ${JSON.stringify(r.completion)}`);
  });

  // Same session through a second transport: Client.connect skips initialize when sessionId is set.
  const t2 = new StreamableHTTPClientTransport(url, { sessionId: t1.sessionId });
  t2.setProtocolVersion(t1.protocolVersion);
  const c2 = newClient('abacus-ts-scenario-reuse');
  await check('second transport reuses the session without initialize', async () => {
    await c2.connect(t2, REQ);
    assert.equal(t2.sessionId, t1.sessionId);
    const { tools } = await c2.listTools({}, REQ);
    assert.ok(tools.some((t) => t.name === 'calculate'), 'calculate missing via reused session');
    const r = await c2.callTool({ name: 'calculate', arguments: { a: 6, b: 7, op: 'multiply' } }, CallToolResultSchema, REQ);
    assert.equal(text(r), '6 multiply 7 = 42');
  });

  await check('DELETE ends the session; later requests get 404', async () => {
    await t2.terminateSession();
    assert.equal(t2.sessionId, undefined);
    await assert.rejects(c1.listTools({}, REQ), (e) => {
      assert.equal(e?.code, 404, `expected HTTP 404, got ${e?.code}: ${e?.message}`);
      return true;
    });
  });

  await check('no progress notification arrived after its response', async () => {
    const late = transportErrors.filter((e) => /progress notification for an unknown token/.test(e?.message ?? ''));
    assert.equal(late.length, 0, late.map((e) => e.message).join('; '));
  });
}

const guard = setTimeout(() => {
  console.error(`FAIL [${current}]: whole run exceeded ${RUN_TIMEOUT_MS / 1000} s`);
  process.exit(1);
}, RUN_TIMEOUT_MS);

try {
  console.log(`ts_scenario: @modelcontextprotocol/sdk ${sdkVersion} against ${URL_STR}`);
  await scenario();
  clearTimeout(guard);
  console.log(`PASS ${checks} checks`);
  await Promise.race([Promise.allSettled(clients.map((c) => c.close())), sleep(2000)]);
  process.exit(0);
} catch (e) {
  clearTimeout(guard);
  const cause = e?.cause ? ` (cause: ${e.cause?.message ?? e.cause})` : '';
  console.error(`FAIL [${current}] after ${checks} passed checks: ${e?.message ?? e}${cause}`);
  if (VERBOSE && e?.stack) console.error(e.stack);
  await Promise.race([Promise.allSettled(clients.map((c) => c.close())), sleep(2000)]);
  process.exit(1);
}
