// The machine's own (root) network namespace, where real runtimes run the CNI chain: ptp puts its
// host-side veths and /32 routes there. These helpers pick a pod subnet nothing else on the
// machine routes, undo ptp's one global setting, and list what a chain may have left behind.
import { readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { IP } from './netns.ts';
import { registerCleanup, runOk } from './proc.ts';

const IP_FORWARD = '/proc/sys/net/ipv4/ip_forward';
const CGROUP_ROOT = '/sys/fs/cgroup';

/** Root-netns IPv4 routes (every table) whose destination lies in the given /24, as "dst dev". */
export async function hostRoutesIn(subnet: string): Promise<string[]> {
  const prefix = subnet.replace(/\.0\/24$/, '.');
  const r = await runOk([IP, '-4', '-j', 'route', 'show', 'table', 'all']);
  const routes = JSON.parse(r.stdout || '[]') as Array<{ dst?: string; dev?: string }>;
  return routes.filter((rt) => rt.dst?.startsWith(prefix)).map((rt) => `${rt.dst} dev ${rt.dev ?? '?'}`);
}

/**
 * A /24 under 10.233.0.0/16 that no root-netns route touches yet, starting from one derived from
 * this process id so two suites running at once start apart.
 */
export async function freeHostSubnet(): Promise<string> {
  const r = await runOk([IP, '-4', '-j', 'route', 'show', 'table', 'all']);
  const used = new Set((JSON.parse(r.stdout || '[]') as Array<{ dst?: string }>).map((rt) => rt.dst ?? ''));
  const taken = (n: number) => [...used].some((d) => d.startsWith(`10.233.${n}.`) || d === '10.233.0.0/16');
  for (let i = 0; i < 250; i += 1) {
    const n = ((process.pid + i) % 250) + 1;
    if (!taken(n)) return `10.233.${n}.0/24`;
  }
  throw new Error('freeHostSubnet: every 10.233.x.0/24 is routed on this machine');
}

/** ptp turns on IPv4 forwarding in the netns it runs in; put the machine's value back at cleanup. */
export function restoreIpForwardAtCleanup(): void {
  const before = readFileSync(IP_FORWARD, 'utf8').trim();
  const restore = () => {
    if (readFileSync(IP_FORWARD, 'utf8').trim() !== before) writeFileSync(IP_FORWARD, `${before}\n`);
  };
  registerCleanup(`restore ${IP_FORWARD}=${before}`, restore);
}

/** host-local's lease files (one per allocated IP) for a network under its dataDir. */
export function hostLocalLeases(ipamDataDir: string, netName: string): string[] {
  try {
    return readdirSync(join(ipamDataDir, netName)).filter((f) => f !== 'lock' && !f.startsWith('last_reserved_ip'));
  } catch {
    return [];
  }
}

/**
 * Remove a cgroup a runtime made for the test's containers (e.g. `/icni-podman-<pid>`) from every
 * hierarchy, its empty child cgroups first (podman leaves `<parent>/conmon`). Synchronous, for
 * exit handlers; a cgroup still holding processes stays.
 */
export function removeCgroupTree(cgroup: string): void {
  const rmTree = (dir: string): void => {
    let children: string[];
    try {
      children = readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
    } catch {
      return;
    }
    for (const child of children) rmTree(join(dir, child));
    try {
      rmdirSync(dir);
    } catch {
      /* busy */
    }
  };
  for (const hierarchy of readdirSync(CGROUP_ROOT)) rmTree(join(CGROUP_ROOT, hierarchy, cgroup));
}
