import { dirname, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { CniError, ErrorCode } from '../cni/errors.ts';
import { readRegularFile } from '../files.ts';

const Cluster = z.object({
  server: z.url({ protocol: /^https?$/ }),
  'certificate-authority': z.string().optional(),
  'certificate-authority-data': z.string().optional(),
  'insecure-skip-tls-verify': z.boolean().optional(),
  'tls-server-name': z.string().optional(),
});
const User = z.object({
  token: z.string().optional(),
  tokenFile: z.string().optional(),
  'client-certificate': z.string().optional(),
  'client-certificate-data': z.string().optional(),
  'client-key': z.string().optional(),
  'client-key-data': z.string().optional(),
  exec: z.unknown().optional(),
  'auth-provider': z.unknown().optional(),
});
const Context = z.object({ cluster: z.string(), user: z.string().optional() });

const KubeconfigFile = z.object({
  clusters: z.array(z.object({ name: z.string(), cluster: Cluster })),
  users: z.array(z.object({ name: z.string(), user: User })).default([]),
  contexts: z.array(z.object({ name: z.string(), context: Context })),
  'current-context': z.string().optional(),
});

/** Everything needed to talk to the API server; credentials already read, except a token file,
 * which is re-read on every request because service-account tokens rotate. */
export interface KubeConnection {
  server: URL;
  ca?: Buffer;
  insecure: boolean;
  serverName?: string;
  token?: string;
  tokenFile?: string;
  cert?: Buffer;
  key?: Buffer;
}

const invalid = (path: string, why: string) =>
  new CniError(ErrorCode.KubeconfigInvalid, 'invalid kubeconfig', `${path}: ${why}`);

/** A kubeconfig, and each file it names, is at most this large. */
const MAX_FILE_BYTES = 1024 * 1024;

/** Reads the kubeconfig or a file it names: a FIFO or a device there (net.d is shared) is refused, not waited on. */
function readKubeFile(path: string): Buffer {
  return readRegularFile(path, { maxBytes: MAX_FILE_BYTES, followLinks: true }).bytes;
}

export function loadKubeconfig(path: string): KubeConnection {
  let text: string;
  try {
    text = readKubeFile(path).toString('utf8');
  } catch (err) {
    throw invalid(path, (err as Error).message);
  }
  return parseKubeconfig(text, path);
}

/** The kubeconfig text read from `path`; files it names are read relative to `path`. */
export function parseKubeconfig(text: string, path: string): KubeConnection {
  let document: unknown;
  try {
    document = parseYaml(text);
  } catch (err) {
    // The parser quotes the lines around the error, and a kubeconfig's lines hold its credentials:
    // keep the reason and the position, never the excerpt.
    throw invalid(path, `not YAML: ${(err as Error).message.split(':\n')[0]}`);
  }
  const parsed = KubeconfigFile.safeParse(document);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw invalid(path, `${issue?.path.join('.')}: ${issue?.message}`);
  }
  const config = parsed.data;
  const contextName = config['current-context'] ?? (config.contexts.length === 1 ? config.contexts[0]?.name : undefined);
  const context = config.contexts.find((c) => c.name === contextName)?.context;
  if (!context) throw invalid(path, `current-context ${JSON.stringify(contextName ?? '')} not found`);
  const cluster = config.clusters.find((c) => c.name === context.cluster)?.cluster;
  if (!cluster) throw invalid(path, `cluster ${JSON.stringify(context.cluster)} not found`);
  const user = context.user === undefined ? {} : config.users.find((u) => u.name === context.user)?.user;
  if (!user) throw invalid(path, `user ${JSON.stringify(context.user)} not found`);
  if (user.exec !== undefined || user['auth-provider'] !== undefined) {
    throw invalid(path, 'exec and auth-provider credential plugins are not supported; use a token, tokenFile or client certificate');
  }

  // Relative file references are relative to the kubeconfig itself, as kubectl resolves them.
  const base = dirname(path);
  const fileOrData = (file: string | undefined, data: string | undefined, what: string): Buffer | undefined => {
    if (data !== undefined) return Buffer.from(data, 'base64');
    if (file === undefined) return undefined;
    try {
      return readKubeFile(resolve(base, file));
    } catch (err) {
      throw invalid(path, `${what}: ${(err as Error).message}`);
    }
  };
  const cert = fileOrData(user['client-certificate'], user['client-certificate-data'], 'client-certificate');
  const key = fileOrData(user['client-key'], user['client-key-data'], 'client-key');
  if ((cert === undefined) !== (key === undefined)) throw invalid(path, 'client-certificate and client-key go together');
  return {
    server: new URL(cluster.server),
    ca: fileOrData(cluster['certificate-authority'], cluster['certificate-authority-data'], 'certificate-authority'),
    insecure: cluster['insecure-skip-tls-verify'] ?? false,
    serverName: cluster['tls-server-name'],
    token: user.token,
    tokenFile: user.tokenFile === undefined ? undefined : resolve(base, user.tokenFile),
    cert,
    key,
  };
}

/** The bearer token, read again on every request when it comes from a file: service-account tokens rotate. */
export function bearerToken(conn: KubeConnection): string | undefined {
  if (conn.tokenFile === undefined) return conn.token;
  try {
    return readKubeFile(conn.tokenFile).toString('utf8').trim();
  } catch (err) {
    throw new CniError(ErrorCode.KubeconfigInvalid, 'invalid kubeconfig', `tokenFile: ${(err as Error).message}`);
  }
}

/** Where a request to `path` goes: the server's scheme, host (without IPv6 brackets), port and prefixed path. */
export function endpoint(conn: KubeConnection, path: string): { secure: boolean; host: string; port: number; path: string } {
  const secure = conn.server.protocol === 'https:';
  return {
    secure,
    host: conn.server.hostname.replace(/^\[|\]$/g, ''),
    port: Number(conn.server.port) || (secure ? 443 : 80),
    path: `${conn.server.pathname.replace(/\/$/, '')}${path}`,
  };
}
