import { z } from 'zod';
import { settingsFromPod, type PodCaptureInput, type ProxyContainer } from './settings-from-pod.ts';
import { istioCurrentSettings } from './settings-istio-current.ts';
import type { RedirectSettings, RulesProfile } from './settings.ts';

/** The conflist's `rules_profile`: one profile for every pod, or `auto`: chosen per pod from its proxy's version. */
export const ProfileChoice = z.enum(['seed', 'istio-current', 'auto']);
export type ProfileChoice = z.infer<typeof ProfileChoice>;

/** `1.4.3`, `1.31-dev`, `v1.22.0-distroless`: the tag of `…/proxyv2:<tag>`, read up to the minor version. */
const VERSION_TAG = /^v?([0-9]+)\.([0-9]+)/;

/**
 * `auto`: the seed's rules for proxies up to Istio 1.4 (what the seed's listing is from), current
 * Istio's for anything newer, and for an image whose tag is no version (a digest, `latest`).
 */
export function profileForProxy(proxy: ProxyContainer): RulesProfile {
  const image = proxy.image ?? '';
  const tag = image.slice(image.lastIndexOf('/') + 1).split('@')[0]!.split(':')[1] ?? '';
  const version = VERSION_TAG.exec(tag);
  if (!version) return 'istio-current';
  const [major, minor] = [Number(version[1]), Number(version[2])];
  return major < 1 || (major === 1 && minor <= 4) ? 'seed' : 'istio-current';
}

/** A pod's capture settings in the profile the conflist asks for. */
export function captureSettingsFor(input: PodCaptureInput, choice: ProfileChoice): RedirectSettings {
  const profile = choice === 'auto' ? profileForProxy(input.proxy) : choice;
  return profile === 'seed' ? settingsFromPod(input) : istioCurrentSettings(input);
}
