/**
 * The io_uring mirror under hostile input: the five defects issue 10 names,
 * one regression test each (several assertions where the issue lists several
 * fields). Every expected value is the live kernel's answer (Linux 6.18 on
 * this machine), checked against it by `tests/differential/hostile_test.ts`.
 */

import assert from "node:assert/strict";
import { Errno } from "../../sim/uapi/errno.ts";
import {
  encodeRsrcRegister,
  encodeSqe,
  IORING_OP,
  IORING_REGISTER,
  IORING_RSRC_REGISTER_SPARSE,
  IOSQE,
  O,
  type SqeFields,
} from "../../sim/uapi/io_uring.ts";
import { IO_RINGS } from "../../sim/io_uring/io_uring.ts";
import { IORING_NOP } from "../../sim/io_uring/nop.ts";
import { RWF } from "../../sim/io_uring/rw.ts";
import { doSysOpen } from "../../sim/fs/namei.ts";
import { iovecsInUser, newRing, pairs, run } from "./_util.ts";

const nop = (ud: number, flags = 0, extra: Partial<SqeFields> = {}): SqeFields => ({
  opcode: IORING_OP.NOP,
  userData: BigInt(ud),
  flags,
  ...extra,
});
/** A NOP whose prep fails (-EINVAL: an unknown nop flag). */
const badNop = (ud: number, flags = 0) => nop(ud, flags, { rwFlags: 1 << 8 });
/** A NOP that completes with `res` (IORING_NOP_INJECT_RESULT). */
const failNop = (ud: number, res: number, flags = 0) =>
  nop(ud, flags, { rwFlags: IORING_NOP.INJECT_RESULT, len: res >>> 0 });

Deno.test("hostile: a HARDLINK chain with an init failure fails the rest -ECANCELED, no throw", () => {
  const { ring } = newRing(8);
  const r = run(ring, [
    nop(1, IOSQE.IO_HARDLINK),
    badNop(2, IOSQE.IO_HARDLINK),
    nop(3, IOSQE.IO_HARDLINK),
    nop(4),
  ], 4);
  // The kernel: the head is failed -ECANCELED, the failing member keeps its own
  // errno, and nothing of the chain runs (hard links become soft ones).
  assert.deepEqual(pairs(r), [[1, -Errno.ECANCELED], [2, -Errno.EINVAL], [3, -Errno.ECANCELED], [
    4,
    -Errno.ECANCELED,
  ]]);
  assert.equal(ring.inflight, 0);
  // A hard link whose head fails at init: the same.
  assert.deepEqual(pairs(run(ring, [badNop(5, IOSQE.IO_HARDLINK), nop(6)], 2)), [
    [5, -Errno.EINVAL],
    [6, -Errno.ECANCELED],
  ]);
  ring[Symbol.dispose]();
  assert.equal(ring.fd, -1);
});

Deno.test("hostile: CQ overflow under IORING_FEAT_NODROP never drops a completion", () => {
  const { ring } = newRing(8); // cq 16
  const rv = new DataView(ring.ringBytes.buffer);
  const total = 70_000;
  for (let i = 0; i < total; i++) {
    assert.ok(ring.pushSqe(encodeSqe(nop(i))));
    assert.equal(ring.submit(0), 1);
  }
  assert.equal(rv.getUint32(IO_RINGS.cqOverflow, true), 0);
  let next = 0;
  for (;;) {
    const got = ring.reap();
    for (const c of got) assert.equal(Number(c.userData), next++);
    if (got.length === 0) break;
    ring.submit(0); // the overflow flag makes this a GETEVENTS enter: it flushes the backlog
  }
  assert.equal(next, total);
  assert.equal(rv.getUint32(IO_RINGS.cqOverflow, true), 0);
  ring[Symbol.dispose]();
});

Deno.test("hostile: a failed CQE_SKIP_SUCCESS link member hides the rest of the chain's CQEs", () => {
  const { ring } = newRing(8);
  // The head fails: its own CQE is posted, the members' are not.
  assert.deepEqual(
    pairs(run(ring, [
      failNop(1, -Errno.EIO, IOSQE.IO_LINK | IOSQE.CQE_SKIP_SUCCESS),
      nop(2, IOSQE.IO_LINK),
      nop(3),
    ], 1)),
    [[1, -Errno.EIO]],
  );
  assert.equal(ring.inflight, 0);
  // Without the flag on the failing request, every member posts -ECANCELED,
  // even one that asked for CQE_SKIP_SUCCESS.
  assert.deepEqual(
    pairs(run(ring, [
      failNop(4, -Errno.EIO, IOSQE.IO_LINK),
      nop(5, IOSQE.IO_LINK | IOSQE.CQE_SKIP_SUCCESS),
      nop(6),
    ], 3)),
    [[4, -Errno.EIO], [5, -Errno.ECANCELED], [6, -Errno.ECANCELED]],
  );
  // A member failing at init fails the head -ECANCELED; a head with the flag
  // then hides every member's CQE, the failing one's included.
  assert.deepEqual(
    pairs(run(ring, [nop(7, IOSQE.IO_LINK | IOSQE.CQE_SKIP_SUCCESS), badNop(8, 0)], 1)),
    [[7, -Errno.ECANCELED]],
  );
  assert.equal(ring.inflight, 0);
  ring[Symbol.dispose]();
});

Deno.test("hostile: REGISTER_FILES2/BUFFERS2 with a huge nr or NULL data answer as the kernel", () => {
  const { k, ring } = newRing(8);
  const data = k.mm.mmap(4096).start;
  const reg = (op: number, nr: number, d: bigint, flags = 0) =>
    ring.register(op, encodeRsrcRegister(nr, flags, d), 32);
  const R = IORING_REGISTER;
  // Counts are checked before a single entry is read: no fault, no allocation.
  for (const nr of [(1 << 20) + 1, 0x7fffffff, 0xffffffff]) {
    assert.equal(reg(R.REGISTER_FILES2, nr, data), -Errno.EMFILE, `files nr ${nr}`);
    assert.equal(reg(R.REGISTER_FILES2, nr, 0n), -Errno.EMFILE, `sparse files nr ${nr}`);
  }
  // Over RLIMIT_NOFILE (1024 on the sim by default) but within the kernel's cap.
  assert.equal(reg(R.REGISTER_FILES2, 1025, data), -Errno.EMFILE);
  for (const nr of [(1 << 14) + 1, 1 << 20, 0x7fffffff, 0xffffffff]) {
    assert.equal(reg(R.REGISTER_BUFFERS2, nr, data), -Errno.EINVAL, `buffers nr ${nr}`);
    assert.equal(reg(R.REGISTER_BUFFERS2, nr, 0n), -Errno.EINVAL, `sparse buffers nr ${nr}`);
  }
  // NULL data registers sparse slots, with or without the SPARSE flag.
  assert.equal(reg(R.REGISTER_FILES2, 4, 0n), 0);
  assert.equal(ring.fileTable.nr, 4);
  assert.equal(reg(R.REGISTER_BUFFERS2, 3, 0n, IORING_RSRC_REGISTER_SPARSE), 0);
  assert.equal(ring.bufTable.nr, 3);
  // A table already there wins over the count.
  assert.equal(reg(R.REGISTER_FILES2, 0xffffffff, data), -Errno.EBUSY);
  assert.equal(reg(R.REGISTER_BUFFERS2, 0xffffffff, data), -Errno.EBUSY);
  ring[Symbol.dispose]();
});

Deno.test("hostile: SQE fields the kernel checks are checked (pad2, ioprio, HIPRI, offsets, iovecs)", () => {
  const { k, ring } = newRing(8);
  const fd = doSysOpen(k, "/f", O.RDWR | O.CREAT);
  const buf = k.mm.mmap(8192);
  assert.deepEqual(
    pairs(run(ring, [{ opcode: IORING_OP.WRITE, fd, addr: buf.start, len: 8192 }])),
    [
      [0, 8192],
    ],
  );
  const read = (ud: number, extra: Partial<SqeFields>): SqeFields => ({
    opcode: IORING_OP.READ,
    fd,
    addr: buf.start,
    len: 4096,
    userData: BigInt(ud),
    ...extra,
  });
  const one = (s: SqeFields) => pairs(run(ring, [s]))[0][1];
  // The SQE's last eight bytes: attr_type_mask for read/write; only PI (1) exists,
  // and then attr_ptr (addr3) must point at a readable io_uring_attr_pi.
  assert.equal(one(read(1, { pad2: 2n })), -Errno.EINVAL);
  assert.equal(one(read(2, { pad2: 1n << 63n })), -Errno.EINVAL);
  assert.equal(one(read(3, { pad2: 1n, addr3: 5n })), -Errno.EFAULT);
  // A well-formed PI attribute reaches a file without FMODE_HAS_METADATA: -EINVAL.
  assert.equal(one(read(4, { pad2: 1n, addr3: buf.start + 4096n })), -Errno.EINVAL);
  // NOP and FSYNC ignore those bytes.
  assert.equal(one(nop(5, 0, { pad2: 3n })), 0);
  // ioprio: ioprio_check_cap() (class NONE with a level, classes 4..7).
  assert.equal(one(read(6, { ioprio: 1 })), -Errno.EINVAL);
  assert.equal(one(read(7, { ioprio: 4 << 13 })), -Errno.EINVAL);
  assert.equal(one(read(8, { ioprio: 0xffff })), -Errno.EINVAL);
  assert.equal(one(read(9, { ioprio: (2 << 13) | 7 })), 4096);
  assert.equal(one(read(10, { ioprio: 1 << 3 })), 4096); // a hint: not checked
  // RWF_HIPRI on a ring without IOPOLL.
  assert.equal(one(read(11, { rwFlags: RWF.HIPRI })), -Errno.EINVAL);
  // RWF_APPEND with RWF_NOAPPEND.
  assert.equal(one(read(12, { rwFlags: RWF.APPEND | RWF.NOAPPEND })), -Errno.EINVAL);
  // Offsets whose end overflows a loff_t.
  assert.equal(one(read(13, { off: (1n << 63n) - 1n })), -Errno.EINVAL);
  assert.equal(one(read(14, { off: (1n << 63n) - 4096n })), -Errno.EINVAL);
  // A negative FSYNC offset.
  assert.equal(one({ opcode: IORING_OP.FSYNC, fd, off: -1n, userData: 15n }), -Errno.EINVAL);
  assert.equal(
    one({ opcode: IORING_OP.FSYNC, fd, off: -4096n, len: 8192, userData: 16n }),
    -Errno.EINVAL,
  );
  // iovecs outside the process's memory: a read stops at the unmapped page after the
  // buffer (a short count), an iovec wholly outside faults.
  const past = iovecsInUser(k, [{ addr: buf.start + 4096n, len: 4096 }, {
    addr: buf.start + 8192n - 100n,
    len: 1000,
  }]);
  assert.equal(one({ opcode: IORING_OP.READV, fd, addr: past.start, len: 2, userData: 17n }), 4196);
  const out = iovecsInUser(k, [{ addr: buf.start + 8192n, len: 4096 }]);
  assert.equal(
    one({ opcode: IORING_OP.READV, fd, addr: out.start, len: 1, userData: 18n }),
    -Errno.EFAULT,
  );
  assert.equal(one(read(19, { addr: buf.start + 8192n - 10n, len: 4096 })), 10);
  // BUFFER_SELECT without a provided-buffer group: READV wants exactly one iovec at prep,
  // then no buffer can be selected at issue.
  const sel = { opcode: IORING_OP.READV, fd, addr: past.start, flags: IOSQE.BUFFER_SELECT };
  assert.equal(one({ ...sel, len: 0, userData: 20n }), -Errno.EINVAL);
  assert.equal(one({ ...sel, len: 1, userData: 21n }), -Errno.ENOBUFS);
  ring[Symbol.dispose]();
});
