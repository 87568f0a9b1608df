/**
 * io_uring_setup(): params validation, entry rounding and clamping, and the
 * ring memory layout. Expected values were observed on Linux 6.18
 * (6.18.44) with a liburing C probe.
 */

import assert from "node:assert/strict";
import { Kernel } from "../../sim/kernel.ts";
import { IO_RINGS, SIM_FEATURES, SimRing } from "../../sim/io_uring/io_uring.ts";
import { filesOf } from "../../sim/fs/fdtable.ts";
import {
  CQ_OFF,
  encodeSqe,
  IORING_FEAT,
  IORING_OP,
  IORING_SETUP,
  PARAMS,
  SQ_OFF,
} from "../../sim/uapi/io_uring.ts";
import { Errno } from "../../sim/uapi/errno.ts";
import { newRing, params } from "./_util.ts";

function setup(entries: number, p: Uint8Array): number | SimRing {
  const r = SimRing.setup(new Kernel(), entries, p);
  if (typeof r !== "number") r[Symbol.dispose]();
  return r;
}

Deno.test("setup: entries 0 and > 32768 are -EINVAL; CLAMP clamps to 32768/65536", () => {
  assert.equal(setup(0, params()), -Errno.EINVAL);
  assert.equal(setup(32769, params()), -Errno.EINVAL);
  const p = params(IORING_SETUP.CLAMP);
  const r = SimRing.setup(new Kernel(), 32769, p);
  assert.ok(typeof r !== "number");
  const v = new DataView(p.buffer);
  assert.equal(v.getUint32(PARAMS.sqEntries, true), 32768);
  assert.equal(v.getUint32(PARAMS.cqEntries, true), 65536);
  r[Symbol.dispose]();
});

Deno.test("setup: CQSIZE rules (0, < sq, too big, clamp, rounding)", () => {
  assert.equal(setup(4, params(IORING_SETUP.CQSIZE, 0)), -Errno.EINVAL);
  assert.equal(setup(4, params(IORING_SETUP.CQSIZE, 2)), -Errno.EINVAL);
  assert.equal(setup(4, params(IORING_SETUP.CQSIZE, 65537)), -Errno.EINVAL);
  const big = params(IORING_SETUP.CQSIZE | IORING_SETUP.CLAMP, 65537);
  assert.ok(typeof setup(4, big) !== "number");
  assert.equal(new DataView(big.buffer).getUint32(PARAMS.cqEntries, true), 65536);
  const five = params(IORING_SETUP.CQSIZE, 5);
  assert.ok(typeof setup(4, five) !== "number");
  assert.equal(new DataView(five.buffer).getUint32(PARAMS.cqEntries, true), 8);
});

Deno.test("setup: nonzero resv, unknown flag bits and bad combinations are -EINVAL", () => {
  const p = params();
  new DataView(p.buffer).setUint32(PARAMS.resv + 4, 1, true);
  assert.equal(setup(4, p), -Errno.EINVAL);
  for (let bit = 19; bit < 32; bit++) {
    assert.equal(setup(4, params((1 << bit) >>> 0)), -Errno.EINVAL);
  }
  assert.equal(setup(4, params(IORING_SETUP.REGISTERED_FD_ONLY)), -Errno.EINVAL);
  assert.equal(setup(4, params(IORING_SETUP.TASKRUN_FLAG)), -Errno.EINVAL);
  assert.equal(setup(4, params(IORING_SETUP.DEFER_TASKRUN)), -Errno.EINVAL);
  assert.equal(setup(4, params(1 << 17)), -Errno.EINVAL); // HYBRID_IOPOLL without IOPOLL
  // Valid on Linux and modelled: accepted.
  assert.ok(
    typeof setup(4, params(IORING_SETUP.SINGLE_ISSUER | IORING_SETUP.DEFER_TASKRUN)) !== "number",
  );
  assert.ok(
    typeof setup(4, params(IORING_SETUP.COOP_TASKRUN | IORING_SETUP.TASKRUN_FLAG)) !== "number",
  );
  assert.equal(setup(4, new Uint8Array(100)), -Errno.EFAULT);
});

Deno.test("setup: params output offsets match Linux 6.18 (entries 3 -> sq 4, cq 8)", () => {
  const p = params();
  const r = SimRing.setup(new Kernel(), 3, p);
  assert.ok(typeof r !== "number");
  const v = new DataView(p.buffer);
  assert.equal(v.getUint32(PARAMS.sqEntries, true), 4);
  assert.equal(v.getUint32(PARAMS.cqEntries, true), 8);
  const sq = (f: number) => v.getUint32(PARAMS.sqOff + f, true);
  const cq = (f: number) => v.getUint32(PARAMS.cqOff + f, true);
  // Observed: sqoff head 0 tail 4 mask 16 entries 24 flags 36 dropped 32 array 192
  assert.deepEqual(
    [
      SQ_OFF.head,
      SQ_OFF.tail,
      SQ_OFF.ringMask,
      SQ_OFF.ringEntries,
      SQ_OFF.flags,
      SQ_OFF.dropped,
      SQ_OFF.array,
    ]
      .map(sq),
    [0, 4, 16, 24, 36, 32, 192],
  );
  // Observed: cqoff head 8 tail 12 mask 20 entries 28 overflow 44 cqes 64 flags 40
  assert.deepEqual(
    [
      CQ_OFF.head,
      CQ_OFF.tail,
      CQ_OFF.ringMask,
      CQ_OFF.ringEntries,
      CQ_OFF.overflow,
      CQ_OFF.cqes,
      CQ_OFF.flags,
    ]
      .map(cq),
    [8, 12, 20, 28, 44, 64, 40],
  );
  assert.equal(v.getBigUint64(PARAMS.sqOff + SQ_OFF.userAddr, true), 0n);
  assert.equal(
    v.getUint32(PARAMS.features, true),
    IORING_FEAT.SINGLE_MMAP | IORING_FEAT.NODROP | IORING_FEAT.SUBMIT_STABLE |
      IORING_FEAT.RW_CUR_POS | IORING_FEAT.RSRC_TAGS | IORING_FEAT.CQE_SKIP |
      IORING_FEAT.LINKED_FILE,
  );
  assert.equal(v.getUint32(PARAMS.features, true), SIM_FEATURES);
  // The ring memory holds mask/entries where the offsets say, and the SQ array after the CQEs.
  const rv = new DataView(r.ringBytes.buffer);
  assert.equal(rv.getUint32(IO_RINGS.sqRingMask, true), 3);
  assert.equal(rv.getUint32(IO_RINGS.cqRingMask, true), 7);
  assert.equal(rv.getUint32(IO_RINGS.sqRingEntries, true), 4);
  assert.equal(rv.getUint32(IO_RINGS.cqRingEntries, true), 8);
  assert.equal(r.ringBytes.length, 192 + 4 * 4);
  assert.equal(r.sqeBytes.length, 4 * 64);
  r[Symbol.dispose]();
});

Deno.test("setup: 1000 entries -> sq 1024, cq 2048, array at 32832 (observed)", () => {
  const p = params();
  const r = SimRing.setup(new Kernel(), 1000, p);
  assert.ok(typeof r !== "number");
  const v = new DataView(p.buffer);
  assert.equal(v.getUint32(PARAMS.sqEntries, true), 1024);
  assert.equal(v.getUint32(PARAMS.cqEntries, true), 2048);
  assert.equal(v.getUint32(PARAMS.sqOff + SQ_OFF.array, true), 32832);
  r[Symbol.dispose]();
});

Deno.test("setup: NO_SQARRAY has array offset 0 and indexes SQEs by head", () => {
  const p = params(IORING_SETUP.NO_SQARRAY);
  const r = SimRing.setup(new Kernel(), 4, p);
  assert.ok(typeof r !== "number");
  assert.equal(new DataView(p.buffer).getUint32(PARAMS.sqOff + SQ_OFF.array, true), 0);
  assert.equal(r.ringBytes.length, 64 + 16 * 8);
  r.pushSqe(encodeSqe({ opcode: IORING_OP.NOP, userData: 5n }));
  assert.equal(r.submit(1), 1);
  assert.deepEqual(r.reap(), [{ userData: 5n, res: 0, flags: 0 }]);
  r[Symbol.dispose]();
});

Deno.test("setup: the ring fd is the lowest free descriptor and close tears it down", () => {
  const k = new Kernel();
  const a = SimRing.setup(k, 4, params());
  const b = SimRing.setup(k, 4, params());
  assert.ok(typeof a !== "number" && typeof b !== "number");
  assert.equal(a.fd, 0);
  assert.equal(b.fd, 1);
  a[Symbol.dispose]();
  assert.equal(a.fd, -1);
  assert.equal(a.submit(0), -Errno.EBADF);
  assert.equal(filesOf(k).lookup(0), undefined);
  const c = SimRing.setup(k, 4, params());
  assert.ok(typeof c !== "number");
  assert.equal(c.fd, 0);
  b[Symbol.dispose]();
  c[Symbol.dispose]();
  assert.equal(filesOf(k).openCount, 0);
});

Deno.test("ring: SQE and CQE bytes sit where the kernel layout puts them", () => {
  const { ring } = newRing(4);
  ring.pushSqe(encodeSqe({ opcode: IORING_OP.NOP, userData: 0x1122334455667788n }));
  const rv = new DataView(ring.ringBytes.buffer);
  assert.equal(rv.getUint32(IO_RINGS.sqTail, true), 1);
  assert.equal(rv.getUint32(ring.sqArrayOff, true), 0);
  assert.equal(ring.sqeBytes[0], IORING_OP.NOP);
  assert.equal(ring.submit(1), 1);
  assert.equal(rv.getUint32(IO_RINGS.sqHead, true), 1);
  assert.equal(rv.getUint32(IO_RINGS.cqTail, true), 1);
  assert.equal(rv.getBigUint64(IO_RINGS.cqes, true), 0x1122334455667788n);
  assert.equal(rv.getInt32(IO_RINGS.cqes + 8, true), 0);
  assert.equal(ring.reap().length, 1);
  assert.equal(rv.getUint32(IO_RINGS.cqHead, true), 1);
  ring[Symbol.dispose]();
});
