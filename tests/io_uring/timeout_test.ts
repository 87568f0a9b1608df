/**
 * IORING_OP_TIMEOUT / LINK_TIMEOUT / TIMEOUT_REMOVE in the mirror
 * (sim/io_uring/timeout.ts), exact values on the virtual clock. What the live
 * kernel does with the same SQEs is checked by the differential peer suite
 * (tests/differential/liburing_test.ts); these pin the mirror's own timing
 * and the cases that need a request the sim can keep in flight (an NVMe
 * command the device has not run yet).
 */

import assert from "node:assert/strict";
import { Errno } from "../../sim/uapi/errno.ts";
import {
  encodeSqe,
  IORING_CQE_F,
  IORING_OP,
  IORING_TIMEOUT,
  IOSQE,
  O,
  type SqeFields,
} from "../../sim/uapi/io_uring.ts";
import { openTestbed } from "../../mod.ts";
import type { SimTestbed } from "../../sim/testbed.ts";
import type { Kernel } from "../../sim/kernel.ts";
import { newRing, pairs, run } from "./_util.ts";

const MS = 1_000_000;

/** A timespec of `ns` in user memory. */
function ts(k: Kernel, ns: bigint): bigint {
  const v = k.mm.mmap(16);
  const dv = new DataView(v.bytes.buffer, v.bytes.byteOffset);
  dv.setBigInt64(0, ns / 1_000_000_000n, true);
  dv.setBigInt64(8, ns % 1_000_000_000n, true);
  return v.start;
}

const timeout = (addr: bigint, ud: number, extra: Partial<SqeFields> = {}): SqeFields => ({
  opcode: IORING_OP.TIMEOUT,
  addr,
  len: 1,
  userData: BigInt(ud),
  ...extra,
});
const nop = (ud: number, flags = 0): SqeFields => ({
  opcode: IORING_OP.NOP,
  userData: BigInt(ud),
  flags,
});

Deno.test("timeout: expires with -ETIME after exactly its duration on the virtual clock", () => {
  const { k, ring } = newRing();
  const t0 = k.clock.nowNs();
  assert.deepEqual(pairs(run(ring, [timeout(ts(k, 10n * BigInt(MS)), 1)])), [[1, -Errno.ETIME]]);
  assert.equal(k.clock.nowNs() - t0, 10 * MS);
  assert.equal(ring.inflight, 0);
  ring[Symbol.dispose]();
});

Deno.test("timeout: a count counts CQEs posted after it, even from its own batch", () => {
  const { k, ring } = newRing();
  const long = ts(k, 1_000_000_000n);
  // NOP, NOP, TIMEOUT(count 1): the NOPs' CQEs are posted at the end of the batch, after
  // the timeout took its sequence, so the first of them completes it (res 0).
  assert.deepEqual(pairs(run(ring, [nop(1), nop(2), timeout(long, 3, { off: 1n })])), [
    [1, 0],
    [2, 0],
    [3, 0],
  ]);
  // Two counted timeouts: the one needing 1 CQE completes first; its own CQE does not count.
  assert.deepEqual(
    pairs(run(ring, [timeout(long, 4, { off: 2n }), timeout(long, 5, { off: 1n }), nop(6)], 3)),
    [[6, 0], [5, 0], [4, -Errno.ETIME]],
  );
  ring[Symbol.dispose]();
});

Deno.test("timeout: multishot posts -ETIME with F_MORE, then ends; a full CQ ends it early", () => {
  const { k, ring } = newRing(2); // CQ of 4
  const t = ts(k, 1n * BigInt(MS));
  const t0 = k.clock.nowNs();
  const three = run(ring, [timeout(t, 1, { off: 3n, rwFlags: IORING_TIMEOUT.MULTISHOT })], 3);
  assert.deepEqual(three.map((c) => [Number(c.userData), c.res, c.flags]), [
    [1, -Errno.ETIME, IORING_CQE_F.MORE],
    [1, -Errno.ETIME, IORING_CQE_F.MORE],
    [1, -Errno.ETIME, 0],
  ]);
  assert.equal(k.clock.nowNs() - t0, 3 * MS);
  // Unlimited multishot with nothing reaped: 4 CQEs fill the CQ, the 5th cannot be posted
  // with io_fill_cqe_aux(), so the request completes (its final CQE overflows).
  ring.pushSqe(encodeSqe(timeout(t, 2, { rwFlags: IORING_TIMEOUT.MULTISHOT })));
  ring.submit(0);
  k.waitEvent(() => false, 20 * MS);
  assert.equal(ring.inflight, 0, "the multishot ended");
  assert.equal(ring.cqReady, 4);
  assert.equal(ring.overflowPending, 1);
  const cqes = ring.reap();
  assert.deepEqual(cqes.map((c) => [Number(c.userData), c.res, c.flags]), [
    [2, -Errno.ETIME, IORING_CQE_F.MORE],
    [2, -Errno.ETIME, IORING_CQE_F.MORE],
    [2, -Errno.ETIME, IORING_CQE_F.MORE],
    [2, -Errno.ETIME, IORING_CQE_F.MORE],
  ]);
  ring.submit(1);
  assert.deepEqual(ring.reap().map((c) => [Number(c.userData), c.res, c.flags]), [
    [2, -Errno.ETIME, 0],
  ]);
  ring[Symbol.dispose]();
});

Deno.test("timeout: TIMEOUT_REMOVE cancels (-ECANCELED), -ENOENT when gone, UPDATE re-arms", () => {
  const { k, ring } = newRing();
  const long = ts(k, 1_000_000_000n);
  const rm = (target: number, ud: number, extra: Partial<SqeFields> = {}): SqeFields => ({
    opcode: IORING_OP.TIMEOUT_REMOVE,
    addr: BigInt(target),
    userData: BigInt(ud),
    ...extra,
  });
  assert.deepEqual(pairs(run(ring, [timeout(long, 1), rm(1, 2)])), [[2, 0], [1, -Errno.ECANCELED]]);
  assert.deepEqual(pairs(run(ring, [rm(1, 3)])), [[3, -Errno.ENOENT]]);
  const t0 = k.clock.nowNs();
  assert.deepEqual(
    pairs(run(ring, [
      timeout(long, 4, { off: 5n }),
      rm(4, 5, { rwFlags: IORING_TIMEOUT.UPDATE, off: ts(k, 2n * BigInt(MS)) }),
    ])),
    [[5, 0], [4, -Errno.ETIME]],
  );
  assert.equal(k.clock.nowNs() - t0, 2 * MS, "re-armed as a 2 ms pure timer");
  // Bad removal SQEs fail at prep.
  assert.deepEqual(pairs(run(ring, [rm(1, 6, { len: 1 })])), [[6, -Errno.EINVAL]]);
  assert.deepEqual(pairs(run(ring, [rm(1, 7, { flags: IOSQE.FIXED_FILE })])), [[7, -Errno.EINVAL]]);
  assert.deepEqual(pairs(run(ring, [rm(1, 8, { rwFlags: IORING_TIMEOUT.ABS })])), [[
    8,
    -Errno.EINVAL,
  ]]);
  ring[Symbol.dispose]();
});

Deno.test("timeout: prep errors: len, buf_index, flags, two clocks, multishot+abs, timespec", () => {
  const { k, ring } = newRing();
  const t = ts(k, 1n);
  const neg = k.mm.mmap(16);
  new DataView(neg.bytes.buffer, neg.bytes.byteOffset).setBigInt64(8, -1n, true);
  for (
    const [extra, want] of [
      [{ len: 0 }, -Errno.EINVAL],
      [{ bufIndex: 1 }, -Errno.EINVAL],
      [{ fileIndex: 1 }, -Errno.EINVAL],
      [{ rwFlags: 1 << 7 }, -Errno.EINVAL],
      [{ rwFlags: IORING_TIMEOUT.BOOTTIME | IORING_TIMEOUT.REALTIME }, -Errno.EINVAL],
      [{ rwFlags: IORING_TIMEOUT.MULTISHOT | IORING_TIMEOUT.ABS }, -Errno.EINVAL],
      [{ addr: 0n }, -Errno.EFAULT],
      [{ addr: neg.start }, -Errno.EINVAL],
      [{ ioprio: 1 }, -Errno.EINVAL],
    ] as [Partial<SqeFields>, number][]
  ) {
    assert.deepEqual(
      pairs(run(ring, [timeout(t, 9, extra)])),
      [[9, want]],
      Object.keys(extra).join(),
    );
  }
  ring[Symbol.dispose]();
});

Deno.test("link timeout: needs a chain; disarmed -ECANCELED; fires -ETIME and cancels a TIMEOUT", () => {
  const { k, ring } = newRing();
  const lt = (ud: number, ns: bigint, flags = 0): SqeFields => ({
    opcode: IORING_OP.LINK_TIMEOUT,
    addr: ts(k, ns),
    len: 1,
    userData: BigInt(ud),
    flags,
  });
  assert.deepEqual(pairs(run(ring, [lt(1, 1n)])), [[1, -Errno.EINVAL]]);
  assert.deepEqual(pairs(run(ring, [nop(2, IOSQE.IO_LINK), lt(3, 10n * BigInt(MS))])), [
    [2, 0],
    [3, -Errno.ECANCELED],
  ]);
  // A disarmed linked timeout with CQE_SKIP_SUCCESS posts nothing: it completed, not failed.
  assert.deepEqual(
    pairs(run(ring, [nop(4, IOSQE.IO_LINK), lt(5, 10n * BigInt(MS), IOSQE.CQE_SKIP_SUCCESS)], 1)),
    [[4, 0]],
  );
  const t0 = k.clock.nowNs();
  assert.deepEqual(
    pairs(run(ring, [
      timeout(ts(k, 100n * BigInt(MS)), 6, { flags: IOSQE.IO_LINK }),
      lt(7, 5n * BigInt(MS), IOSQE.IO_LINK),
      nop(8),
    ])),
    [[7, -Errno.ETIME], [6, -Errno.ECANCELED], [8, -Errno.ECANCELED]],
  );
  assert.equal(k.clock.nowNs() - t0, 5 * MS);
  // Equal expiries: both timers fire before task work runs; the TIMEOUT already left the
  // list, so the linked timeout's cancel finds nothing (-ENOENT), as on Linux 6.18.
  assert.deepEqual(
    pairs(
      run(ring, [
        timeout(ts(k, 5n * BigInt(MS)), 9, { flags: IOSQE.IO_LINK }),
        lt(10, 5n * BigInt(MS)),
      ]),
    ),
    [[9, -Errno.ETIME], [10, -Errno.ENOENT]],
  );
  assert.equal(ring.inflight, 0);
  ring[Symbol.dispose]();
});

/** A sim testbed with the NVMe namespace on fixed slot 0 and a 16 KiB registered buffer. */
function nvme() {
  const tb = openTestbed({ backend: "sim", seed: 3 }) as SimTestbed;
  const ring = tb.ring({ entries: 8 });
  const buf = tb.allocBuffer(16384);
  const fd = tb.open(tb.nvmeDevice, O.RDWR | O.DIRECT);
  return { tb, ring, buf, fd, k: tb.kernel };
}

Deno.test("link timeout on NVMe I/O: a read in flight cannot be cancelled (-ENOENT) and completes", () => {
  const { tb, ring, buf, fd, k } = nvme();
  // A zero timeout is due at the next poll, where timers run before the device.
  ring.read(fd, buf.addr, 4096, 0n, { flags: IOSQE.IO_LINK, userData: 1n });
  ring.prep({ opcode: IORING_OP.LINK_TIMEOUT, addr: ts(k, 0n), len: 1, userData: 2n });
  assert.equal(ring.submit(0).res, 2);
  assert.equal(tb.host.driver.outstandingCommands, 1, "the read is on the device");
  assert.deepEqual(ring.submitAndReap(2).map((c) => [Number(c.userData), c.res]), [
    [2, -Errno.ENOENT],
    [1, 4096],
  ]);
  // Disarmed when the read finishes first.
  ring.read(fd, buf.addr, 4096, 0n, { flags: IOSQE.IO_LINK, userData: 3n });
  ring.prep({ opcode: IORING_OP.LINK_TIMEOUT, addr: ts(k, 10n ** 9n), len: 1, userData: 4n });
  assert.deepEqual(ring.submitAndReap(2).map((c) => [Number(c.userData), c.res]), [
    [3, 4096],
    [4, -Errno.ECANCELED],
  ]);
  tb[Symbol.dispose]();
});

Deno.test("timeout: ring teardown cancels pending timeouts; nothing fires into a dead ring", () => {
  const { k, ring } = newRing();
  const long = ts(k, 10n ** 9n);
  for (const s of [timeout(long, 1), timeout(long, 2, { off: 100n }), nop(3, IOSQE.IO_LINK)]) {
    ring.pushSqe(encodeSqe(s));
  }
  ring.pushSqe(encodeSqe({ opcode: IORING_OP.LINK_TIMEOUT, addr: long, len: 1, userData: 4n }));
  ring.submit(0);
  assert.equal(ring.inflight, 2, "two timeouts pending (the linked one was disarmed)");
  ring[Symbol.dispose]();
  assert.equal(ring.inflight, 0);
  assert.equal(k.nextTimerNs, Infinity, "no timer left armed");
  k.waitEvent(() => false, 2e9); // nothing runs, nothing throws
});
