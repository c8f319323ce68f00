import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, it } from 'vitest';
import pino from 'pino';
import { cleanupAll, makeTempDir } from '../harness/proc.ts';
import { createLogger } from '../../src/log.ts';

afterAll(cleanupAll);

const SUMMARY = { verb: 'ADD', containerId: 'c1', pod: 'default/web', decision: 'redirect', apiAttempts: 1, note: 'quote " and\nnewline', skipped: undefined, durationMs: 12 };

function lines(file: string): string[] {
  return readFileSync(file, 'utf8').split('\n').filter((l) => l !== '');
}

/** The same line as pino writes it with the options the plugin used before (time replaced). */
function pinoLine(level: 'info' | 'error', fields: object, msg: string): string {
  let out = '';
  const logger = pino({ level: 'info', base: { plugin: 'istio-cni' }, timestamp: () => ',"time":"T"' }, { write: (s: string) => (out += s) });
  logger[level](fields, msg);
  return out.trimEnd();
}

describe('the plugin log', () => {
  it('appends one JSON line per call, as pino wrote them, to a 0600 file', () => {
    const file = join(makeTempDir('icni-log-'), 'sub', 'istio-cni.log');
    const log = createLogger({ logFile: file, logLevel: 'info' });
    log.info(SUMMARY, 'ADD ok');
    log.error({ ...SUMMARY, code: 11, stack: 'Error: x\n    at y' }, 'ADD failed');
    const [ok, failed, ...more] = lines(file);
    assert.equal(more.length, 0);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const time = (line: string) => (JSON.parse(line) as { time: string }).time;
    assert.equal(new Date(time(ok!)).toISOString(), time(ok!));
    assert.equal(ok!.replace(`"time":"${time(ok!)}"`, '"time":"T"'), pinoLine('info', SUMMARY, 'ADD ok'));
    assert.equal(failed!.replace(`"time":"${time(failed!)}"`, '"time":"T"'), pinoLine('error', { ...SUMMARY, code: 11, stack: 'Error: x\n    at y' }, 'ADD failed'));
  });

  it('writes only lines at or above the configured level', () => {
    const file = join(makeTempDir('icni-log-'), 'istio-cni.log');
    const log = createLogger({ logFile: file, logLevel: 'error' });
    log.info(SUMMARY, 'ADD ok');
    log.error(SUMMARY, 'ADD failed');
    assert.deepEqual(lines(file).map((l) => (JSON.parse(l) as { msg: string }).msg), ['ADD failed']);
  });

  it('writes nothing, not even the file, when silent', () => {
    const file = join(makeTempDir('icni-log-'), 'istio-cni.log');
    const log = createLogger({ logFile: file, logLevel: 'silent' });
    log.error(SUMMARY, 'ADD failed');
    assert.equal(existsSync(file), false);
  });
});
