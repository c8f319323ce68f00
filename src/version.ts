/** Set by the build (build/build.mjs: package.json's version, or ISTIO_CNI_VERSION); absent when run from source. */
declare const __ISTIO_CNI_VERSION__: string | undefined;

/** This build's version: in the API requests' User-Agent and the installer's log. */
export const VERSION: string = typeof __ISTIO_CNI_VERSION__ === 'string' ? __ISTIO_CNI_VERSION__ : 'dev';

/** How the plugin, the installer and repair name themselves to the API server (its audit log shows it). */
export const USER_AGENT = `istio-cni/${VERSION}`;
