import type { CniArgs } from '../cni/args.ts';
import { ANNOTATIONS, DNS_CAPTURE_ENV } from '../redirect/settings-from-pod.ts';
import { ISTIO_CURRENT_ENV } from '../redirect/settings-istio-current.ts';
import type { Container, Pod } from './pod.ts';

export const PROXY_CONTAINER = 'istio-proxy';
const INIT_CONTAINER = 'istio-init';
const STATUS_ANNOTATION = 'sidecar.istio.io/status';
const INJECT_KEY = 'sidecar.istio.io/inject';
const FALSE_WORDS = new Set(['false', '0', 'n', 'no', 'off']);
const DISABLE_ENVOY_ENV = 'DISABLE_ENVOY';
/** The plugin's own DaemonSet: its pods must start before the kubeconfig they write exists. */
const AGENT_POD_PREFIX = 'istio-cni-node-';

export type Decision =
  | { redirect: false; reason: string }
  | { redirect: true; reason: string; proxy: Container; annotations: Record<string, string> };

export type PodRef = { namespace: string; name: string };

export interface ArgsRules {
  excludeNamespaces: ReadonlySet<string>;
  /** Where the plugin's own istio-cni-node pods run. */
  podNamespace: string;
}

/**
 * The decisions that need no API call: a sandbox that is not a Kubernetes pod, an excluded namespace,
 * or one of the plugin's own pods (they install the kubeconfig: waiting for the API would deadlock).
 */
export function decideFromArgs(args: CniArgs, rules: ArgsRules): Decision | PodRef {
  if (args.podName === undefined || args.podNamespace === undefined) {
    return { redirect: false, reason: 'no K8S_POD_NAME/K8S_POD_NAMESPACE in CNI_ARGS: not a Kubernetes pod' };
  }
  if (rules.excludeNamespaces.has(args.podNamespace)) {
    return { redirect: false, reason: `namespace ${args.podNamespace} is excluded` };
  }
  if (args.podNamespace === rules.podNamespace && args.podName.startsWith(AGENT_POD_PREFIX)) {
    return { redirect: false, reason: `${args.podNamespace}/${args.podName} is an ${AGENT_POD_PREFIX}* pod of the plugin itself` };
  }
  return { namespace: args.podNamespace, name: args.podName };
}

/**
 * The pods the runtime's copy of the annotations settles: without the status annotation no rule can
 * end in a redirect. Anything else depends on the containers, which only the API has.
 */
export function decideFromAnnotations(annotations: Readonly<Record<string, string>>): Decision | undefined {
  if (annotations[STATUS_ANNOTATION] !== undefined) return undefined;
  return { redirect: false, reason: `runtime-supplied annotations have no ${STATUS_ANNOTATION}: not injected` };
}

/** Istio's rules, in Istio's order; the reason names the rule that decided. */
export function decideFromPod(pod: Pod): Decision {
  const initContainers = pod.spec.initContainers ?? [];
  if (initContainers.some((c) => c.name === INIT_CONTAINER)) {
    return { redirect: false, reason: 'pod has the istio-init init container, which programs its own rules' };
  }
  const proxy =
    pod.spec.containers.find((c) => c.name === PROXY_CONTAINER) ??
    initContainers.find((c) => c.name === PROXY_CONTAINER && c.restartPolicy === 'Always');
  if (!proxy) return { redirect: false, reason: 'pod has no istio-proxy container' };
  if (proxy.env?.some((e) => e.name === DISABLE_ENVOY_ENV && e.value?.toLowerCase() === 'true')) {
    return { redirect: false, reason: 'istio-proxy has DISABLE_ENVOY=true' };
  }
  const inject = pod.metadata.labels?.[INJECT_KEY] ?? pod.metadata.annotations?.[INJECT_KEY];
  if (inject !== undefined && FALSE_WORDS.has(inject.toLowerCase())) {
    return { redirect: false, reason: `${INJECT_KEY}=${inject}` };
  }
  if (pod.metadata.annotations?.[STATUS_ANNOTATION] === undefined) {
    return { redirect: false, reason: `pod has no ${STATUS_ANNOTATION} annotation: not injected` };
  }
  return { redirect: true, reason: 'pod has an injected istio-proxy sidecar', proxy, annotations: pod.metadata.annotations ?? {} };
}

/** Every annotation, label and istio-proxy variable that decideFromPod and either profile's settings read. */
const READ_ANNOTATIONS = new Set<string>([STATUS_ANNOTATION, INJECT_KEY, ...Object.values(ANNOTATIONS)]);
const READ_LABELS = new Set([INJECT_KEY]);
const READ_ENV = new Set([DISABLE_ENVOY_ENV, DNS_CAPTURE_ENV, ...ISTIO_CURRENT_ENV]);

/**
 * The pod cut down to what the decision and the capture rules read, for the node-local cache to hand
 * over: the istio-init and istio-proxy containers (without the variables nobody reads), and the
 * annotations and labels above. decideFromPod and the settings of every profile give the same answer
 * for it as for the whole pod.
 */
export function podForDecision(pod: Pod): Pod {
  const pick = (record: Record<string, string> | undefined, keys: ReadonlySet<string>) =>
    record && Object.fromEntries(Object.entries(record).filter(([key]) => keys.has(key)));
  const relevant = (c: Container) => c.name === PROXY_CONTAINER || c.name === INIT_CONTAINER;
  const container = (c: Container): Container => ({ ...c, env: c.env?.filter((e) => READ_ENV.has(e.name)) });
  return {
    metadata: {
      name: pod.metadata.name,
      namespace: pod.metadata.namespace,
      uid: pod.metadata.uid,
      annotations: pick(pod.metadata.annotations, READ_ANNOTATIONS),
      labels: pick(pod.metadata.labels, READ_LABELS),
    },
    spec: {
      containers: pod.spec.containers.filter(relevant).map(container),
      initContainers: pod.spec.initContainers?.filter(relevant).map(container),
    },
  };
}
