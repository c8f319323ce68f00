/**
 * fast-check generators of valid capture settings (what the annotation parser hands the rule builder),
 * for property tests of the renderers and for differentials against other tools.
 */
import fc from 'fast-check';
import { parseCidr, type Cidr } from '../../src/redirect/cidr.ts';
import { DEFAULT_SETTINGS, type RedirectSettings } from '../../src/redirect/settings.ts';

const port = fc.integer({ min: 1, max: 65535 });
const ports = fc.array(port, { maxLength: 4 });
const id = fc.oneof(fc.constant(1337), fc.integer({ min: 1, max: 65535 }), fc.constant(0xffffffff));

const v4 = fc
  .tuple(fc.integer({ min: 1, max: 223 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 1, max: 32 }))
  .map(([a, b, c, d, len]) => parseCidr(`${a}.${b}.${c}.${d}/${len}`)!);
const v6 = fc
  .tuple(fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 8, maxLength: 8 }), fc.integer({ min: 1, max: 128 }))
  .map(([groups, len]) => parseCidr(`${groups.map((g) => g.toString(16)).join(':')}/${len}`)!);
export const cidr: fc.Arbitrary<Cidr> = fc.oneof(v4, v6, fc.constantFrom(...['10.0.0.0/8', '169.254.169.254/32', 'fd00::/8', '::ffff:10.0.0.0/104', '2001:db8::1/128'].map((c) => parseCidr(c)!)));
const cidrs = fc.array(cidr, { maxLength: 4 });
const interfaceName = fc.stringMatching(/^[A-Za-z0-9_.-]{1,15}$/);

/** Settings the builder accepts, every field generated (fields added later keep their defaults until generated here). */
export const redirectSettings: fc.Arbitrary<RedirectSettings> = fc.record({
  interceptionMode: fc.constantFrom('REDIRECT', 'REDIRECT', 'TPROXY', 'NONE'),
  proxyUid: id,
  proxyGid: id,
  inboundPort: port,
  outboundPort: port,
  includeInboundPorts: fc.oneof(fc.constant('*' as const), ports),
  excludeInboundPorts: ports,
  includeOutboundIpRanges: fc.oneof(fc.constant('*' as const), cidrs),
  excludeOutboundIpRanges: cidrs,
  includeOutboundPorts: ports,
  excludeOutboundPorts: ports,
  rerouteInterfaces: fc.array(interfaceName, { maxLength: 2 }),
  dnsCapture: fc.boolean(),
  dnsPort: port,
  tproxyMark: fc.constant(DEFAULT_SETTINGS.tproxyMark),
  tproxyRouteTable: fc.constant(DEFAULT_SETTINGS.tproxyRouteTable),
  ipv6: fc.boolean(),
}).map((generated) => ({ ...DEFAULT_SETTINGS, ...generated }));
