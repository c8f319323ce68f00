#!/usr/bin/env node
// Start-up time of a command, as a kubelet would run a CNI plugin for VERSION:
//   node build/measure.mjs [--runs N] [--keep-env] -- CMD [ARGS...]
// Whole-process wall time of N runs (after 5 warm-up runs); prints median, p10 and p90 in ms.
// NODE_EXTRA_CA_CERTS and NODE_OPTIONS are removed from the environment unless --keep-env.
import { spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';

const { values: opt, positionals: cmd } = parseArgs({
  allowPositionals: true,
  options: { runs: { type: 'string', default: '60' }, 'keep-env': { type: 'boolean', default: false } },
});
if (cmd.length === 0) throw new Error('usage: measure.mjs [--runs N] [--keep-env] -- CMD [ARGS...]');
const env = { ...process.env, CNI_COMMAND: 'VERSION' };
if (!opt['keep-env']) { delete env.NODE_EXTRA_CA_CERTS; delete env.NODE_OPTIONS; }

const times = [];
for (let i = 0; i < Number(opt.runs) + 5; i++) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd[0], cmd.slice(1), { input: '{"cniVersion":"1.0.0"}', env, stdio: ['pipe', 'pipe', 'pipe'] });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 0 || r.stderr.length > 0) throw new Error(`run failed: ${r.error ?? r.status} ${r.stderr}`);
  if (i >= 5) times.push(ms);
}
times.sort((a, b) => a - b);
const q = (p) => times[Math.min(times.length - 1, Math.floor(p * times.length))].toFixed(1);
console.log(`${cmd.join(' ')}: median ${q(0.5)} ms (p10 ${q(0.1)}, p90 ${q(0.9)}, n=${times.length})`);
