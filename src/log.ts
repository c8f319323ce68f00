import { closeSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import pino, { type Logger } from 'pino';
import type { PluginConfig } from './cni/config.ts';

export type { Logger };

/**
 * JSON lines appended to the configured log file, written synchronously so a line is on disk before
 * the process exits. Logging never breaks a verb: when the file cannot be opened the plugin says so
 * once on stderr (the runtime's log) and carries on without a log.
 */
export function createLogger(config: Pick<PluginConfig, 'logFile' | 'logLevel'>): Logger {
  if (config.logLevel === 'silent') return pino({ level: 'silent' });
  let fd: number;
  try {
    mkdirSync(dirname(config.logFile), { recursive: true, mode: 0o755 });
    fd = openSync(config.logFile, 'a', 0o600);
  } catch (err) {
    process.stderr.write(`istio-cni: cannot open log file ${config.logFile}: ${(err as Error).message}; logging disabled\n`);
    return pino({ level: 'silent' });
  }
  const destination = pino.destination({ fd, sync: true });
  process.once('exit', () => closeSync(fd));
  return pino({ level: config.logLevel, base: { plugin: 'istio-cni' }, timestamp: pino.stdTimeFunctions.isoTime }, destination);
}
