// The e2e harness in one import: `import * as h from './harness/index.ts'`.
export * from './proc.ts';
export * from './netns.ts';
export * from './conflist.ts';
export * from './cnitool.ts';
export * from './kube-api.ts';
export * from './traffic.ts';
export * from './e2e.ts';
export * from './kube-watch.ts';
export * from './nftables.ts';
export * from './capture-traffic.ts';
export * from './cgroup.ts';
