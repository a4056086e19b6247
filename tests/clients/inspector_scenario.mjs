#!/usr/bin/env node
// The MCP Inspector CLI (@modelcontextprotocol/inspector 2.12.0, pinned in hack/npm-tools) against a
// running Abacus, as a new user would drive it: every check is one `mcp-inspector --cli` run (a fresh
// session each time, as users invoke it), and its exit code and output are checked.
//
//   ABACUS_URL=http://127.0.0.1:1453/mcp node tests/clients/inspector_scenario.mjs   (or: hack/run-clients.sh URL)
//
// Covers: tools/list --strict (tool schemas portable: 0 errors, 0 warnings), tools/call of every
// calculator tool, resources/list and resources/read of every static resource, a history entry
// (modern era, so the entry is reachable from a later run through its state handle), the resource
// templates, prompts/list and prompts/get of every prompt with arguments, and logging/setLevel. The CLI
// has no completion/complete method, so completions are covered by the SDK scenarios instead.
// The server must serve the calculator toolset. Prints `PASS <n> checks` and exits 0, or the failing
// check and exits 1. Env: ABACUS_URL, ABACUS_TOOLS_DIR, ABACUS_VERBOSE=1.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const URL_STR = process.env.ABACUS_URL || 'http://127.0.0.1:1453/mcp';
const VERBOSE = process.env.ABACUS_VERBOSE === '1';
const toolsDir = process.env.ABACUS_TOOLS_DIR || fileURLToPath(new URL('../../.tools/', import.meta.url));
const cli = join(toolsDir, 'npm', 'node_modules', '.bin', 'mcp-inspector');
if (!existsSync(cli)) {
  console.error(`FAIL setup: mcp-inspector not found at ${cli}; run hack/install-tools.sh node`);
  process.exit(1);
}
// The CLI keeps a catalog and client state under HOME: give it a throw-away one.
const home = mkdtempSync(join(tmpdir(), 'abacus-inspector-'));
process.on('exit', () => rmSync(home, { recursive: true, force: true }));

let checks = 0;
function check(name, fn) {
  try {
    fn();
  } catch (e) {
    console.error(`FAIL ${name}: ${e.message}`);
    process.exit(1);
  }
  checks++;
  if (VERBOSE) console.log(`ok ${checks} ${name}`);
}

/** Runs the CLI; returns {status, stdout, stderr, json}. */
function inspector(args) {
  const r = spawnSync(cli, ['--cli', URL_STR, ...args], {
    encoding: 'utf8',
    timeout: 60_000,
    env: { ...process.env, HOME: home, MCP_CATALOG_PATH: join(home, 'mcp.json'), NO_COLOR: '1' },
  });
  let json;
  try {
    json = JSON.parse(r.stdout);
  } catch {
    json = undefined;
  }
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, json, error: r.error };
}

/** Runs the CLI expecting success and a JSON result; returns the result object. */
function ok(args) {
  const r = inspector([...args, '--format', 'json']);
  assert.equal(r.error, undefined, `spawn failed: ${r.error}`);
  assert.equal(r.status, 0, `exit ${r.status}; stderr: ${r.stderr}; stdout: ${r.stdout.slice(0, 500)}`);
  assert.ok(r.json, `not JSON: ${r.stdout.slice(0, 500)}`);
  return r.json.result ?? r.json;
}

const text = (result) => {
  assert.ok(Array.isArray(result.content) && result.content.length >= 1, `no content: ${JSON.stringify(result)}`);
  return result.content[0].text;
};

let tools;
check('tools/list --strict reports no portability problem', () => {
  const r = inspector(['--method', 'tools/list', '--strict']);
  assert.equal(r.status, 0, `exit ${r.status}; stderr: ${r.stderr}`);
  assert.doesNotMatch(r.stderr, /Warning|Error/, `strict check found problems:\n${r.stderr}`);
  assert.doesNotMatch(r.stderr, /[1-9]\d* (errors?|warnings?)/, r.stderr);
  tools = JSON.parse(r.stdout).tools;
  const names = tools.map((t) => t.name);
  for (const n of ['calculate', 'batch_calculate', 'advanced_calculate', 'demo_progress']) {
    assert.ok(names.includes(n), `${n} missing from ${names}`);
  }
});

check('tools/call calculate', () => {
  const r = ok(['--method', 'tools/call', '--tool-name', 'calculate', '--tool-arg', 'a=2', 'b=3', 'op=add']);
  assert.equal(text(r), '2 add 3 = 5');
  assert.equal(r.structuredContent.result, 5);
});

check('tools/call calculate with a non-finite result (nullable output field)', () => {
  const r = ok(['--method', 'tools/call', '--tool-name', 'calculate', '--tool-args-json',
    JSON.stringify({ a: 1e308, b: 10, op: 'multiply' })]);
  assert.equal(r.structuredContent.result, null, JSON.stringify(r));
  assert.equal(r.structuredContent.resultText, 'Infinity', JSON.stringify(r));
});

check('tools/call batch_calculate', () => {
  const args = { calculations: [{ a: 1, b: 2, op: 'add' }, { a: 6, b: 3, op: 'divide' }] };
  const r = ok(['--method', 'tools/call', '--tool-name', 'batch_calculate', '--tool-args-json', JSON.stringify(args)]);
  assert.match(text(r), /^Batch calculation completed\. Results:\n1 add 2 = 3\n6 divide 3 = 2$/);
  assert.equal(r.structuredContent.results.length, 2);
});

check('tools/call advanced_calculate', () => {
  const r = ok(['--method', 'tools/call', '--tool-name', 'advanced_calculate', '--tool-args-json',
    JSON.stringify({ operation: 'sqrt', value: 16 })]);
  assert.match(text(r), /16/);
  assert.equal(r.structuredContent.result, 4);
});

check('tools/call demo_progress', () => {
  const r = ok(['--method', 'tools/call', '--tool-name', 'demo_progress', '--tool-arg', 'steps=2']);
  assert.match(text(r), /2/);
});

let resources;
check('resources/list', () => {
  resources = ok(['--method', 'resources/list']).resources;
  const uris = resources.map((r) => r.uri);
  for (const u of ['calculator://constants', 'calculator://stats', 'formulas://library']) {
    assert.ok(uris.includes(u), `${u} missing from ${uris}`);
  }
});

for (const res of resources) {
  // session://info/<id> names the listing session itself; a later run is another session.
  if (res.uri.startsWith('session://')) continue;
  check(`resources/read ${res.uri}`, () => {
    const r = ok(['--method', 'resources/read', '--uri', res.uri]);
    assert.equal(r.contents[0].uri, res.uri);
    JSON.parse(r.contents[0].text);
  });
}

check('resources/templates/list', () => {
  const t = ok(['--method', 'resources/templates/list']).resourceTemplates;
  assert.ok(t.some((x) => x.uriTemplate === 'calculator://history/{calculationId}'), JSON.stringify(t));
});

check('resources/read of a history entry (modern era, through its state handle)', () => {
  const call = ok(['--protocol-era', 'modern', '--method', 'tools/call', '--tool-name', 'calculate',
    '--tool-arg', 'a=7', 'b=6', 'op=multiply']);
  const id = call.structuredContent.id;
  assert.ok(id && call.structuredContent.historyHandle, JSON.stringify(call));
  const r = ok(['--protocol-era', 'modern', '--method', 'resources/read', '--uri', `calculator://history/${id}`]);
  const entry = JSON.parse(r.contents[0].text);
  assert.equal(entry.id, id, JSON.stringify(entry));
  assert.equal(entry.result, 42, JSON.stringify(entry));
});

const promptArgs = {
  'explain-calculation': { operation: 'multiply', level: 'basic' },
  'generate-problems': { topic: 'fractions', difficulty: 'easy', count: '3' },
  solve_math_problem: { problem: 'What is 12 times 7?', showWork: 'true' },
  explain_formula: { formula: 'a^2 + b^2 = c^2', context: 'geometry' },
  calculator_assistant: { query: 'How do I compute a percentage?' },
};
let prompts;
check('prompts/list', () => {
  prompts = ok(['--method', 'prompts/list']).prompts;
  assert.ok(prompts.length >= 5, JSON.stringify(prompts));
});
for (const p of prompts) {
  check(`prompts/get ${p.name}`, () => {
    const args = promptArgs[p.name];
    assert.ok(args, `no example arguments for prompt ${p.name}`);
    const pairs = Object.entries(args).map(([k, v]) => `${k}=${v}`);
    const r = ok(['--method', 'prompts/get', '--prompt-name', p.name, '--prompt-args', ...pairs]);
    assert.ok(r.messages.length >= 1, JSON.stringify(r));
    assert.equal(r.messages[0].role, 'user');
  });
}

check('logging/setLevel', () => {
  ok(['--method', 'logging/setLevel', '--log-level', 'debug']);
});

console.log(`PASS ${checks} checks (MCP Inspector CLI, ${URL_STR})`);
