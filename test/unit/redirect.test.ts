import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { differences, parseSave, renderCreate, renderRemoval, renderReplace, ruleLine, UnreadableSave } from '../../src/redirect/restore.ts';
import { MAX_RULES } from '../../src/redirect/rule-parts.ts';
import { buildRuleSet } from '../../src/redirect/ruleset.ts';
import { DEFAULT_SETTINGS } from '../../src/redirect/settings.ts';

const seedListing = readFileSync(new URL('../fixtures/seed-nat-S.txt', import.meta.url), 'utf8').trim().split('\n');

/** The seed's `iptables -t nat -S` listing, turned into the `iptables-save` form the kernel would print. */
function seedAsSave(): string {
  const chains = seedListing.filter((l) => l.startsWith('-N ')).map((l) => `:${l.slice(3)} - [0:0]`);
  const policies = seedListing.filter((l) => l.startsWith('-P ')).map((l) => `:${l.slice(3).replace(' ', ' ')} [0:0]`);
  const rules = seedListing.filter((l) => l.startsWith('-A '));
  return ['*nat', ...policies, ...chains, ...rules, 'COMMIT', ''].join('\n');
}

describe('rule set for default settings', () => {
  const ruleSet = buildRuleSet(DEFAULT_SETTINGS);

  it('renders the seed listing line for line', () => {
    const nat = ruleSet.find((t) => t.table === 'nat');
    assert.ok(nat);
    const rendered = [...nat.chains.map((c) => `-N ${c}`), ...nat.rules.map(ruleLine)];
    assert.deepEqual(rendered, seedListing.filter((l) => !l.startsWith('-P ')));
  });

  it('creates chains with -N so a stale state fails the whole restore', () => {
    const text = renderCreate(ruleSet);
    assert.match(text, /^\*nat\n-N ISTIO_INBOUND\n-N ISTIO_IN_REDIRECT\n-N ISTIO_OUTPUT\n-N ISTIO_REDIRECT\n-A PREROUTING /);
    assert.ok(text.endsWith('COMMIT\n'));
    assert.equal(text.split('\n').filter((l) => l.startsWith('-A ')).length, 13);
  });

  it('finds no differences against the seed state', () => {
    assert.deepEqual(differences(ruleSet, parseSave(seedAsSave())), []);
  });

  it('names a missing and an unexpected rule', () => {
    const broken = seedAsSave()
      .replace('-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN\n', '')
      .replace('COMMIT', '-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15002\nCOMMIT');
    assert.deepEqual(differences(ruleSet, parseSave(broken)), [
      'nat: missing -A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN',
      'nat: unexpected -A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15002',
    ]);
  });

  it('notices a duplicated jump and rules out of order', () => {
    const doubled = seedAsSave().replace('COMMIT', '-A PREROUTING -p tcp -j ISTIO_INBOUND\nCOMMIT');
    assert.deepEqual(differences(ruleSet, parseSave(doubled)), ['nat: unexpected -A PREROUTING -p tcp -j ISTIO_INBOUND']);
    const swapped = seedAsSave().replace(
      '-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN\n-A ISTIO_OUTPUT -j ISTIO_REDIRECT',
      '-A ISTIO_OUTPUT -j ISTIO_REDIRECT\n-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN',
    );
    assert.deepEqual(differences(ruleSet, parseSave(swapped)), ['nat: rules are out of order']);
  });

  it('expects nothing of ours for a pod that is passed through', () => {
    assert.deepEqual(differences([], parseSave('*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -p udp -j DNAT --to-destination 10.0.0.1\nCOMMIT\n')), []);
    assert.equal(differences([], parseSave(seedAsSave())).length, 17);
  });
});

describe('removal and replacement', () => {
  it('removes every jump copy and every chain, flushing before deleting, and leaves other rules', () => {
    const state = parseSave(
      seedAsSave().replace('COMMIT', '-A PREROUTING -p tcp -j ISTIO_INBOUND\n-A POSTROUTING -o eth0 -j MASQUERADE\nCOMMIT'),
    );
    const lines = renderRemoval(state).split('\n');
    assert.deepEqual(lines, [
      '*nat',
      // By position, counted down as earlier jumps of the same chain go: never the saved text.
      '-D PREROUTING 1',
      '-D OUTPUT 1',
      '-D PREROUTING 1',
      '-F ISTIO_INBOUND',
      '-F ISTIO_IN_REDIRECT',
      '-F ISTIO_OUTPUT',
      '-F ISTIO_REDIRECT',
      '-X ISTIO_INBOUND',
      '-X ISTIO_IN_REDIRECT',
      '-X ISTIO_OUTPUT',
      '-X ISTIO_REDIRECT',
      'COMMIT',
      '',
    ]);
  });

  it('renders nothing to remove from a netns without our chains', () => {
    assert.equal(renderRemoval(parseSave('*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n')), '');
  });

  it('replaces in one transaction: removal first, then creation', () => {
    const ruleSet = buildRuleSet(DEFAULT_SETTINGS);
    const text = renderReplace(ruleSet, parseSave(seedAsSave()));
    assert.equal(text.match(/^\*nat$/gm)?.length, 1);
    assert.ok(text.indexOf('-X ISTIO_REDIRECT') < text.indexOf('-N ISTIO_INBOUND'));
    assert.equal(text.split('\n').filter((l) => l.startsWith('-A ')).length, 13);
  });

  it('refuses to render a word that is not a plain token', () => {
    assert.throws(() => ruleLine({ chain: 'ISTIO_INBOUND', spec: ['-p', 'tcp', '--dport', '80 -j ACCEPT'] }), /refusing to render/);
    assert.throws(() => ruleLine({ chain: 'ISTIO_INBOUND', spec: ['-m', 'comment', '--comment', '"x"'] }), /refusing to render/);
  });
});

describe('iptables-save output is untrusted', () => {
  const saveOf = (rules: string[]) =>
    ['*nat', ':PREROUTING ACCEPT [0:0]', ':OUTPUT ACCEPT [0:0]', ':POD - [0:0]', ':ISTIO_INBOUND - [0:0]', ...rules, 'COMMIT', ''].join('\n');
  const save = (...rules: string[]) => saveOf(rules);

  it('keeps a quoted comment with newlines inside its rule: no line of it is read as a rule or a jump', () => {
    const state = parseSave(save('-A PREROUTING -m comment --comment "x\n-A PREROUTING -j ISTIO_INBOUND\n*filter\n\\"q\\\\" -j ACCEPT', '-A PREROUTING -p tcp -j ISTIO_INBOUND'));
    const rules = state.get('nat')!.rules;
    assert.equal(rules.length, 2);
    assert.equal(rules[0]!.target, 'ACCEPT');
    assert.deepEqual(state.get('nat')!.chains, ['PREROUTING', 'OUTPUT', 'POD', 'ISTIO_INBOUND']);
    assert.deepEqual(renderRemoval(state).split('\n'), ['*nat', '-D PREROUTING 2', '-F ISTIO_INBOUND', '-X ISTIO_INBOUND', 'COMMIT', '']);
  });

  it('takes a quote inside a bare word (an interface name) for a character, as iptables-save prints it', () => {
    const state = parseSave(save('-A PREROUTING -i q"x -j ISTIO_INBOUND', '-A OUTPUT -m comment --comment "c" -j ACCEPT'));
    assert.deepEqual(state.get('nat')!.rules.map((r) => r.target), ['ISTIO_INBOUND', 'ACCEPT']);
  });

  it('does not take a -j inside a comment for a jump', () => {
    const state = parseSave(save('-A OUTPUT -m comment --comment "-j ISTIO_INBOUND" -j ACCEPT'));
    assert.deepEqual(renderRemoval(state).split('\n'), ['*nat', '-F ISTIO_INBOUND', '-X ISTIO_INBOUND', 'COMMIT', '']);
  });

  it('refuses what iptables-save does not print: an unterminated quote, a rule of an undeclared chain, an unknown table', () => {
    assert.throws(() => parseSave(save('-A OUTPUT -m comment --comment "open -j ACCEPT')), UnreadableSave);
    // An interface name may hold a newline, printed bare: the line after it names no declared chain.
    assert.throws(() => parseSave(save('-A PREROUTING -i a', '-A -j ACCEPT')), UnreadableSave);
    assert.throws(() => parseSave('*nat;-F\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n'), UnreadableSave);
    assert.throws(() => parseSave(save('--modprobe=/tmp/x')), UnreadableSave);
  });

  it('deletes the jumps of a pod\'s own chain by position, and leaves our chain in place (flushed) when it cannot name the jumping chain', () => {
    const state = parseSave(save('-A POD -p udp -j ACCEPT', '-A POD -j ISTIO_INBOUND'));
    assert.deepEqual(renderRemoval(state).split('\n'), ['*nat', '-D POD 2', '-F ISTIO_INBOUND', '-X ISTIO_INBOUND', 'COMMIT', '']);
    const odd = parseSave(save().replace(':POD - [0:0]', ':POD;x - [0:0]').replace('COMMIT', '-A POD;x -j ISTIO_INBOUND\nCOMMIT'));
    assert.deepEqual(renderRemoval(odd).split('\n'), ['*nat', '-F ISTIO_INBOUND', 'COMMIT', '']);
  });

  it('with more jumps than any rule set of ours holds, only flushes our chains: DEL stays fast', () => {
    const jumps = Array.from({ length: MAX_RULES + 1 }, () => '-A PREROUTING -j ISTIO_INBOUND');
    assert.deepEqual(renderRemoval(parseSave(saveOf(jumps))).split('\n'), ['*nat', '-F ISTIO_INBOUND', 'COMMIT', '']);
  });

  it('compares a large netns with the expected rules in linear time (CHECK)', { timeout: 20_000 }, () => {
    const n = 200_000;
    const rules = Array.from({ length: n }, (_, i) => `-A ISTIO_INBOUND -p tcp -m tcp --dport ${(i % 65535) + 1} -j RETURN`);
    const state = parseSave(saveOf(rules));
    const expected = [{ table: 'nat' as const, chains: ['ISTIO_INBOUND'], rules: rules.map((line) => ({ chain: 'ISTIO_INBOUND', spec: line.split(' ').slice(2) })) }];
    assert.deepEqual(differences(expected, state), []);
    assert.deepEqual(differences([{ ...expected[0]!, rules: [...expected[0]!.rules].reverse() }], state), ['nat: rules are out of order']);
  });
});
