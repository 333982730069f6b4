// Lint one email's HTML (read from stdin) against the caniemail data with @jsx-email/doiuse-email.
// Prints JSON: {"clients": [...], "unsupported": [[feature, client], ...], "partial": [...], "other": [...]}
// with each (feature, client) pair once, sorted, so the result does not grow with the number of cards.
// Used by tests/test_caniemail.py, which compares it with tests/baselines/caniemail.json.
import { doIUseEmail } from '@jsx-email/doiuse-email';

const CLIENTS = ['gmail.*', 'apple-mail.*', 'outlook.*', 'yahoo.*'];
const UNSUPPORTED = /^`(.+)` is not supported by `([^`]+)`$/;
const PARTIAL = /^`(.+)` is only partially supported by `([^`]+)`$/;

function pairs(messages, pattern, other) {
  const seen = new Map();
  for (const message of messages ?? []) {
    const match = pattern.exec(message);
    if (!match) { other.add(message); continue; }
    seen.set(`${match[1]}\u0000${match[2]}`, [match[1], match[2]]);
  }
  return [...seen.values()].sort((a, b) => (a[0] + '\u0000' + a[1]).localeCompare(b[0] + '\u0000' + b[1]));
}

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const html = Buffer.concat(chunks).toString('utf8');
if (!html.trim()) {
  console.error('lint-email.mjs: no HTML on stdin');
  process.exit(2);
}
const result = doIUseEmail(html, { emailClients: CLIENTS });
const other = new Set();
const out = {
  clients: CLIENTS,
  unsupported: pairs(result.errors, UNSUPPORTED, other),
  partial: pairs(result.warnings, PARTIAL, other),
};
out.other = [...other].sort();
process.stdout.write(JSON.stringify(out, null, 1) + '\n');
