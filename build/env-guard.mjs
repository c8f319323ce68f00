// The environment guard of dist/istio-cni (see build/README.md, "BUN_OPTIONS and other BUN_*
// variables"). A Bun executable obeys BUN_OPTIONS (`--preload FILE` runs FILE before our code),
// BUN_BE_BUN (the executable becomes the bun CLI), BUN_JSC_*/JSC_* (engine options) and other BUN_*
// knobs from its environment, and no build flag turns that off. So the build points the ELF entry
// at a few instructions that run before anything of the runtime (only the dynamic loader runs
// earlier): they remove every variable whose name starts with BUN_ or JSC_ from the process's
// environment block in place, then jump to the runtime's own entry. What the runtime, its engine and
// our code then read (environ, getenv, process.env) never holds them.
import fs from 'node:fs';

// x86-64, assembled with GNU as (intel syntax). At the entry, rsp points at argc, then argv[argc],
// NULL, envp..., NULL; rdx holds the loader's finaliser and must reach the runtime's entry as is.
//
//   mov    rcx, [rsp]              48 8b 0c 24            argc
//   lea    rsi, [rsp+rcx*8+16]     48 8d 74 cc 10         rsi: next envp slot to read
//   mov    rdi, rsi                48 89 f7               rdi: next envp slot to keep
// next:
//   mov    rax, [rsi]              48 8b 06
//   test   rax, rax                48 85 c0
//   je     fill                    74 22                  end of envp
//   add    rsi, 8                  48 83 c6 08
//   mov    r8d, [rax]              44 8b 00               the name's first 4 bytes ("NAME=value",
//                                                         on the stack: 4 bytes are always readable)
//   cmp    r8d, 0x5f4e5542         41 81 f8 42 55 4e 5f   "BUN_": drop
//   je     next                    74 e8
//   cmp    r8d, 0x5f43534a         41 81 f8 4a 53 43 5f   "JSC_": drop
//   je     next                    74 df
//   mov    [rdi], rax              48 89 07               keep
//   add    rdi, 8                  48 83 c7 08
//   jmp    next                    eb d6
// fill:                                                   NULL the slots freed at the end of envp
//   cmp    rdi, rsi                48 39 f7
//   jae    done                    73 0d
//   mov    qword ptr [rdi], 0      48 c7 07 00 00 00 00
//   add    rdi, 8                  48 83 c7 08
//   jmp    fill                    eb ee
// done:
//   jmp    <the runtime's entry>   e9 <rel32>
const STUB = Buffer.from(
  [
    '488b0c24', '488d74cc10', '4889f7',
    '488b06', '4885c0', '7422', '4883c608', '448b00', '4181f842554e5f', '74e8', '4181f84a53435f', '74df', '488907', '4883c708', 'ebd6',
    '4839f7', '730d', '48c70700000000', '4883c708', 'ebee',
    'e9',
  ].join(''),
  'hex',
);
const SIZE = STUB.length + 4; // + the jump's rel32

const PT_LOAD = 1;
const PF_X = 1;

/**
 * Puts the guard in the zero padding that precedes the executable segment within its first page
 * (mapped executable with that page anyway), grows the segment's header back over it and makes it
 * the entry point. Throws, leaving the file as it was, if the layout is not the one expected.
 */
export function guardEntry(file) {
  const b = fs.readFileSync(file);
  if (b.readUInt32BE(0) !== 0x7f454c46 || b[4] !== 2 || b[5] !== 1 || b.readUInt16LE(18) !== 62) throw new Error(`${file}: not an x86-64 ELF64 executable`);
  const entry = b.readBigUInt64LE(24);
  const phoff = Number(b.readBigUInt64LE(32));
  const phentsize = b.readUInt16LE(54);
  const loads = [];
  for (let i = 0; i < b.readUInt16LE(56); i++) {
    const at = phoff + i * phentsize;
    if (b.readUInt32LE(at) !== PT_LOAD) continue;
    loads.push({ at, flags: b.readUInt32LE(at + 4), offset: Number(b.readBigUInt64LE(at + 8)), vaddr: b.readBigUInt64LE(at + 16), filesz: Number(b.readBigUInt64LE(at + 32)), memsz: Number(b.readBigUInt64LE(at + 40)), align: Number(b.readBigUInt64LE(at + 48)) });
  }
  const text = loads.find((p) => p.flags & PF_X);
  if (loads.filter((p) => p.flags & PF_X).length !== 1 || entry < text.vaddr || entry >= text.vaddr + BigInt(text.memsz)) throw new Error(`${file}: expected one executable segment holding the entry point`);
  const start = (text.offset - SIZE) & ~15;
  const room = Math.max(text.offset & ~(text.align - 1), ...loads.filter((p) => p.offset < text.offset).map((p) => p.offset + p.filesz));
  if (start < room || b.subarray(start, text.offset).some((x) => x !== 0)) throw new Error(`${file}: no free ${SIZE} bytes before the executable segment in its page`);
  const grow = text.offset - start;
  const vaddr = text.vaddr - BigInt(grow);
  STUB.copy(b, start);
  b.writeInt32LE(Number(entry - (vaddr + BigInt(SIZE))), start + STUB.length);
  b.writeBigUInt64LE(BigInt(start), text.at + 8); // p_offset
  b.writeBigUInt64LE(vaddr, text.at + 16); // p_vaddr
  b.writeBigUInt64LE(vaddr, text.at + 24); // p_paddr
  b.writeBigUInt64LE(BigInt(text.filesz + grow), text.at + 32);
  b.writeBigUInt64LE(BigInt(text.memsz + grow), text.at + 40);
  b.writeBigUInt64LE(vaddr, 24); // e_entry
  fs.writeFileSync(file, b);
}
