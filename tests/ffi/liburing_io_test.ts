/**
 * The live kernel io_uring through ffi/liburing.ts: data paths, ordering,
 * overflow, MSG_RING, probe, fixed tables. Every CQE here is a real kernel CQE.
 */
import assert from "node:assert/strict";
import { allocBuffer, O } from "../../ffi/libc.ts";
import { Errno } from "../../sim/uapi/errno.ts";
import {
  IORING_ENTER,
  IORING_FEAT,
  IORING_MSG,
  IORING_OP as OP,
  IORING_SQ,
  IOSQE,
  IOVEC,
} from "../../sim/uapi/io_uring.ts";
import { ignore, newRing, pattern, TempFiles } from "./_live.ts";

const KB = 1024;

Deno.test({
  name: "WRITE_FIXED on O_DIRECT reads back byte-exact with READ and READ_FIXED",
  ignore,
  fn: () => {
    using t = new TempFiles();
    const fd = t.open("direct", O.RDWR | O.CREAT | O.DIRECT, 256 * KB);
    using ring = newRing(8);
    using a = allocBuffer(64 * KB);
    using b = allocBuffer(64 * KB);
    assert.equal(
      ring.registerBuffers([{ addr: a.addr, len: 64 * KB }, {
        addr: b.addr,
        len: 64 * KB,
      }]).res,
      0,
    );
    const data = pattern(16 * KB, 1);
    a.bytes.set(data, 8 * KB);
    ring.prep({
      opcode: OP.WRITE_FIXED,
      fd,
      addr: a.addr + 8192n,
      len: 16 * KB,
      off: 4096n,
      bufIndex: 0,
      userData: 1n,
    });
    assert.equal(ring.submit(1), 1);
    assert.deepEqual(ring.reap(), [{ userData: 1n, res: 16 * KB, flags: 0 }]);

    ring.prep({ opcode: OP.READ, fd, addr: b.addr, len: 16 * KB, off: 4096n, userData: 2n });
    assert.equal(ring.submit(1), 1);
    assert.deepEqual(ring.reap(), [{ userData: 2n, res: 16 * KB, flags: 0 }]);
    assert.deepEqual(b.bytes.subarray(0, 16 * KB), data);

    b.bytes.fill(0);
    ring.prep({
      opcode: OP.READ_FIXED,
      fd,
      addr: b.addr + 32768n,
      len: 16 * KB,
      off: 4096n,
      bufIndex: 1,
      userData: 3n,
    });
    assert.equal(ring.submit(1), 1);
    assert.deepEqual(ring.reap(), [{ userData: 3n, res: 16 * KB, flags: 0 }]);
    assert.deepEqual(b.bytes.subarray(32 * KB, 48 * KB), data);
    assert.ok(b.bytes.subarray(0, 32 * KB).every((x) => x === 0));

    // The same through a fixed file slot, and the file bytes through pread.
    assert.equal(ring.registerFiles([-1, fd]).res, 0);
    b.bytes.fill(0);
    ring.prep({
      opcode: OP.READ_FIXED,
      fd: 1,
      flags: IOSQE.FIXED_FILE,
      addr: b.addr,
      len: 4 * KB,
      off: 8192n,
      bufIndex: 1,
      userData: 4n,
    });
    assert.equal(ring.submit(1), 1);
    assert.deepEqual(ring.reap(), [{ userData: 4n, res: 4 * KB, flags: 0 }]);
    assert.deepEqual(b.bytes.subarray(0, 4 * KB), data.subarray(4 * KB, 8 * KB));
    b.bytes.fill(0);
    assert.equal(t.libc.pread(fd, b.addr, 4 * KB, 0), 4 * KB);
    assert.ok(b.bytes.subarray(0, 4 * KB).every((x) => x === 0), "bytes before the write");
  },
});

Deno.test({
  name: "WRITEV then READV scatter/gather byte-exact",
  ignore,
  fn: () => {
    using t = new TempFiles();
    const fd = t.open("vec");
    using ring = newRing(4);
    using mem = allocBuffer(64 * KB);
    using iov = allocBuffer(3 * IOVEC.SIZE);
    const v = new DataView(iov.bytes.buffer);
    const lens = [100, 4096, 7];
    const setIov = (base: number) => {
      let at = base;
      lens.forEach((len, i) => {
        v.setBigUint64(i * IOVEC.SIZE + IOVEC.base, mem.addr + BigInt(at), true);
        v.setBigUint64(i * IOVEC.SIZE + IOVEC.len, BigInt(len), true);
        at += len + 13;
      });
    };
    const total = lens.reduce((a, b) => a + b, 0);
    const data = pattern(total, 2);
    let at = 0;
    let k = 0;
    for (const len of lens) {
      mem.bytes.set(data.subarray(k, k + len), at);
      at += len + 13;
      k += len;
    }
    setIov(0);
    ring.prep({ opcode: OP.WRITEV, fd, addr: iov.addr, len: 3, off: 10n, userData: 5n });
    assert.equal(ring.submit(1), 1);
    assert.deepEqual(ring.reap(), [{ userData: 5n, res: total, flags: 0 }]);

    setIov(32 * KB);
    ring.prep({ opcode: OP.READV, fd, addr: iov.addr, len: 3, off: 10n, userData: 6n });
    assert.equal(ring.submit(1), 1);
    assert.deepEqual(ring.reap(), [{ userData: 6n, res: total, flags: 0 }]);
    const got: number[] = [];
    at = 32 * KB;
    for (const len of lens) {
      got.push(...mem.bytes.subarray(at, at + len));
      at += len + 13;
    }
    assert.deepEqual(new Uint8Array(got), data);
    // The file: 10 zero bytes, then the gathered data, nothing after.
    assert.equal(t.libc.pread(fd, mem.addr, 64 * KB, 0), 10 + total);
    assert.deepEqual(mem.bytes.subarray(10, 10 + total), data);
  },
});

Deno.test({
  name: "linked WRITE -> FSYNC -> READ complete in order; READ sees the write",
  ignore,
  fn: () => {
    using t = new TempFiles();
    const fd = t.open("link");
    using ring = newRing(8);
    using mem = allocBuffer(8 * KB);
    const data = pattern(4 * KB, 3);
    mem.bytes.set(data);
    const link = IOSQE.IO_LINK;
    ring.prep({
      opcode: OP.WRITE,
      fd,
      addr: mem.addr,
      len: 4096,
      flags: link | IOSQE.ASYNC,
      userData: 1n,
    });
    ring.prep({ opcode: OP.FSYNC, fd, flags: link, userData: 2n });
    ring.prep({ opcode: OP.READ, fd, addr: mem.addr + 4096n, len: 4096, userData: 3n });
    assert.equal(ring.submit(3), 3);
    assert.deepEqual(ring.reap(), [
      { userData: 1n, res: 4096, flags: 0 },
      { userData: 2n, res: 0, flags: 0 },
      { userData: 3n, res: 4096, flags: 0 },
    ]);
    assert.deepEqual(mem.bytes.subarray(4096), data);
  },
});

Deno.test({
  name: "IO_DRAIN: the drained request and those after it wait for everything before",
  ignore,
  fn: () => {
    using t = new TempFiles();
    const fd = t.open("drain");
    using ring = newRing(8);
    using mem = allocBuffer(256 * KB);
    mem.bytes.set(pattern(256 * KB, 4));
    ring.prep({
      opcode: OP.WRITE,
      fd,
      addr: mem.addr,
      len: 256 * KB,
      flags: IOSQE.ASYNC,
      userData: 1n,
    });
    ring.prep({ opcode: OP.NOP, flags: IOSQE.IO_DRAIN, userData: 2n });
    ring.prep({ opcode: OP.NOP, userData: 3n });
    assert.equal(ring.submit(3), 3);
    assert.deepEqual(ring.reap(), [
      { userData: 1n, res: 256 * KB, flags: 0 },
      { userData: 2n, res: 0, flags: 0 },
      { userData: 3n, res: 0, flags: 0 },
    ]);
  },
});

Deno.test({
  name: "a short O_DIRECT read at EOF breaks its link: the next gets -ECANCELED",
  ignore,
  fn: () => {
    using t = new TempFiles();
    const fd = t.open("short", O.RDWR | O.CREAT | O.DIRECT);
    using ring = newRing(8);
    using mem = allocBuffer(64 * KB);
    mem.bytes.set(pattern(64 * KB, 5));
    assert.equal(t.libc.pwrite(fd, mem.addr, 64 * KB, 0), 64 * KB);
    ring.prep({
      opcode: OP.READ,
      fd,
      addr: mem.addr,
      len: 8192,
      off: 61440n,
      flags: IOSQE.IO_LINK,
      userData: 1n,
    });
    ring.prep({ opcode: OP.NOP, flags: IOSQE.IO_LINK, userData: 2n });
    ring.prep({ opcode: OP.NOP, userData: 3n });
    assert.equal(ring.submit(3), 3);
    assert.deepEqual(ring.reap(), [
      { userData: 1n, res: 4096, flags: 0 },
      { userData: 2n, res: -Errno.ECANCELED, flags: 0 },
      { userData: 3n, res: -Errno.ECANCELED, flags: 0 },
    ]);
  },
});

Deno.test({
  name: "CQ overflow: IORING_SQ_CQ_OVERFLOW set, nothing dropped (NODROP), order kept",
  ignore,
  fn: () => {
    using ring = newRing(4, { cqEntries: 4 });
    assert.equal(ring.cqEntries, 4);
    assert.ok(ring.features & IORING_FEAT.NODROP);
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 4; i++) assert.ok(ring.prepNop(round * 4 + i));
      assert.equal(ring.submit(0), 4);
    }
    assert.equal(ring.cqReady(), 4);
    assert.equal(ring.sqFlags & IORING_SQ.CQ_OVERFLOW, IORING_SQ.CQ_OVERFLOW);
    assert.equal(ring.cqOverflow, 0);
    const seen: bigint[] = [];
    while (seen.length < 12) {
      const got = ring.reap();
      seen.push(...got.map((c) => c.userData));
      if (seen.length < 12) assert.equal(ring.waitCqes(1, 1e9), 0); // flushes the overflow list
      assert.ok(got.length > 0);
    }
    assert.deepEqual(seen, Array.from({ length: 12 }, (_, i) => BigInt(i)));
    assert.equal(ring.sqFlags & IORING_SQ.CQ_OVERFLOW, 0);
    assert.equal(ring.cqReady(), 0);
  },
});

Deno.test({
  name: "MSG_RING posts a CQE on another ring; a non-ring fd gets -EBADFD",
  ignore,
  fn: () => {
    using t = new TempFiles();
    const file = t.open("notring");
    using a = newRing(4);
    using b = newRing(4);
    a.prep({
      opcode: OP.MSG_RING,
      fd: b.fd,
      addr: BigInt(IORING_MSG.DATA),
      len: 0x1234,
      off: 0xdeadbeefcafen,
      userData: 9n,
    });
    assert.equal(a.submit(1), 1);
    assert.deepEqual(a.reap(), [{ userData: 9n, res: 0, flags: 0 }]);
    assert.deepEqual(b.reap(), [{ userData: 0xdeadbeefcafen, res: 0x1234, flags: 0 }]);
    a.prep({ opcode: OP.MSG_RING, fd: file, len: 1, userData: 10n });
    assert.equal(a.submit(1), 1);
    assert.deepEqual(a.reap(), [{ userData: 10n, res: -Errno.EBADFD, flags: 0 }]);
  },
});

Deno.test({
  name: "probe lists every opcode the testbed uses",
  ignore,
  fn: () => {
    using ring = newRing(2);
    const p = ring.probe();
    assert.ok("ops" in p);
    assert.ok(p.lastOp >= OP.MSG_RING);
    for (const [name, op] of Object.entries(OP)) assert.ok(p.ops.has(op), `${name} supported`);
    assert.ok(!p.ops.has(p.lastOp + 1));
  },
});

Deno.test({
  name: "wait with timeout: -ETIME when nothing completes, 0 when a CQE is there",
  ignore,
  fn: () => {
    using ring = newRing(2);
    const t0 = performance.now();
    assert.equal(ring.waitCqes(1, 20e6), -Errno.ETIME);
    assert.ok(performance.now() - t0 >= 15, "waited about 20 ms");
    assert.equal(ring.waitCqes(1, -1), -Errno.EINVAL);
    assert.ok(ring.prepNop(77));
    assert.equal(ring.submit(0), 1);
    assert.equal(ring.waitCqes(1, 1e9), 0);
    assert.deepEqual(ring.reap(), [{ userData: 77n, res: 0, flags: 0 }]);
  },
});

Deno.test({
  name: "fixed files: sparse table, update and update_tag, -1 clears, unregister",
  ignore,
  fn: () => {
    using t = new TempFiles();
    const fd = t.open("ff", O.RDWR | O.CREAT, 8192);
    using ring = newRing(4);
    using mem = allocBuffer(4096);
    const readSlot = (slot: number, ud: bigint) => {
      ring.prep({
        opcode: OP.READ,
        fd: slot,
        flags: IOSQE.FIXED_FILE,
        addr: mem.addr,
        len: 512,
        userData: ud,
      });
      assert.equal(ring.submit(1), 1);
      const got = ring.reap();
      assert.equal(got.length, 1);
      assert.equal(got[0].userData, ud);
      return got[0].res;
    };
    assert.equal(ring.registerFilesSparse(4).res, 0);
    assert.equal(readSlot(2, 1n), -Errno.EBADF);
    assert.deepEqual(ring.updateFiles(2, [fd]), { res: 1, ok: true, errno: null });
    assert.equal(readSlot(2, 2n), 512);
    assert.equal(ring.updateFiles(2, [-1]).res, 1);
    assert.equal(readSlot(2, 3n), -Errno.EBADF);
    assert.equal(ring.updateFilesTag(3, [fd], [42n]).res, 1);
    assert.equal(readSlot(3, 4n), 512);
    assert.equal(ring.updateFilesTag(3, [fd], []).res, -Errno.EINVAL);
    assert.equal(ring.updateFiles(4, [fd]).res, -Errno.EINVAL);
    assert.equal(ring.unregisterFiles().res, 0);
    // Removing the tagged file posts its tag as a CQE (IORING_FEAT_RSRC_TAGS).
    assert.ok(ring.features & IORING_FEAT.RSRC_TAGS);
    assert.deepEqual(ring.reap(), [{ userData: 42n, res: 0, flags: 0 }]);
    assert.equal(readSlot(3, 5n), -Errno.EBADF);
  },
});

Deno.test({
  name: "registered buffers: sparse table, update fills and clears a slot",
  ignore,
  fn: () => {
    using t = new TempFiles();
    const fd = t.open("fb", O.RDWR | O.CREAT, 8192);
    using ring = newRing(4);
    using mem = allocBuffer(8192);
    const readFixed = (idx: number) => {
      ring.prep({ opcode: OP.READ_FIXED, fd, addr: mem.addr, len: 4096, bufIndex: idx });
      assert.equal(ring.submit(1), 1);
      return ring.reap()[0].res;
    };
    assert.equal(ring.registerBuffersSparse(2).res, 0);
    assert.equal(readFixed(1), -Errno.EFAULT);
    assert.equal(ring.updateBuffers(1, [{ addr: mem.addr, len: 8192 }]).res, 1);
    assert.equal(readFixed(1), 4096);
    assert.equal(readFixed(0), -Errno.EFAULT);
    assert.equal(ring.updateBuffers(1, [{ addr: 0n, len: 0 }]).res, 1);
    assert.equal(readFixed(1), -Errno.EFAULT);
    assert.equal(ring.updateBuffers(2, [{ addr: mem.addr, len: 4096 }]).res, -Errno.EINVAL);
    assert.equal(ring.unregisterBuffers().res, 0);
  },
});

Deno.test({
  name: "RawRing surface: pushSqe until full, submit count, partial reap, Ring wrapper",
  ignore,
  fn: () => {
    using ring = newRing(4);
    const sqe = new Uint8Array(64);
    const v = new DataView(sqe.buffer);
    for (let i = 0; i < 4; i++) {
      v.setBigUint64(32, BigInt(100 + i), true);
      assert.equal(ring.pushSqe(sqe), true);
    }
    assert.equal(ring.pushSqe(sqe), false);
    assert.equal(ring.sqPending, 4);
    assert.equal(ring.submit(4), 4);
    assert.equal(ring.sqSpace, 4);
    assert.deepEqual(ring.reap(1), [{ userData: 100n, res: 0, flags: 0 }]);
    assert.deepEqual(ring.reap().map((c) => c.userData), [101n, 102n, 103n]);
    assert.deepEqual(ring.reap(), []);
    assert.throws(() => ring.pushSqe(new Uint8Array(10)), RangeError);
    assert.throws(() => ring.cqAdvance(1), RangeError);

    const friendly = ring.toRing();
    assert.ok(friendly.nop({ userData: 5n }));
    assert.deepEqual(friendly.submitAndReap(1), [{ userData: 5n, res: 0, flags: 0, errno: null }]);
    assert.deepEqual(friendly.unregisterFiles(), { res: -Errno.ENXIO, ok: false, errno: "ENXIO" });
  },
});

Deno.test({
  name: "prepNops writes exactly prep_nop's SQE image, across the ring wrap",
  ignore,
  fn: () => {
    using ring = newRing(8);
    assert.ok(ring.prepNops(8, 0));
    assert.equal(ring.prepNops(1, 99), false, "full");
    assert.equal(ring.submit(8), 8);
    assert.equal(ring.reap().length, 8);
    ring.sqeBytes.fill(0xee); // stale bytes would show
    assert.ok(ring.prepNops(5, 10)); // slots 0..4
    assert.equal(ring.submit(5), 5);
    assert.ok(ring.prepNops(6, 20)); // slots 5..7, then 0..2 (wraps)
    assert.equal(ring.prepNops(3, 30), false, "only 2 free");
    assert.ok(ring.prepNops(2, 40)); // below the copy threshold: slots 3, 4
    const expectUd = [23, 24, 25, 40, 41, 20, 21, 22];
    for (let slot = 0; slot < 8; slot++) {
      const w = new Int32Array(ring.sqeBytes.buffer, slot * 64, 16);
      assert.deepEqual(
        [...w.subarray(0, 15)],
        [0, -1, 0, 0, 0, 0, 0, 0, expectUd[slot], 0, 0, 0, 0, 0, 0],
        `slot ${slot}`,
      );
    }
    assert.equal(ring.submit(13), 8);
    assert.deepEqual(
      ring.reap().map((c) => Number(c.userData)),
      [10, 11, 12, 13, 14, 20, 21, 22, 23, 24, 25, 40, 41],
    );
  },
});

Deno.test({
  name: "flushSq + enter(n, n, GETEVENTS) is the system call io_uring_submit_and_wait makes",
  ignore,
  fn: () => {
    using a = newRing(4);
    using b = newRing(4);
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 3; i++) {
        assert.ok(a.prepNop(round * 3 + i));
        assert.ok(b.prepNop(round * 3 + i));
      }
      assert.equal(a.submitAndWait(3), 3);
      assert.equal(b.sqPending, 3);
      assert.equal(b.flushSq(), 3, "to_submit");
      assert.equal(b.sqPending, 0, "published");
      assert.equal(b.flushSq(), 3, "nothing new: still 3 the kernel has not consumed");
      assert.equal(b.enter(3, 3, IORING_ENTER.GETEVENTS), 3);
      assert.equal(b.flushSq(), 0, "consumed");
      for (const k of ["sqKhead", "sqKtail", "cqKhead", "cqKtail"] as const) {
        assert.equal(b[k][0], a[k][0], k);
      }
      assert.deepEqual(b.reap(), a.reap());
    }
    assert.equal(b.enter(0, 0, 0), 0, "nothing to submit or wait for");
  },
});
