/**
 * Differential corpus: hand-written sequences (setup, register, update,
 * unregister, read/write and fixed variants, links, drains, misuse) run on
 * the sim backend and on the live kernel; results must be identical.
 */

import assert from "node:assert/strict";
import { realBackendUnavailable } from "../../mod.ts";
import { IOSQE } from "../../sim/uapi/io_uring.ts";
import { BUF_BYTES, FLAGS, runDifferential, type Step } from "./engine.ts";

const why = realBackendUnavailable();
if (why) console.log(`SKIP differential corpus: real backend unavailable: ${why}`);

function diffTest(name: string, steps: Step[], entries = 64): void {
  Deno.test({
    name: `differential: ${name}`,
    ignore: why !== null,
    fn() {
      const m = runDifferential(steps, entries);
      assert.equal(m, null, m ? `step ${m.step} (${m.what}): sim=${m.sim} real=${m.real}` : "");
    },
  });
}

const open0: Step = { t: "open", file: 0, flags: FLAGS.rwCreate };
const open0d: Step = { t: "open", file: 0, flags: FLAGS.rwCreateDirect };
const open1: Step = { t: "open", file: 1, flags: FLAGS.rwCreate };
const wait = (n: number): Step => ({ t: "submit", wait: n });

diffTest("nop and user_data round trip", [
  { t: "sqe", op: "nop" },
  { t: "sqe", op: "nop" },
  wait(2),
]);

diffTest("buffered write then read, byte exact", [
  open0,
  { t: "fill", buf: 0, seed: 11 },
  { t: "sqe", op: "write", file: { fd: 0 }, range: { buf: 0, off: 0, len: 10000 }, pos: 0 },
  wait(1),
  { t: "sqe", op: "read", file: { fd: 0 }, range: { buf: 1, off: 3, len: 10000 }, pos: 0 },
  wait(1),
  { t: "sqe", op: "read", file: { fd: 0 }, range: { buf: 2, off: 0, len: 4096 }, pos: 9000 },
  wait(1),
  { t: "sqe", op: "read", file: { fd: 0 }, range: { buf: 2, off: 0, len: 4096 }, pos: 20000 },
  wait(1),
]);

diffTest("O_DIRECT write_fixed / read_fixed / read", [
  open0d,
  { t: "fill", buf: 0, seed: 3 },
  { t: "regFiles", files: [0] },
  { t: "regBufs", bufs: [{ buf: 0, off: 0, len: BUF_BYTES }, { buf: 1, off: 0, len: BUF_BYTES }] },
  {
    t: "sqe",
    op: "writeFixed",
    file: { slot: 0 },
    range: { buf: 0, off: 4096, len: 16384 },
    pos: 8192,
    bufIndex: 0,
  },
  wait(1),
  {
    t: "sqe",
    op: "readFixed",
    file: { slot: 0 },
    range: { buf: 1, off: 0, len: 16384 },
    pos: 8192,
    bufIndex: 1,
  },
  wait(1),
  { t: "sqe", op: "read", file: { fd: 0 }, range: { buf: 2, off: 512, len: 8192 }, pos: 4096 },
  wait(1),
]);

diffTest("O_DIRECT misalignment errnos (address, length, offset)", [
  open0d,
  { t: "fill", buf: 0, seed: 5 },
  { t: "sqe", op: "write", file: { fd: 0 }, range: { buf: 0, off: 0, len: 65536 }, pos: 0 },
  wait(1),
  { t: "sqe", op: "read", file: { fd: 0 }, range: { buf: 1, off: 1, len: 4096 }, pos: 0 },
  wait(1),
  { t: "sqe", op: "read", file: { fd: 0 }, range: { buf: 1, off: 0, len: 4095 }, pos: 0 },
  wait(1),
  { t: "sqe", op: "read", file: { fd: 0 }, range: { buf: 1, off: 0, len: 4096 }, pos: 100 },
  wait(1),
  { t: "sqe", op: "write", file: { fd: 0 }, range: { buf: 0, off: 0, len: 1000 }, pos: 0 },
  wait(1),
]);

diffTest("readv / writev", [
  open1,
  { t: "fill", buf: 0, seed: 9 },
  {
    t: "sqe",
    op: "writev",
    file: { fd: 1 },
    iov: [{ buf: 0, off: 0, len: 100 }, { buf: 0, off: 5000, len: 3000 }, {
      buf: 0,
      off: 9000,
      len: 1,
    }],
    pos: 17,
  },
  wait(1),
  {
    t: "sqe",
    op: "readv",
    file: { fd: 1 },
    iov: [{ buf: 3, off: 10, len: 2000 }, { buf: 3, off: 30000, len: 5000 }],
    pos: 0,
  },
  wait(1),
]);

diffTest("fixed file table: sparse, update, unregister, errors", [
  open0,
  open1,
  { t: "sqe", op: "nop", file: { slot: 0 } },
  wait(1),
  { t: "regFilesSparse", nr: 4 },
  { t: "regFilesSparse", nr: 4 },
  { t: "sqe", op: "read", file: { slot: 1 }, range: { buf: 0, off: 0, len: 10 }, pos: 0 },
  wait(1),
  { t: "updFiles", offset: 1, files: [0, 1] },
  { t: "updFiles", offset: 3, files: [0, 1] },
  { t: "updFiles", offset: 9, files: [0] },
  { t: "sqe", op: "read", file: { slot: 1 }, range: { buf: 0, off: 0, len: 10 }, pos: 0 },
  { t: "sqe", op: "read", file: { slot: 4 }, range: { buf: 0, off: 0, len: 10 }, pos: 0 },
  wait(2),
  { t: "updFiles", offset: 1, files: [-1] },
  { t: "sqe", op: "read", file: { slot: 1 }, range: { buf: 0, off: 0, len: 10 }, pos: 0 },
  wait(1),
  { t: "unregFiles" },
  { t: "unregFiles" },
  { t: "regFiles", files: [] },
  { t: "regFiles", files: [0, -1, 1] },
]);

diffTest("registered buffers: ranges, update, unregister, twice", [
  open0d,
  { t: "regFiles", files: [0] },
  { t: "unregBufs" },
  { t: "regBufs", bufs: [{ buf: 0, off: 0, len: 8192 }, { buf: 1, off: 4096, len: 4096 }] },
  { t: "regBufs", bufs: [{ buf: 2, off: 0, len: 4096 }] },
  {
    t: "sqe",
    op: "writeFixed",
    file: { slot: 0 },
    range: { buf: 0, off: 4096, len: 8192 },
    pos: 0,
    bufIndex: 0,
  },
  {
    t: "sqe",
    op: "writeFixed",
    file: { slot: 0 },
    range: { buf: 1, off: 0, len: 4096 },
    pos: 0,
    bufIndex: 1,
  },
  {
    t: "sqe",
    op: "writeFixed",
    file: { slot: 0 },
    range: { buf: 0, off: 0, len: 4096 },
    pos: 0,
    bufIndex: 2,
  },
  wait(3),
  { t: "updBufs", offset: 1, bufs: [{ buf: 3, off: 0, len: 16384 }] },
  { t: "fill", buf: 3, seed: 77 },
  {
    t: "sqe",
    op: "writeFixed",
    file: { slot: 0 },
    range: { buf: 3, off: 0, len: 16384 },
    pos: 0,
    bufIndex: 1,
  },
  wait(1),
  { t: "updBufs", offset: 5, bufs: [{ buf: 3, off: 0, len: 4096 }] },
  { t: "updBufs", offset: 0, bufs: [null] },
  {
    t: "sqe",
    op: "readFixed",
    file: { slot: 0 },
    range: { buf: 0, off: 0, len: 4096 },
    pos: 0,
    bufIndex: 0,
  },
  wait(1),
  { t: "unregBufs" },
  {
    t: "sqe",
    op: "readFixed",
    file: { slot: 0 },
    range: { buf: 0, off: 0, len: 4096 },
    pos: 0,
    bufIndex: 0,
  },
  wait(1),
  { t: "regBufs", bufs: [{ buf: 0, off: 0, len: 0 }] },
]);

diffTest("links: success chain, short read breaks the chain, error breaks it", [
  open0,
  { t: "fill", buf: 0, seed: 1 },
  {
    t: "sqe",
    op: "write",
    file: { fd: 0 },
    range: { buf: 0, off: 0, len: 4096 },
    pos: 0,
    flags: IOSQE.IO_LINK,
  },
  { t: "sqe", op: "fsync", file: { fd: 0 }, flags: IOSQE.IO_LINK },
  { t: "sqe", op: "read", file: { fd: 0 }, range: { buf: 1, off: 0, len: 4096 }, pos: 0 },
  wait(3),
  {
    t: "sqe",
    op: "read",
    file: { fd: 0 },
    range: { buf: 2, off: 0, len: 8192 },
    pos: 0,
    flags: IOSQE.IO_LINK,
  },
  { t: "sqe", op: "nop", flags: IOSQE.IO_LINK },
  { t: "sqe", op: "nop" },
  wait(3),
  {
    t: "sqe",
    op: "read",
    file: { rawFd: 999 },
    range: { buf: 2, off: 0, len: 10 },
    pos: 0,
    flags: IOSQE.IO_LINK,
  },
  { t: "sqe", op: "nop", flags: IOSQE.IO_HARDLINK },
  { t: "sqe", op: "nop" },
  wait(3),
  {
    t: "sqe",
    op: "read",
    file: { fd: 0 },
    range: { buf: 2, off: 0, len: 8192 },
    pos: 0,
    flags: IOSQE.IO_HARDLINK,
  },
  { t: "sqe", op: "nop" },
  wait(2),
]);

diffTest("drain", [
  open0,
  { t: "sqe", op: "nop" },
  { t: "sqe", op: "fsync", file: { fd: 0 } },
  { t: "sqe", op: "nop", flags: IOSQE.IO_DRAIN },
  { t: "sqe", op: "nop" },
  wait(4),
]);

diffTest("misuse: bad opcode, bad flags, reserved fields, bad fds", [
  open0,
  { t: "sqe", op: "nop", raw: { opcode: 250 } },
  { t: "sqe", op: "nop", raw: { flags: 0x80 } },
  { t: "sqe", op: "fsync", file: { fd: 0 }, raw: { addr: 1n } },
  { t: "sqe", op: "fsync", file: { fd: 0 }, raw: { rwFlags: 0x10 } },
  { t: "sqe", op: "nop", raw: { personality: 3 } },
  { t: "sqe", op: "read", file: { rawFd: -1 }, range: { buf: 0, off: 0, len: 8 }, pos: 0 },
  { t: "sqe", op: "read", file: { rawFd: 4000 }, range: { buf: 0, off: 0, len: 8 }, pos: 0 },
  {
    t: "sqe",
    op: "readFixed",
    file: { fd: 0 },
    range: { buf: 0, off: 0, len: 8 },
    pos: 0,
    bufIndex: 3,
  },
  wait(8),
]);

diffTest("read-only file rejects writes; read of a closed descriptor", [
  open0,
  { t: "fill", buf: 0, seed: 2 },
  { t: "sqe", op: "write", file: { fd: 0 }, range: { buf: 0, off: 0, len: 100 }, pos: 0 },
  wait(1),
  { t: "open", file: 2, flags: FLAGS.rdonly },
  { t: "open", file: 0, flags: FLAGS.rdonly },
  { t: "sqe", op: "write", file: { fd: 0 }, range: { buf: 0, off: 0, len: 100 }, pos: 0 },
  { t: "sqe", op: "read", file: { fd: 0 }, range: { buf: 1, off: 0, len: 100 }, pos: 0 },
  wait(2),
  { t: "close", file: 0 },
]);

diffTest(
  "CQ overflow: flag, counter, no drop, order kept (4-entry SQ, 8-entry CQ)",
  [
    ...Array.from({ length: 3 }, (): Step[] => [
      { t: "sqe", op: "nop" },
      { t: "sqe", op: "nop" },
      { t: "sqe", op: "nop" },
      { t: "sqe", op: "nop" },
      { t: "enter" },
    ]).flat(),
    { t: "ringState" },
    { t: "reapOrdered", max: 3 },
    { t: "ringState" },
    { t: "enter" },
    { t: "ringState" },
    { t: "reapOrdered", max: 64 },
    { t: "ringState" },
    { t: "submit", wait: 0 },
    { t: "ringState" },
    { t: "reapOrdered", max: 64 },
  ],
  4,
);

diffTest("register guard: short args, garbage pointers, bad spellings answered alike", [
  open0,
  // PROBE: 16 bytes for nr_args 64; then the full 528.
  { t: "rawRegister", opcode: 8, nrArgs: 64, argLen: 16 },
  { t: "rawRegister", opcode: 8, nrArgs: 64, argLen: 528 },
  { t: "rawRegister", opcode: 8, nrArgs: 2 ** 32 + 1, argLen: 528 },
  { t: "rawRegister", opcode: 8.5, nrArgs: 1, argLen: 24 },
  { t: "rawRegister", opcode: 0x80000008, nrArgs: 1, argLen: 24 },
  { t: "rawRegister", opcode: 0x80000026, nrArgs: 1, argLen: 32 },
  { t: "rawRegister", opcode: 4, nrArgs: 1, argLen: 4 }, // EVENTFD: off the list
  // REGISTER_BUFFERS: an iovec past the end of buffer 0, a raw address, then a good one.
  {
    t: "rawRegister",
    opcode: 0,
    nrArgs: 1,
    argLen: 16,
    ptrs: [[0, { buf: 0, off: BUF_BYTES - 4096, len: 0 }]],
    u32: [[8, 8192]],
  },
  { t: "rawRegister", opcode: 0, nrArgs: 1, argLen: 16, ptrs: [[0, 0x1000n]], u32: [[8, 4096]] },
  { t: "rawRegister", opcode: 0, nrArgs: 2, argLen: 16, ptrs: [[0, { buf: 0, off: 0, len: 0 }]] },
  {
    t: "rawRegister",
    opcode: 0,
    nrArgs: 1,
    argLen: 16,
    ptrs: [[0, { buf: 1, off: 0, len: 0 }]],
    u32: [[8, 4096]],
  },
  { t: "unregBufs" },
  // FILES2 with a garbage fd array, then with data NULL (all sparse).
  { t: "rawRegister", opcode: 13, nrArgs: 32, argLen: 32, u32: [[0, 2]], ptrs: [[16, 0x1000n]] },
  { t: "rawRegister", opcode: 13, nrArgs: 32, argLen: 31, u32: [[0, 2]] },
  { t: "rawRegister", opcode: 13, nrArgs: 32, argLen: 32, u32: [[0, 2]] },
  // FILES_UPDATE2 / BUFFERS_UPDATE with garbage data and tags.
  { t: "rawRegister", opcode: 14, nrArgs: 32, argLen: 32, u32: [[24, 1]], ptrs: [[8, 0x1000n]] },
  {
    t: "rawRegister",
    opcode: 14,
    nrArgs: 32,
    argLen: 32,
    u32: [[24, 1]],
    ptrs: [[8, { buf: 2, off: 0, len: 0 }], [16, 0x2000n]],
  },
  { t: "unregFiles" },
]);
