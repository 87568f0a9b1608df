/**
 * Submission and completion: SQE validation errnos, links, hard links,
 * ordering, CQE_SKIP_SUCCESS, CQ overflow and the dropped counter, waiting.
 * Expected values and orders were observed on Linux 6.18 with liburing C
 * probes (the same SQE sequences).
 */

import assert from "node:assert/strict";
import { IO_RINGS } from "../../sim/io_uring/io_uring.ts";
import { IORING_NOP } from "../../sim/io_uring/nop.ts";
import { doSysOpen } from "../../sim/fs/namei.ts";
import { Errno } from "../../sim/uapi/errno.ts";
import {
  encodeSqe,
  IORING_MSG,
  IORING_OP,
  IORING_REGISTER,
  IORING_SETUP,
  IORING_SQ,
  IOSQE,
  O,
  type SqeFields,
} from "../../sim/uapi/io_uring.ts";
import { newRing, pairs, run } from "./_util.ts";

const nop = (ud: number, flags = 0, extra: Partial<SqeFields> = {}): SqeFields => ({
  opcode: IORING_OP.NOP,
  userData: BigInt(ud),
  flags,
  ...extra,
});

Deno.test("sqe: invalid opcode is -EINVAL and stops the batch after it (observed 3 of 5)", () => {
  const { ring } = newRing(16);
  for (const s of [nop(80), nop(81), { opcode: 250, userData: 82n }, nop(83), nop(84)]) {
    ring.pushSqe(encodeSqe(s));
  }
  assert.equal(ring.submit(0), 3);
  assert.deepEqual(pairs(ring.reap()), [[80, 0], [81, 0], [82, -Errno.EINVAL]]);
  assert.equal(ring.submit(0), 2);
  assert.deepEqual(pairs(ring.reap()), [[83, 0], [84, 0]]);
  ring[Symbol.dispose]();
});

Deno.test("sqe: IORING_SETUP_SUBMIT_ALL keeps submitting past a bad SQE", () => {
  const { ring } = newRing(16, IORING_SETUP.SUBMIT_ALL);
  for (const s of [nop(1), { opcode: 250, userData: 2n }, nop(3)]) ring.pushSqe(encodeSqe(s));
  assert.equal(ring.submit(0), 3);
  assert.deepEqual(pairs(ring.reap()), [[1, 0], [2, -Errno.EINVAL], [3, 0]]);
  ring[Symbol.dispose]();
});

Deno.test("sqe: flag, ioprio, personality, buffer-select and drain errnos", () => {
  const { ring } = newRing(16);
  assert.deepEqual(pairs(run(ring, [nop(3, 0x80)])), [[3, -Errno.EINVAL]]);
  assert.deepEqual(pairs(run(ring, [nop(4, 0, { ioprio: 1 })])), [[4, -Errno.EINVAL]]);
  assert.deepEqual(pairs(run(ring, [nop(5, 0, { personality: 5 })])), [[5, -Errno.EINVAL]]);
  assert.deepEqual(pairs(run(ring, [nop(6, IOSQE.BUFFER_SELECT)])), [[6, -Errno.EOPNOTSUPP]]);
  // Opcodes the mirror does not implement fail like an opcode the kernel was built without.
  assert.deepEqual(pairs(run(ring, [{ opcode: IORING_OP.POLL_ADD, userData: 7n }])), [[
    7,
    -Errno.EOPNOTSUPP,
  ]]);
  // Observed: CQE_SKIP_SUCCESS disables drains on the ring.
  assert.deepEqual(
    pairs(run(ring, [nop(35, IOSQE.CQE_SKIP_SUCCESS), nop(36, IOSQE.IO_DRAIN)], 1)),
    [
      [36, -Errno.EOPNOTSUPP],
    ],
  );
  ring[Symbol.dispose]();
});

Deno.test("sqe: files: fixed without a table, bad fd, bad fd before bad buffer -> -EBADF", () => {
  const { ring } = newRing(16);
  const r = run(ring, [
    { opcode: IORING_OP.READ, fd: 0, flags: IOSQE.FIXED_FILE, addr: 0x1000n, len: 8, userData: 6n },
    { opcode: IORING_OP.READ, fd: 999, addr: 0x1000n, len: 8, userData: 7n },
    { opcode: IORING_OP.READ_FIXED, fd: 999, addr: 0x1000n, len: 8, userData: 8n },
  ]);
  assert.deepEqual(pairs(r), [[6, -Errno.EBADF], [7, -Errno.EBADF], [8, -Errno.EBADF]]);
  ring[Symbol.dispose]();
});

Deno.test("nop: flags, injected result, file lookup (observed values)", () => {
  const { k, ring } = newRing(16);
  const fd = doSysOpen(k, "/nop", O.RDWR | O.CREAT);
  assert.deepEqual(pairs(run(ring, [nop(23, 0, { rwFlags: 0x40 })])), [[23, -Errno.EINVAL]]);
  const r = run(ring, [
    nop(24, 0, { rwFlags: IORING_NOP.INJECT_RESULT, len: -5 >>> 0 }),
    nop(11, 0, { rwFlags: IORING_NOP.FILE, fd: 999 }),
    nop(12, 0, { rwFlags: IORING_NOP.FILE | IORING_NOP.INJECT_RESULT, len: 7, fd }),
    nop(13, 0, { rwFlags: IORING_NOP.FILE | IORING_NOP.FIXED_FILE, fd: 0 }),
    nop(14, 0, { rwFlags: IORING_NOP.FIXED_BUFFER, bufIndex: 0 }),
  ]);
  assert.deepEqual(pairs(r), [
    [24, -5],
    [11, -Errno.EBADF],
    [12, 7],
    [13, -Errno.EBADF],
    [14, -Errno.EFAULT],
  ]);
  ring[Symbol.dispose]();
});

Deno.test("link: a short read breaks the chain; the rest get -ECANCELED", () => {
  const { k, ring } = newRing(16);
  const fd = doSysOpen(k, "/ten", O.RDWR | O.CREAT);
  const buf = k.mm.mmap(4096);
  buf.bytes.set(new TextEncoder().encode("0123456789"));
  assert.deepEqual(pairs(run(ring, [{ opcode: IORING_OP.WRITE, fd, addr: buf.start, len: 10 }])), [[
    0,
    10,
  ]]);
  const r = run(ring, [
    { opcode: IORING_OP.READ, fd, addr: buf.start, len: 20, flags: IOSQE.IO_LINK, userData: 10n },
    nop(11, IOSQE.IO_LINK),
    nop(12),
  ]);
  assert.deepEqual(pairs(r), [[10, 10], [11, -Errno.ECANCELED], [12, -Errno.ECANCELED]]);
  // A hard link carries on after the same short read.
  const h = run(ring, [
    {
      opcode: IORING_OP.READ,
      fd,
      addr: buf.start,
      len: 20,
      flags: IOSQE.IO_HARDLINK,
      userData: 16n,
    },
    nop(17),
  ]);
  assert.deepEqual(pairs(h), [[16, 10], [17, 0]]);
  ring[Symbol.dispose]();
});

Deno.test("link: a bad SQE inside a chain fails the head and the tail (observed)", () => {
  const { ring } = newRing(16);
  for (
    const s of [
      nop(13, IOSQE.IO_LINK),
      { opcode: 250, flags: IOSQE.IO_LINK, userData: 14n },
      nop(15),
    ]
  ) {
    ring.pushSqe(encodeSqe(s));
  }
  assert.equal(ring.submit(0), 3);
  assert.deepEqual(pairs(ring.reap()), [[13, -Errno.ECANCELED], [14, -Errno.EINVAL], [
    15,
    -Errno.ECANCELED,
  ]]);
  // A bad SQE without a link flag ends the chain and the batch.
  for (const s of [nop(91, IOSQE.IO_LINK), { opcode: 250, userData: 92n }, nop(93)]) {
    ring.pushSqe(encodeSqe(s));
  }
  assert.equal(ring.submit(0), 2);
  assert.deepEqual(pairs(ring.reap()), [[91, -Errno.ECANCELED], [92, -Errno.EINVAL]]);
  assert.equal(ring.submit(1), 1);
  assert.deepEqual(pairs(ring.reap()), [[93, 0]]);
  ring[Symbol.dispose]();
});

Deno.test("order: linked requests run after the batch's inline ones (observed on 6.18)", () => {
  const { ring } = newRing(16);
  assert.deepEqual(pairs(run(ring, [nop(30, IOSQE.IO_LINK), nop(31), nop(32)])).map((p) => p[0]), [
    30,
    32,
    31,
  ]);
  const six = run(ring, [
    nop(50, IOSQE.IO_LINK),
    nop(51, IOSQE.IO_LINK),
    nop(52),
    nop(53, IOSQE.IO_LINK),
    nop(54),
    nop(55),
  ]);
  assert.deepEqual(six.map((c) => Number(c.userData)), [50, 53, 55, 51, 54, 52]);
  assert.deepEqual(
    run(ring, [nop(60, IOSQE.IO_HARDLINK), nop(61), nop(62)]).map((c) => Number(c.userData)),
    [
      60,
      62,
      61,
    ],
  );
  assert.deepEqual(run(ring, [nop(70, IOSQE.ASYNC), nop(71)]).map((c) => Number(c.userData)), [
    71,
    70,
  ]);
  // A link left open at the end of a batch is queued as it is.
  assert.deepEqual(pairs(run(ring, [nop(90, IOSQE.IO_LINK)])), [[90, 0]]);
  ring[Symbol.dispose]();
});

Deno.test("cqe: CQE_SKIP_SUCCESS hides successes only", () => {
  const { ring } = newRing(16);
  const r = run(ring, [
    nop(1, IOSQE.CQE_SKIP_SUCCESS),
    nop(2, IOSQE.CQE_SKIP_SUCCESS, { rwFlags: IORING_NOP.INJECT_RESULT, len: -22 >>> 0 }),
    nop(3),
  ], 2);
  assert.deepEqual(pairs(r), [[2, -Errno.EINVAL], [3, 0]]);
  ring[Symbol.dispose]();
});

Deno.test("overflow: CQEs beyond the CQ wait on the overflow list and flush in order", () => {
  const { k, ring } = newRing(4); // cq 8
  const rv = new DataView(ring.ringBytes.buffer);
  for (let i = 0; i < 10; i++) {
    ring.pushSqe(encodeSqe(nop(i)));
    if (ring.sqSpace === 0) assert.equal(ring.submit(0), 4);
  }
  assert.equal(ring.submit(0), 2);
  // Observed: cq tail 8, overflow counter 0, sq flags 0x2.
  assert.equal(rv.getUint32(IO_RINGS.cqTail, true), 8);
  assert.equal(rv.getUint32(IO_RINGS.cqOverflow, true), 0);
  assert.equal(rv.getUint32(IO_RINGS.sqFlags, true), IORING_SQ.CQ_OVERFLOW);
  assert.equal(ring.overflowPending, 2);
  assert.deepEqual(ring.reap().map((c) => Number(c.userData)), [0, 1, 2, 3, 4, 5, 6, 7]);
  // Reaping does not flush; the next enter (GETEVENTS because of the flag) does.
  assert.equal(rv.getUint32(IO_RINGS.cqTail, true), 8);
  assert.equal(ring.submit(0), 0);
  assert.equal(rv.getUint32(IO_RINGS.cqTail, true), 10);
  assert.equal(rv.getUint32(IO_RINGS.sqFlags, true), 0);
  assert.deepEqual(ring.reap().map((c) => Number(c.userData)), [8, 9]);
  assert.equal(k.stats.counters.cqesPosted, 10);
  assert.equal(k.stats.counters.sqesConsumed, 10);
  ring[Symbol.dispose]();
});

Deno.test("overflow: new CQEs queue behind a backlog; a full list drops and counts", () => {
  const { ring } = newRing(1, 0, { maxOverflow: 1 }); // sq 1, cq 2
  const rv = new DataView(ring.ringBytes.buffer);
  for (let i = 0; i < 5; i++) {
    ring.pushSqe(encodeSqe(nop(i)));
    assert.equal(ring.submit(0), 1);
    if (i === 2) {
      assert.deepEqual(ring.reap(1).map((c) => Number(c.userData)), [0]);
    }
  }
  // 0,1 in the ring; 2 overflows; 0 reaped. Then the enter for 3 submits first (3 finds
  // the list full: dropped and counted) and flushes 2; 4 overflows behind a full ring.
  assert.equal(rv.getUint32(IO_RINGS.cqOverflow, true), 1);
  assert.deepEqual(ring.reap().map((c) => Number(c.userData)), [1, 2]);
  assert.equal(ring.submit(1), 0);
  assert.deepEqual(ring.reap().map((c) => Number(c.userData)), [4]);
  ring[Symbol.dispose]();
});

Deno.test("sq: an invalid SQ array index is dropped, counted, and ends the batch (observed)", () => {
  const { ring } = newRing(4);
  ring.pushSqe(encodeSqe(nop(15)));
  ring.pushSqe(encodeSqe(nop(16)));
  const rv = new DataView(ring.ringBytes.buffer);
  rv.setUint32(ring.sqArrayOff, 100, true);
  assert.equal(ring.submit(0), 0);
  assert.equal(rv.getUint32(IO_RINGS.sqDropped, true), 1);
  assert.equal(rv.getUint32(IO_RINGS.sqHead, true), 1);
  assert.equal(ring.submit(1), 1);
  assert.deepEqual(pairs(ring.reap()), [[16, 0]]);
  ring[Symbol.dispose]();
});

Deno.test("wait: a wait nothing can satisfy returns instead of hanging", () => {
  const { ring } = newRing(4);
  assert.equal(ring.submit(1), -Errno.ETIME);
  ring.pushSqe(encodeSqe(nop(1)));
  assert.equal(ring.submit(3), 1);
  assert.equal(ring.cqReady, 1);
  assert.equal(ring.submit(-1), -Errno.EINVAL);
  ring[Symbol.dispose]();
});

Deno.test("msg_ring: data to itself, to another ring, to a non-ring file (observed)", () => {
  const { k, ring } = newRing(8);
  const { ring: other } = newRing(8, 0, {}, k);
  const fd = doSysOpen(k, "/plain", O.RDWR | O.CREAT);
  const msg = (target: number, ud: number, len: number, tud: bigint, rwFlags = 0): SqeFields => ({
    opcode: IORING_OP.MSG_RING,
    fd: target,
    addr: BigInt(IORING_MSG.DATA),
    len,
    off: tud,
    userData: BigInt(ud),
    rwFlags,
  });
  assert.deepEqual(pairs(run(ring, [msg(fd, 25, 5, 0n)])), [[25, -Errno.EBADFD]]);
  assert.deepEqual(pairs(run(ring, [msg(ring.fd, 26, 7, 55n)], 2)), [[55, 7], [26, 0]]);
  assert.deepEqual(pairs(run(ring, [msg(other.fd, 27, 9, 66n)])), [[27, 0]]);
  assert.deepEqual(pairs(other.reap()), [[66, 9]]);
  assert.deepEqual(pairs(run(ring, [msg(other.fd, 28, 0, 0n, 4)])), [[28, -Errno.EINVAL]]);
  assert.deepEqual(pairs(run(ring, [{ ...msg(other.fd, 29, 0, 0n), addr: 9n }])), [[
    29,
    -Errno.EINVAL,
  ]]);
  other[Symbol.dispose]();
  ring[Symbol.dispose]();
});

Deno.test("msg_ring: SEND_FD installs a fixed file in the target ring's table", () => {
  const { k, ring } = newRing(8);
  const { ring: other } = newRing(8, 0, {}, k);
  const fd = doSysOpen(k, "/sent", O.RDWR | O.CREAT);
  const fdb = new Uint8Array(4);
  new DataView(fdb.buffer).setInt32(0, fd, true);
  assert.equal(ring.register(IORING_REGISTER.REGISTER_FILES, fdb, 1), 0);
  const send = (target: number, ud: number, fileIndex: number, extra: Partial<SqeFields> = {}) => ({
    opcode: IORING_OP.MSG_RING,
    fd: target,
    addr: BigInt(IORING_MSG.SEND_FD),
    addr3: 0n,
    fileIndex,
    off: 77n,
    userData: BigInt(ud),
    ...extra,
  });
  assert.deepEqual(pairs(run(ring, [send(other.fd, 1, 2)])), [[1, -Errno.ENXIO]]);
  assert.equal(
    other.register(
      IORING_REGISTER.REGISTER_FILES,
      new Uint8Array([255, 255, 255, 255, 255, 255, 255, 255]),
      2,
    ),
    0,
  );
  assert.deepEqual(pairs(run(ring, [send(other.fd, 2, 3)])), [[2, -Errno.EINVAL]]);
  assert.deepEqual(pairs(run(ring, [send(ring.fd, 3, 1)])), [[3, -Errno.EINVAL]]);
  assert.deepEqual(pairs(run(ring, [send(other.fd, 4, 1, { len: 1 })])), [[4, -Errno.EINVAL]]);
  assert.deepEqual(pairs(run(ring, [send(other.fd, 5, 1, { addr3: 9n })])), [[5, -Errno.EBADF]]);
  assert.deepEqual(pairs(run(ring, [send(other.fd, 6, 2)])), [[6, 0]]);
  assert.deepEqual(pairs(other.reap()), [[77, 0]]);
  assert.equal(other.fileTable.get(1)!.path, "/sent");
  assert.equal(other.fileTable.get(0), null);
  other[Symbol.dispose]();
  ring[Symbol.dispose]();
});
