/**
 * Differential cases for issue 10's five defects: each runs on the sim and on
 * the live kernel, and the answers must be identical. The sim-only regression
 * tests with the exact values are `tests/io_uring/hostile_test.ts`.
 */

import assert from "node:assert/strict";
import { realBackendUnavailable } from "../../mod.ts";
import { IORING_REGISTER, IOSQE } from "../../sim/uapi/io_uring.ts";
import { IORING_NOP } from "../../sim/io_uring/nop.ts";
import { RWF } from "../../sim/io_uring/rw.ts";
import { BUF_BYTES, FLAGS, runDifferential, type Step } from "./engine.ts";

const why = realBackendUnavailable();
if (why) console.log(`SKIP differential hostile cases: real backend unavailable: ${why}`);

function diffTest(name: string, steps: Step[], entries = 16): void {
  Deno.test({
    name: `differential hostile: ${name}`,
    ignore: why !== null,
    fn() {
      const m = runDifferential(steps, entries);
      assert.equal(m, null, m ? `step ${m.step} (${m.what}): sim=${m.sim} real=${m.real}` : "");
    },
  });
}

type Sqe = Extract<Step, { t: "sqe" }>;
const nop = (flags = 0, raw: Sqe["raw"] = {}): Step => ({ t: "sqe", op: "nop", flags, raw });
const badNop = (flags = 0) => nop(flags, { rwFlags: 1 << 8 });
const failNop = (res: number, flags = 0) =>
  nop(flags, { rwFlags: IORING_NOP.INJECT_RESULT, len: res >>> 0 });
const drain: Step = { t: "drain" };

diffTest("HARDLINK chains with init failures", [
  nop(IOSQE.IO_HARDLINK),
  badNop(IOSQE.IO_HARDLINK),
  nop(IOSQE.IO_HARDLINK),
  nop(),
  drain,
  badNop(IOSQE.IO_HARDLINK),
  nop(),
  drain,
  nop(IOSQE.IO_HARDLINK),
  failNop(-5, IOSQE.IO_HARDLINK),
  nop(),
  drain,
]);

diffTest("CQ overflow with IORING_FEAT_NODROP: 70,000 NOPs on an 8-entry ring", [
  { t: "flood", n: 70_000 },
  { t: "ringState" },
], 8);

diffTest("CQE_SKIP_SUCCESS chains whose head or member fails", [
  failNop(-5, IOSQE.IO_LINK | IOSQE.CQE_SKIP_SUCCESS),
  nop(IOSQE.IO_LINK),
  nop(),
  drain,
  failNop(-5, IOSQE.IO_LINK),
  nop(IOSQE.IO_LINK | IOSQE.CQE_SKIP_SUCCESS),
  nop(),
  drain,
  nop(IOSQE.IO_LINK | IOSQE.CQE_SKIP_SUCCESS),
  badNop(),
  drain,
  nop(IOSQE.IO_LINK | IOSQE.CQE_SKIP_SUCCESS),
  nop(IOSQE.IO_LINK | IOSQE.CQE_SKIP_SUCCESS),
  failNop(-22, IOSQE.CQE_SKIP_SUCCESS),
  drain,
  nop(IOSQE.IO_HARDLINK | IOSQE.CQE_SKIP_SUCCESS),
  failNop(-5, IOSQE.IO_LINK | IOSQE.CQE_SKIP_SUCCESS),
  nop(IOSQE.CQE_SKIP_SUCCESS),
  nop(),
  drain,
]);

const rsrc = (opcode: number, nr: number, data: "null" | "buf" | bigint, flags = 0): Step => ({
  t: "rawRegister",
  opcode,
  nrArgs: 32,
  argLen: 32,
  u32: [[0, nr >>> 0], [4, flags]],
  ptrs: data === "null" ? [] : [[16, data === "buf" ? { buf: 3, off: 0, len: 0 } : data]],
});
const R = IORING_REGISTER;
const hugeCounts = [(1 << 14) + 1, (1 << 20) + 1, 0x7fffffff, 0xffffffff];
diffTest("REGISTER_FILES2/BUFFERS2: huge counts, NULL data, garbage data", [
  // buffer 3 holds -1s, so an fd array read from it is all sparse
  { t: "fill", buf: 3, seed: 0, byte: 0xff },
  ...hugeCounts.flatMap((nr) => [
    rsrc(R.REGISTER_FILES2, nr, "buf"),
    rsrc(R.REGISTER_FILES2, nr, "null"),
    rsrc(R.REGISTER_FILES2, nr, 0xdead0000n),
    rsrc(R.REGISTER_BUFFERS2, nr, "buf"),
    rsrc(R.REGISTER_BUFFERS2, nr, "null"),
    rsrc(R.REGISTER_BUFFERS2, nr, 0xdead0000n),
  ]),
  rsrc(R.REGISTER_FILES2, 4, "null"),
  rsrc(R.REGISTER_FILES2, 0xffffffff, "buf"),
  { t: "unregFiles" },
  rsrc(R.REGISTER_BUFFERS2, 3, "null", 1),
  rsrc(R.REGISTER_BUFFERS2, 0xffffffff, "buf"),
  { t: "unregBufs" },
  rsrc(R.REGISTER_BUFFERS2, 3, "null"),
  { t: "unregBufs" },
]);

const setup: Step[] = [
  { t: "open", file: 0, flags: FLAGS.rwCreate },
  { t: "open", file: 1, flags: FLAGS.rwCreateDirect },
  { t: "fill", buf: 0, seed: 9 },
  { t: "sqe", op: "write", file: { fd: 0 }, range: { buf: 0, off: 0, len: BUF_BYTES }, pos: 0 },
  { t: "sqe", op: "write", file: { fd: 1 }, range: { buf: 0, off: 0, len: BUF_BYTES }, pos: 0 },
  drain,
  { t: "regFiles", files: [0, 1] },
  { t: "regBufs", bufs: [0, 1, 2, 3].map((b) => ({ buf: b, off: 0, len: BUF_BYTES })) },
];
const rw = (op: Sqe["op"], file: number, raw: Sqe["raw"] = {}, extra: Partial<Sqe> = {}): Step => {
  const range = { buf: 1, off: 0, len: 4096 };
  const base: Sqe = op === "readv" || op === "writev"
    ? { t: "sqe", op, file: { fd: file }, iov: [range], pos: 0 }
    : op === "readFixed" || op === "writeFixed"
    ? { t: "sqe", op, file: { slot: file }, range, pos: 0, bufIndex: 1 }
    : { t: "sqe", op, file: { fd: file }, range, pos: 0 };
  return { ...base, raw, ...extra };
};
const rwOps: Sqe["op"][] = ["read", "write", "readv", "writev", "readFixed", "writeFixed"];
diffTest("ignored SQE fields: the last eight bytes, ioprio, RWF flags, offsets, FSYNC offsets", [
  ...setup,
  ...rwOps.flatMap((op) =>
    [0, 1].flatMap((f) => [
      rw(op, f, { pad2: 2n }),
      rw(op, f, { pad2: 1n << 63n }),
      rw(op, f, { pad2: 1n, addr3: 5n }),
      rw(op, f, { pad2: 1n }, { attr: { buf: 3, off: 0, len: 0 } }),
      rw(op, f, { ioprio: 1 }),
      rw(op, f, { ioprio: 4 << 13 }),
      rw(op, f, { ioprio: 0xffff }),
      rw(op, f, { ioprio: (2 << 13) | 7 }),
      rw(op, f, { ioprio: (3 << 13) | 1 }),
      rw(op, f, { ioprio: 1 << 3 }),
      rw(op, f, { rwFlags: RWF.HIPRI }),
      rw(op, f, { rwFlags: RWF.APPEND | RWF.NOAPPEND }),
      rw(op, f, { rwFlags: RWF.DONTCACHE }),
      rw(op, f, { rwFlags: 0x100 }),
      rw(op, f, { rwFlags: 0x200 }),
      rw(op, f, { off: (1n << 63n) - 1n }),
      rw(op, f, { off: (1n << 63n) - 4096n }),
      rw(op, f, { off: -2n }),
      drain,
    ])
  ),
  nop(0, { pad2: 3n, addr3: 7n }),
  ...[-1n, -4096n, 1n << 63n, (1n << 63n) - 1n].map((off): Step => ({
    t: "sqe",
    op: "fsync",
    file: { fd: 0 },
    raw: { off, len: 8192 },
  })),
  drain,
]);

diffTest("iovecs and buffers reaching into the guard page after a buffer", [
  ...setup,
  ...[0, 1].flatMap((f) =>
    (["read", "write", "readv", "writev"] as const).flatMap((op) =>
      [[BUF_BYTES - 4096, 8192], [BUF_BYTES - 100, 1000], [BUF_BYTES, 4096], [0, BUF_BYTES + 4096]]
        .flatMap(([off, len]): Step[] => {
          const r = { buf: 1, off, len };
          const s: Step = op === "readv" || op === "writev"
            ? { t: "sqe", op, file: { fd: f }, iov: [{ buf: 2, off: 0, len: 4096 }, r], pos: 0 }
            : { t: "sqe", op, file: { fd: f }, range: r, pos: 0 };
          return [s, drain];
        })
    )
  ),
]);
