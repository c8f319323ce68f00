/**
 * CIDRs as iptables-save prints them: the network address (host bits cleared) in the kernel's text
 * form, then the prefix length. Parsing is strict: nothing reaches a rule that is not a well-formed
 * address of one family with an explicit prefix length.
 */
export type Family = 4 | 6;

export interface Cidr {
  family: Family;
  /** Canonical text, e.g. `10.0.0.0/8`, `2001:db8::/64`. */
  text: string;
  prefixLength: number;
  /** The address as written (before masking) is a loopback address: 127/8, ::1, or 127/8 mapped into IPv6. */
  loopback: boolean;
}

const DECIMAL = /^(0|[1-9][0-9]*)$/;
const HEX_GROUP = /^[0-9A-Fa-f]{1,4}$/;

function parseIpv4(text: string): number[] | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  const bytes = parts.map((p) => (DECIMAL.test(p) && p.length <= 3 ? Number(p) : NaN));
  return bytes.every((b) => b >= 0 && b <= 255) ? bytes : undefined;
}

/** Eight 16-bit groups, or undefined. Accepts `::` once and a dotted IPv4 tail; no zone. */
function parseIpv6(text: string): number[] | undefined {
  let head = text;
  const tail: number[] = [];
  const lastColon = text.lastIndexOf(':');
  if (text.includes('.')) {
    const v4 = parseIpv4(text.slice(lastColon + 1));
    if (!v4) return undefined;
    tail.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
    head = text.slice(0, lastColon + 1);
    if (head.endsWith(':') && !head.endsWith('::')) head = head.slice(0, -1);
  }
  const halves = head.split('::');
  if (halves.length > 2) return undefined;
  const groups = (s: string) => (s === '' ? [] : s.split(':'));
  const left = groups(halves[0]!);
  const right = halves.length === 2 ? groups(halves[1]!) : [];
  if (![...left, ...right].every((g) => HEX_GROUP.test(g))) return undefined;
  const explicit = [...left, ...right].map((g) => parseInt(g, 16));
  const total = explicit.length + tail.length;
  if (halves.length === 1) return total === 8 ? [...explicit, ...tail] : undefined;
  if (total > 7) return undefined;
  const zeros = new Array<number>(8 - total).fill(0);
  return [...left.map((g) => parseInt(g, 16)), ...zeros, ...right.map((g) => parseInt(g, 16)), ...tail];
}

/** glibc's inet_ntop for IPv6 (what iptables-save prints): the first longest run of 2+ zero groups
 * becomes `::`; `::a.b.c.d` and `::ffff:a.b.c.d` keep a dotted tail. */
function formatIpv6(words: number[]): string {
  let best = { start: -1, length: 0 };
  for (let i = 0; i < 8; ) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > best.length) best = { start: i, length: j - i };
    i = j;
  }
  if (best.length < 2) best = { start: -1, length: 0 };
  const dottedTail =
    best.start === 0 &&
    (best.length === 6 || (best.length === 5 && words[5] === 0xffff));
  const groups = words.map((w) => w.toString(16));
  if (dottedTail) groups.splice(6, 2, `${words[6]! >> 8}.${words[6]! & 0xff}.${words[7]! >> 8}.${words[7]! & 0xff}`);
  if (best.length === 0) return groups.join(':');
  return `${groups.slice(0, best.start).join(':')}::${groups.slice(best.start + best.length).join(':')}`;
}

function maskWords(words: number[], bitsPerWord: number, prefixLength: number): number[] {
  return words.map((w, i) => {
    const keep = Math.max(0, Math.min(bitsPerWord, prefixLength - i * bitsPerWord));
    const mask = keep === 0 ? 0 : ((0xffff_ffff << (bitsPerWord - keep)) >>> 0) & ((1 << bitsPerWord) - 1);
    return w & mask;
  });
}

/** `address/length` of either family, or undefined when it is anything else (a bare address, a zone, spaces). */
export function parseCidr(text: string): Cidr | undefined {
  const slash = text.indexOf('/');
  if (slash < 0 || slash !== text.lastIndexOf('/')) return undefined;
  const address = text.slice(0, slash);
  const length = text.slice(slash + 1);
  if (!DECIMAL.test(length) || length.length > 3) return undefined;
  const prefixLength = Number(length);
  const v4 = address.includes(':') ? undefined : parseIpv4(address);
  if (v4) {
    if (prefixLength > 32) return undefined;
    return { family: 4, prefixLength, text: `${maskWords(v4, 8, prefixLength).join('.')}/${prefixLength}`, loopback: v4[0] === 127 };
  }
  const v6 = address.includes(':') ? parseIpv6(address) : undefined;
  if (!v6 || prefixLength > 128) return undefined;
  const zeroHead = (n: number) => v6.slice(0, n).every((w) => w === 0);
  const loopback = (zeroHead(7) && v6[7] === 1) || (zeroHead(5) && v6[5] === 0xffff && v6[6]! >> 8 === 127);
  return { family: 6, prefixLength, text: `${formatIpv6(maskWords(v6, 16, prefixLength))}/${prefixLength}`, loopback };
}

/** The family of a prevResult address such as `10.200.0.5/24` or `fd00::5/64`. */
export function familyOfAddress(address: string): Family | undefined {
  return parseCidr(address.includes('/') ? address : `${address}/${address.includes(':') ? 128 : 32}`)?.family;
}
