/**
 * READ/WRITE/READV/WRITEV/READ_FIXED/WRITE_FIXED and FSYNC on regular files,
 * byte-exact, with the errnos Linux 6.18 returns on ext4 (observed with C
 * probes on /dev/vda: logical block 512, dma_alignment 511).
 */

import assert from "node:assert/strict";
import { doSysOpen, lookupInode } from "../../sim/fs/namei.ts";
import { Errno } from "../../sim/uapi/errno.ts";
import {
  IORING_FSYNC_DATASYNC,
  IORING_OP,
  IORING_REGISTER,
  IOSQE,
  O,
  type SqeFields,
} from "../../sim/uapi/io_uring.ts";
import { encodeIovecs } from "../../sim/uapi/ring_api.ts";
import { PAGE_SIZE } from "../../sim/memory/phys.ts";
import { iovecsInUser, newRing, pairs, pattern, run } from "./_util.ts";

const rw = (
  opcode: number,
  fd: number,
  addr: bigint,
  len: number,
  off: bigint,
  ud: number,
  extra: Partial<SqeFields> = {},
): SqeFields => ({ opcode, fd, addr, len, off, userData: BigInt(ud), ...extra });

Deno.test("rw: WRITE then READ round-trips bytes; reads past EOF are short or 0", () => {
  const { k, ring } = newRing();
  const fd = doSysOpen(k, "/f", O.RDWR | O.CREAT);
  const src = k.mm.mmap(3 * PAGE_SIZE);
  const dst = k.mm.mmap(3 * PAGE_SIZE);
  const data = pattern(10000, 1);
  src.bytes.set(data);
  assert.deepEqual(pairs(run(ring, [rw(IORING_OP.WRITE, fd, src.start, 10000, 100n, 1)])), [[
    1,
    10000,
  ]]);
  assert.equal(lookupInode(k, "/f")!.size(), 10100n);
  const r = run(ring, [
    rw(IORING_OP.READ, fd, dst.start + 5n, 6000, 100n, 2),
    rw(IORING_OP.READ, fd, dst.start + 8000n, 500, 10000n, 3),
    rw(IORING_OP.READ, fd, dst.start, 10, 10100n, 4),
    rw(IORING_OP.READ, fd, dst.start, 10, 20000n, 5),
  ]);
  assert.deepEqual(pairs(r), [[2, 6000], [3, 100], [4, 0], [5, 0]]);
  assert.deepEqual(dst.bytes.subarray(5, 6005), data.subarray(0, 6000));
  assert.deepEqual(dst.bytes.subarray(8000, 8100), data.subarray(9900, 10000));
  assert.equal(dst.bytes[8100], 0);
  // The hole before offset 100 reads as zeros.
  assert.deepEqual(pairs(run(ring, [rw(IORING_OP.READ, fd, dst.start, 100, 0n, 6)])), [[6, 100]]);
  assert.deepEqual(dst.bytes.subarray(0, 100), new Uint8Array(100));
  ring[Symbol.dispose]();
});

Deno.test("rw: READV/WRITEV scatter and gather byte-exact; >1024 iovecs is -EINVAL", () => {
  const { k, ring } = newRing();
  const fd = doSysOpen(k, "/v", O.RDWR | O.CREAT);
  const a = k.mm.mmap(PAGE_SIZE);
  const b = k.mm.mmap(2 * PAGE_SIZE);
  a.bytes.set(pattern(300, 2));
  b.bytes.set(pattern(5000, 3), 17);
  const wv = iovecsInUser(k, [{ addr: a.start, len: 300 }, { addr: b.start + 17n, len: 5000 }]);
  assert.deepEqual(pairs(run(ring, [rw(IORING_OP.WRITEV, fd, wv.start, 2, 0n, 1)])), [[1, 5300]]);
  const file = lookupInode(k, "/v")!.contents();
  assert.deepEqual(file.subarray(0, 300), pattern(300, 2));
  assert.deepEqual(file.subarray(300), pattern(5000, 3));
  const c = k.mm.mmap(2 * PAGE_SIZE);
  const rv = iovecsInUser(k, [{ addr: c.start + 4000n, len: 1000 }, { addr: c.start, len: 10 }]);
  assert.deepEqual(pairs(run(ring, [rw(IORING_OP.READV, fd, rv.start, 2, 295n, 2)])), [[2, 1010]]);
  assert.deepEqual(c.bytes.subarray(4000, 5000), file.subarray(295, 1295));
  assert.deepEqual(c.bytes.subarray(0, 10), file.subarray(1295, 1305));
  assert.deepEqual(pairs(run(ring, [rw(IORING_OP.READV, fd, rv.start, 1025, 0n, 18)])), [[
    18,
    -Errno.EINVAL,
  ]]);
  assert.deepEqual(pairs(run(ring, [rw(IORING_OP.READV, fd, 0x1000n, 2, 0n, 19)])), [[
    19,
    -Errno.EFAULT,
  ]]);
  ring[Symbol.dispose]();
});

Deno.test("rw: READ_FIXED/WRITE_FIXED byte-exact; bad index or range -EFAULT (observed)", () => {
  const { k, ring } = newRing();
  const fd = doSysOpen(k, "/fx", O.RDWR | O.CREAT);
  const v = k.mm.mmap(4 * PAGE_SIZE);
  v.bytes.set(pattern(4 * PAGE_SIZE, 4));
  const iov = encodeIovecs([{ addr: v.start + 8n, len: 3 * PAGE_SIZE }]);
  assert.equal(ring.register(IORING_REGISTER.REGISTER_BUFFERS, iov, 1), 0);
  const wf = rw(IORING_OP.WRITE_FIXED, fd, v.start + 4000n, 6000, 0n, 1, { bufIndex: 0 });
  assert.deepEqual(pairs(run(ring, [wf])), [[1, 6000]]);
  assert.deepEqual(lookupInode(k, "/fx")!.contents(), v.bytes.slice(4000, 10000));
  v.bytes.fill(0);
  const rf = rw(IORING_OP.READ_FIXED, fd, v.start + 8n, 5000, 1000n, 2, { bufIndex: 0 });
  assert.deepEqual(pairs(run(ring, [rf])), [[2, 5000]]);
  assert.deepEqual(v.bytes.subarray(8, 5008), pattern(4 * PAGE_SIZE, 4).subarray(5000, 10000));
  const end = v.start + 8n + BigInt(3 * PAGE_SIZE);
  const r = run(ring, [
    { ...rf, addr: end - 10n, len: 11, userData: 33n },
    { ...rf, addr: v.start, len: 8, userData: 34n },
    { ...rf, bufIndex: 1, userData: 35n },
    { ...rf, addr: end - 10n, len: 10, userData: 36n },
  ]);
  assert.deepEqual(pairs(r), [[33, -Errno.EFAULT], [34, -Errno.EFAULT], [35, -Errno.EFAULT], [
    36,
    10,
  ]]);
  assert.equal(k.stats.counters.iovIters, 3);
  ring[Symbol.dispose]();
});

Deno.test("rw: errnos: write to O_RDONLY, negative offset, bad rw_flags, unmapped buffer", () => {
  const { k, ring } = newRing();
  const fd = doSysOpen(k, "/e", O.RDWR | O.CREAT);
  const ro = doSysOpen(k, "/e", O.RDONLY);
  const wo = doSysOpen(k, "/e", O.WRONLY);
  const buf = k.mm.mmap(PAGE_SIZE);
  const r = run(ring, [
    rw(IORING_OP.WRITE, ro, buf.start, 8, 0n, 27),
    rw(IORING_OP.READ, wo, buf.start, 8, 0n, 28),
    rw(IORING_OP.READ, fd, buf.start, 8, BigInt.asUintN(64, -5n), 20),
    rw(IORING_OP.READ, fd, buf.start, 8, 0n, 21, { rwFlags: 0x1000 }),
    rw(IORING_OP.WRITE, fd, 0x1000n, 8, 0n, 19),
  ]);
  assert.deepEqual(pairs(r), [
    [27, -Errno.EBADF],
    [28, -Errno.EBADF],
    [20, -Errno.EINVAL],
    [21, -Errno.EOPNOTSUPP],
    [19, -Errno.EFAULT],
  ]);
  ring[Symbol.dispose]();
});

Deno.test("rw: offset -1 uses and advances the file position; O_APPEND writes at EOF", () => {
  const { k, ring } = newRing();
  const fd = doSysOpen(k, "/pos", O.RDWR | O.CREAT);
  const buf = k.mm.mmap(PAGE_SIZE);
  buf.bytes.set(new TextEncoder().encode("abcdef"));
  const cur = BigInt.asUintN(64, -1n);
  run(ring, [rw(IORING_OP.WRITE, fd, buf.start, 3, cur, 1)]);
  run(ring, [rw(IORING_OP.WRITE, fd, buf.start + 3n, 3, cur, 2)]);
  assert.equal(new TextDecoder().decode(lookupInode(k, "/pos")!.contents()), "abcdef");
  const ap = doSysOpen(k, "/pos", O.WRONLY | O.APPEND);
  assert.deepEqual(pairs(run(ring, [rw(IORING_OP.WRITE, ap, buf.start, 2, 0n, 3)])), [[3, 2]]);
  assert.equal(new TextDecoder().decode(lookupInode(k, "/pos")!.contents()), "abcdefab");
  ring[Symbol.dispose]();
});

Deno.test("rw: O_DIRECT alignment on a regular file as ext4 on Linux 6.18 (observed)", () => {
  const { k, ring } = newRing();
  const b = k.mm.mmap(16 * PAGE_SIZE);
  b.bytes.set(pattern(65536, 9));
  const fd = doSysOpen(k, "/d", O.RDWR | O.CREAT);
  assert.deepEqual(pairs(run(ring, [rw(IORING_OP.WRITE, fd, b.start, 65536, 0n, 0)])), [[
    0,
    65536,
  ]]);
  const d = doSysOpen(k, "/d", O.RDWR | O.DIRECT);
  const a = b.start;
  const cases: [bigint, number, bigint, number][] = [
    [a + 1n, 1024, 0n, 1024],
    [a + 3585n, 1024, 0n, -Errno.EINVAL],
    [a + 3584n, 1024, 0n, 1024],
    [a + 3073n, 1024, 0n, -Errno.EINVAL],
    [a + 1n, 4096, 0n, -Errno.EINVAL],
    [a + 512n, 4096, 0n, 4096],
    [a + 1n, 512, 4096n, 512],
    [a + 256n, 8192, 0n, -Errno.EINVAL],
    [a + 4n, 3584, 0n, 3584],
    [a, 100, 0n, -Errno.EINVAL],
    [a, 512, 100n, -Errno.EINVAL],
    [a, 100, 65536n, 0],
    [a, 0, 100n, 0],
    [a, 1024, 65024n, 512],
  ];
  for (const [addr, len, off, want] of cases) {
    const [[, res]] = pairs(run(ring, [rw(IORING_OP.READ, d, addr, len, off, 1)]));
    assert.equal(res, want, `read addr+${addr - a} len ${len} off ${off}`);
  }
  const iov = iovecsInUser(k, [{ addr: a + 1n, len: 512 }, { addr: a + 5000n, len: 512 }]);
  assert.deepEqual(pairs(run(ring, [rw(IORING_OP.READV, d, iov.start, 2, 0n, 2)])), [[
    2,
    -Errno.EINVAL,
  ]]);
  assert.deepEqual(pairs(run(ring, [rw(IORING_OP.WRITE, d, a, 512, 100n, 7)])), [[
    7,
    -Errno.EINVAL,
  ]]);
  assert.deepEqual(pairs(run(ring, [rw(IORING_OP.WRITE, d, a + 1n, 512, 0n, 6)])), [[6, 512]]);
  ring[Symbol.dispose]();
});

Deno.test("fsync: works on a regular file; bad flags and fields are -EINVAL (observed)", () => {
  const { k, ring } = newRing();
  const fd = doSysOpen(k, "/s", O.RDWR | O.CREAT);
  const r = run(ring, [
    { opcode: IORING_OP.FSYNC, fd, userData: 1n },
    { opcode: IORING_OP.FSYNC, fd, rwFlags: IORING_FSYNC_DATASYNC, userData: 2n },
    { opcode: IORING_OP.FSYNC, fd: 77, userData: 24n },
  ]);
  assert.deepEqual(pairs(r), [[1, 0], [2, 0], [24, -Errno.EBADF]]);
  // A prep failure ends the batch, so one per submit.
  assert.deepEqual(pairs(run(ring, [{ opcode: IORING_OP.FSYNC, fd, rwFlags: 2, userData: 22n }])), [
    [22, -Errno.EINVAL],
  ]);
  assert.deepEqual(pairs(run(ring, [{ opcode: IORING_OP.FSYNC, fd, addr: 8n, userData: 23n }])), [
    [23, -Errno.EINVAL],
  ]);
  ring[Symbol.dispose]();
});

Deno.test("rw: a fixed file and a fixed buffer together", () => {
  const { k, ring } = newRing();
  const fd = doSysOpen(k, "/ff", O.RDWR | O.CREAT);
  const v = k.mm.mmap(PAGE_SIZE);
  v.bytes.set(pattern(PAGE_SIZE, 5));
  const fdb = new Uint8Array(4);
  new DataView(fdb.buffer).setInt32(0, fd, true);
  assert.equal(ring.register(IORING_REGISTER.REGISTER_FILES, fdb, 1), 0);
  assert.equal(
    ring.register(
      IORING_REGISTER.REGISTER_BUFFERS,
      encodeIovecs([{ addr: v.start, len: PAGE_SIZE }]),
      1,
    ),
    0,
  );
  const w = rw(IORING_OP.WRITE_FIXED, 0, v.start, PAGE_SIZE, 0n, 1, {
    flags: IOSQE.FIXED_FILE,
    bufIndex: 0,
  });
  assert.deepEqual(pairs(run(ring, [w])), [[1, PAGE_SIZE]]);
  assert.deepEqual(lookupInode(k, "/ff")!.contents(), pattern(PAGE_SIZE, 5));
  ring[Symbol.dispose]();
});
