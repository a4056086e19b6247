// Summarise one conformance run from its checks.json files.
//
//   node hack/conformance-summary.mjs <results-dir> <revision> <scored-list-file> [--strict] [--extensions <file>]
//
// <results-dir> holds one folder per scenario, `server-<scenario>-<ISO timestamp>/checks.json`, each an array
// of checks {id, name, status: SUCCESS|FAILURE|WARNING|INFO|SKIPPED, errorMessage?, ...}. A scenario fails
// when any of its checks has status FAILURE (this is also how the CLI scores it; WARNING does not fail).
// <scored-list-file> lists, one per line, the server scenarios the revision scores (from
// `conformance list --requirements <rev>`). A scored scenario with no checks.json counts as failed.
// WARN rows passed with warnings only (the CLI does not fail them either).
// --extensions <file> lists server scenarios of extensions Abacus implements (the Tasks extension's `tasks-*`): the
// suite runs them unscored, and Abacus requires them like scored ones (a missing one fails too).
// Exit 0 when every scored and required-extension scenario passed (with --strict: every scenario run), else 1.
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';

const [dir, rev, scoredFile, ...rest] = process.argv.slice(2);
if (!dir || !rev || !scoredFile) {
  console.error('usage: conformance-summary.mjs <results-dir> <revision> <scored-list-file> [--strict]');
  process.exit(2);
}
const strict = rest.includes('--strict');
const extIndex = rest.indexOf('--extensions');
const required = new Set(
  extIndex >= 0
    ? readFileSync(rest[extIndex + 1], 'utf8')
        .split('\n')
        .map((s) => s.trim())
        .filter(Boolean)
    : [],
);
const scored = new Set(
  readFileSync(scoredFile, 'utf8')
    .split('\n')
    .map((s) => s.trim())
    .filter(Boolean),
);

const DIR_RE = /^server-(.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$/;
const results = new Map(); // scenario -> checks (latest run wins)
for (const entry of existsSync(dir) ? readdirSync(dir).sort() : []) {
  const m = DIR_RE.exec(entry);
  if (!m) continue;
  const file = join(dir, entry, 'checks.json');
  if (!existsSync(file)) continue;
  let checks;
  try {
    checks = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    checks = [{ id: 'checks-json', name: 'checks.json', status: 'FAILURE', errorMessage: `unreadable: ${e.message}` }];
  }
  results.set(m[1], Array.isArray(checks) ? checks : []);
}

const rows = [];
for (const name of [...scored, ...required]) {
  if (!results.has(name)) {
    rows.push({ name, scored: true, extension: required.has(name), pass: 0, fail: 1, warn: 0, failures: [{ name: 'missing', errorMessage: 'no checks.json' }] });
  }
}
for (const [name, checks] of results) {
  const count = (s) => checks.filter((c) => c.status === s).length;
  rows.push({
    name,
    scored: scored.has(name) || required.has(name),
    extension: required.has(name),
    pass: count('SUCCESS'),
    fail: count('FAILURE'),
    warn: count('WARNING'),
    failures: checks.filter((c) => c.status === 'FAILURE'),
    warnings: checks.filter((c) => c.status === 'WARNING'),
  });
}
rows.sort((a, b) => Number(b.scored) - Number(a.scored) || a.name.localeCompare(b.name));

let scoredPass = 0, scoredFail = 0, extraPass = 0, extraFail = 0;
console.log(`\n--- conformance ${rev}: per scenario (checks passed/failed/warnings) ---`);
for (const r of rows) {
  const ok = r.fail === 0;
  if (r.scored) ok ? scoredPass++ : scoredFail++;
  else ok ? extraPass++ : extraFail++;
  const tag = r.extension ? ' [extension, required by Abacus]' : r.scored ? '' : ' [not scored]';
  console.log(`${ok ? (r.warn ? 'WARN' : 'PASS') : 'FAIL'} ${r.name}${tag}: ${r.pass} passed, ${r.fail} failed, ${r.warn} warnings`);
  for (const f of r.failures) console.log(`       - ${f.name ?? f.id}: ${f.errorMessage ?? f.description ?? ''}`);
  for (const w of r.warnings ?? []) console.log(`       ~ ${w.name ?? w.id} (warning): ${w.errorMessage ?? w.description ?? ''}`);
}
console.log(
  `conformance ${rev}: scored and required-extension scenarios ${scoredPass} passed, ${scoredFail} failed; ` +
    `not scored ${extraPass} passed, ${extraFail} failed`,
);
// Machine-readable line for hack/conformance.sh: rev passed failed (failed includes not-scored under --strict).
const failed = scoredFail + (strict ? extraFail : 0);
const passed = scoredPass + (strict ? extraPass : 0);
console.log(`@@SUMMARY ${rev} ${passed} ${failed}`);
process.exit(failed > 0 ? 1 : 0);
