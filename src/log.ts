import { closeSync, constants, fchmodSync, fstatSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import type { PluginConfig } from './cni/config.ts';

/** pino's level numbers: the plugin's lines read like the installer's and repair's (pino). */
const LEVELS = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60 } as const;

/** The plugin writes one line per invocation: `ok` or `failed`. */
export interface Logger {
  info(fields: object, msg: string): void;
  error(fields: object, msg: string): void;
}

const SILENT: Logger = { info() {}, error() {} };

/**
 * JSON lines appended to the configured log file, in pino's shape (level, time, plugin, the fields,
 * msg), each written with one synchronous write(2) so a line is on disk before the process exits.
 * Not pino itself: pino in the start-up snapshot and a pino logger per run cost every invocation
 * ~6 ms of CPU for this one line. Logging never breaks a verb: when the file cannot be opened the
 * plugin says so once on stderr (the runtime's log) and carries on without a log; a failed write is
 * dropped.
 */
export function createLogger(config: Pick<PluginConfig, 'logFile' | 'logLevel'>): Logger {
  if (config.logLevel === 'silent') return SILENT;
  let fd: number;
  try {
    mkdirSync(dirname(config.logFile), { recursive: true, mode: 0o755 });
    fd = openLogFile(config.logFile);
  } catch (err) {
    writeSync(2, `istio-cni: cannot open log file ${config.logFile}: ${(err as Error).message}; logging disabled\n`);
    return SILENT;
  }
  process.once('exit', () => closeSync(fd));
  const threshold = LEVELS[config.logLevel];
  const writer = (level: number) => (fields: object, msg: string) => {
    if (level < threshold) return;
    const rest = JSON.stringify({ ...fields, msg }).slice(1);
    try {
      writeSync(fd, `{"level":${level},"time":"${new Date().toISOString()}","plugin":"istio-cni",${rest}\n`);
    } catch {
      // A full or broken log disk must not fail the pod.
    }
  };
  return { info: writer(LEVELS.info), error: writer(LEVELS.error) };
}

/**
 * Opens the log for appending as root: never through a link (it could name any file), never waiting
 * on a FIFO, only a regular file of our own, and readable by nobody else (an existing file is made
 * 0600: pod names and errors are logged).
 */
function openLogFile(path: string): number {
  const fd = openSync(path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY, 0o600);
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) throw new Error('not a regular file');
    if (stat.uid !== process.getuid?.()) throw new Error(`owned by uid ${stat.uid}, not by this process`);
    if ((stat.mode & 0o077) !== 0) fchmodSync(fd, stat.mode & 0o700);
    return fd;
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}
