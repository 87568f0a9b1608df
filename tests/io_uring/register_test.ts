/**
 * io_uring_register(): fixed files and registered buffers, their errnos and
 * lifetimes, and PROBE. Expected errnos were observed on Linux 6.18 with a C
 * probe making the same calls.
 */

import assert from "node:assert/strict";
import { doSysOpen, sysClose } from "../../sim/fs/namei.ts";
import { Errno } from "../../sim/uapi/errno.ts";
import {
  encodeRsrcRegister,
  encodeRsrcUpdate2,
  IORING_OP,
  IORING_REGISTER,
  IORING_RSRC_REGISTER_SPARSE,
  IOSQE,
  O,
  PROBE,
  RSRC_UPDATE,
} from "../../sim/uapi/io_uring.ts";
import { encodeIovecs } from "../../sim/uapi/ring_api.ts";
import { PAGE_SIZE } from "../../sim/memory/phys.ts";
import { fdsInUser, iovecsInUser, newRing, pairs, run } from "./_util.ts";

const R = IORING_REGISTER;

function fdBytes(fds: number[]): Uint8Array {
  const b = new Uint8Array(4 * fds.length);
  fds.forEach((fd, i) => new DataView(b.buffer).setInt32(4 * i, fd, true));
  return b;
}

Deno.test("register: unknown opcodes and empty unregisters (observed)", () => {
  const { ring } = newRing();
  assert.equal(ring.register(40, null, 0), -Errno.EINVAL);
  assert.equal(ring.register(255, null, 0), -Errno.EINVAL);
  assert.equal(ring.register(R.REGISTER_NAPI, null, 0), -Errno.EINVAL);
  assert.equal(ring.register(R.UNREGISTER_BUFFERS, null, 0), -Errno.ENXIO);
  assert.equal(ring.register(R.UNREGISTER_FILES, null, 0), -Errno.ENXIO);
  assert.equal(ring.register(R.UNREGISTER_FILES, new Uint8Array(4), 0), -Errno.EINVAL);
  assert.equal(ring.register(R.REGISTER_ENABLE_RINGS, null, 0), -Errno.EBADFD);
  ring[Symbol.dispose]();
});

Deno.test("buffers: io_buffer_validate and count errnos (observed)", () => {
  const { k, ring } = newRing();
  const v = k.mm.mmap(1 << 20);
  const reg = (bufs: { addr: bigint; len: number }[], nr = bufs.length) =>
    ring.register(R.REGISTER_BUFFERS, encodeIovecs(bufs), nr);
  assert.equal(reg([{ addr: v.start, len: 0 }]), -Errno.EFAULT);
  assert.equal(reg([{ addr: 0n, len: 4096 }]), -Errno.EFAULT);
  assert.equal(reg([{ addr: v.start, len: (1 << 30) + 1 }]), -Errno.EFAULT);
  assert.equal(reg([{ addr: 0xfffffffffffff000n, len: 8192 }]), -Errno.EOVERFLOW);
  assert.equal(reg([{ addr: 0x1000n, len: 4096 }]), -Errno.EFAULT);
  assert.equal(reg([{ addr: v.start, len: 4096 }], 0), -Errno.EINVAL);
  assert.equal(ring.register(R.REGISTER_BUFFERS, new Uint8Array(16), 16385), -Errno.EINVAL);
  assert.equal(ring.register(R.REGISTER_BUFFERS, null, 1), -Errno.EFAULT);
  // A NULL base with length 0 registers an empty slot.
  assert.equal(reg([{ addr: 0n, len: 0 }]), 0);
  assert.equal(ring.register(R.UNREGISTER_BUFFERS, null, 0), 0);
  assert.equal(reg([{ addr: v.start, len: 4096 }]), 0);
  assert.equal(reg([{ addr: v.start, len: 4096 }]), -Errno.EBUSY);
  assert.equal(k.stats.counters.pagesPinned - k.stats.counters.pagesUnpinned, 1);
  ring[Symbol.dispose]();
  assert.equal(k.stats.counters.pagesPinned, k.stats.counters.pagesUnpinned);
});

Deno.test("buffers: one bio_vec per page, first at the buffer's page offset", () => {
  const { k, ring } = newRing();
  const v = k.mm.mmap(4 * PAGE_SIZE);
  assert.equal(
    ring.register(R.REGISTER_BUFFERS, encodeIovecs([{ addr: v.start + 100n, len: 10000 }]), 1),
    0,
  );
  const imu = ring.bufTable.get(0)!;
  assert.deepEqual(
    imu.bvec.map((b) => [b.page.pfn, b.offset, b.len]),
    [[v.pages[0].pfn, 100, 3996], [v.pages[1].pfn, 0, 4096], [v.pages[2].pfn, 0, 1908]],
  );
  assert.deepEqual(v.pages.map((p) => p.pincount), [1, 1, 1, 0]);
  assert.equal(ring.register(R.UNREGISTER_BUFFERS, null, 0), 0);
  assert.deepEqual(v.pages.map((p) => p.pincount), [0, 0, 0, 0]);
  ring[Symbol.dispose]();
});

Deno.test("buffers: memlock is charged without CAP_IPC_LOCK and the limit gives -ENOMEM", () => {
  const { k, ring } = newRing(8, 0, { capIpcLock: false, memlockLimitBytes: 3 * PAGE_SIZE });
  const v = k.mm.mmap(8 * PAGE_SIZE);
  const two = { addr: v.start, len: 2 * PAGE_SIZE };
  const more = { addr: v.start + BigInt(4 * PAGE_SIZE), len: 2 * PAGE_SIZE };
  assert.equal(ring.register(R.REGISTER_BUFFERS, encodeIovecs([two, more]), 2), -Errno.ENOMEM);
  assert.equal(ring.bufTable.accountedPages, 0);
  assert.equal(k.stats.counters.pagesPinned, k.stats.counters.pagesUnpinned);
  assert.equal(ring.register(R.REGISTER_BUFFERS, encodeIovecs([two]), 1), 0);
  assert.equal(ring.bufTable.accountedPages, 2);
  ring[Symbol.dispose]();
  const { ring: root } = newRing(8, 0, { capIpcLock: true, memlockLimitBytes: PAGE_SIZE }, k);
  assert.equal(root.register(R.REGISTER_BUFFERS, encodeIovecs([two, more]), 2), 0);
  assert.equal(root.bufTable.accountedPages, 0);
  root[Symbol.dispose]();
});

Deno.test("buffers: BUFFERS2 sparse, BUFFERS_UPDATE replace and clear, errnos", () => {
  const { k, ring } = newRing();
  const v = k.mm.mmap(4 * PAGE_SIZE);
  const upd = (off: number, bufs: { addr: bigint; len: number }[]) => {
    const arr = iovecsInUser(k, bufs);
    const arg = encodeRsrcUpdate2(off, arr.start, bufs.length);
    return ring.register(R.REGISTER_BUFFERS_UPDATE, arg, arg.length);
  };
  assert.equal(upd(0, [{ addr: v.start, len: 4096 }]), -Errno.ENXIO);
  const sparse = encodeRsrcRegister(4, IORING_RSRC_REGISTER_SPARSE, 0n);
  assert.equal(ring.register(R.REGISTER_BUFFERS2, sparse, 31), -Errno.EINVAL);
  assert.equal(ring.register(R.REGISTER_BUFFERS2, encodeRsrcRegister(4, 2, 0n), 32), -Errno.EINVAL);
  assert.equal(ring.register(R.REGISTER_BUFFERS2, encodeRsrcRegister(0, 1, 0n), 32), -Errno.EINVAL);
  assert.equal(ring.register(R.REGISTER_BUFFERS2, sparse, 32), 0);
  assert.equal(ring.bufTable.nr, 4);
  assert.equal(upd(3, [{ addr: v.start, len: 4096 }, { addr: v.start, len: 4096 }]), -Errno.EINVAL);
  assert.equal(upd(1, [{ addr: v.start, len: 4096 }, { addr: v.start + 4096n, len: 8192 }]), 2);
  assert.equal(ring.bufTable.get(2)!.len, 8192);
  // An invalid entry after a good one: the count done is returned.
  assert.equal(upd(0, [{ addr: v.start, len: 100 }, { addr: v.start, len: 0 }]), 1);
  assert.equal(upd(0, [{ addr: v.start, len: 0 }]), -Errno.EFAULT);
  assert.equal(upd(2, [{ addr: 0n, len: 0 }]), 1);
  assert.equal(ring.bufTable.get(2), null);
  assert.equal(k.stats.counters.pagesPinned - k.stats.counters.pagesUnpinned, 2);
  ring[Symbol.dispose]();
  assert.equal(k.stats.counters.pagesPinned, k.stats.counters.pagesUnpinned);
});

Deno.test("files: register errnos (observed) and sparse slots", () => {
  const { k, ring } = newRing();
  const fd = doSysOpen(k, "/a", O.RDWR | O.CREAT);
  assert.equal(ring.register(R.REGISTER_FILES, fdBytes([-1, -1, -1]), 0), -Errno.EINVAL);
  assert.equal(ring.register(R.REGISTER_FILES, fdBytes([999]), 1), -Errno.EBADF);
  assert.equal(ring.register(R.REGISTER_FILES, fdBytes([ring.fd]), 1), -Errno.EBADF);
  assert.equal(ring.register(R.REGISTER_FILES, null, 1), -Errno.EFAULT);
  assert.equal(ring.register(R.REGISTER_FILES, fdBytes([-1, fd, -1]), 3), 0);
  assert.equal(ring.register(R.REGISTER_FILES, fdBytes([-1, -1, -1]), 3), -Errno.EBUSY);
  assert.equal(ring.fileTable.nr, 3);
  assert.equal(ring.fileTable.get(0), null);
  assert.equal(ring.fileTable.get(1)!.path, "/a");
  assert.equal(ring.register(R.UNREGISTER_FILES, null, 0), 0);
  assert.equal(ring.fileTable.nr, 0);
  // FILES2 sparse, and a sparse table with a data pointer is -EINVAL.
  assert.equal(
    ring.register(R.REGISTER_FILES2, encodeRsrcRegister(2, IORING_RSRC_REGISTER_SPARSE, 8n), 32),
    -Errno.EINVAL,
  );
  assert.equal(
    ring.register(R.REGISTER_FILES2, encodeRsrcRegister(2, IORING_RSRC_REGISTER_SPARSE, 0n), 32),
    0,
  );
  assert.equal(ring.fileTable.nr, 2);
  ring[Symbol.dispose]();
});

Deno.test("files: FILES_UPDATE errnos (observed), clear with -1, skip with -2", () => {
  const { k, ring } = newRing();
  const fa = doSysOpen(k, "/a", O.RDWR | O.CREAT);
  const fb = doSysOpen(k, "/b", O.RDWR | O.CREAT);
  const upd = (off: number, fds: number[], resv = 0) => {
    const arr = fdsInUser(k, fds);
    const arg = new Uint8Array(RSRC_UPDATE.SIZE);
    const v = new DataView(arg.buffer);
    v.setUint32(RSRC_UPDATE.offset, off, true);
    v.setUint32(RSRC_UPDATE.resv, resv, true);
    v.setBigUint64(RSRC_UPDATE.data, arr.start, true);
    return ring.register(R.REGISTER_FILES_UPDATE, arg, fds.length);
  };
  assert.equal(upd(0, [fa]), -Errno.ENXIO);
  assert.equal(ring.register(R.REGISTER_FILES, fdBytes([-1, -1, -1]), 3), 0);
  assert.equal(upd(2, [fa, fb]), -Errno.EINVAL);
  assert.equal(upd(0, [fa, fb]), 2);
  assert.equal(upd(0, [fa], 1), -Errno.EINVAL);
  assert.equal(upd(0, [999]), -Errno.EBADF);
  // The failed update emptied slot 0 before failing, as the kernel does.
  assert.equal(ring.fileTable.get(0), null);
  assert.equal(upd(0, [fb, -2, -1]), 3);
  assert.equal(ring.fileTable.get(0)!.path, "/b");
  assert.equal(ring.fileTable.get(1)!.path, "/b");
  assert.equal(ring.fileTable.get(2), null);
  // FILES_UPDATE2 with nr 0 is -EINVAL.
  const arr = fdsInUser(k, [fa]);
  assert.equal(
    ring.register(R.REGISTER_FILES_UPDATE2, encodeRsrcUpdate2(0, arr.start, 0), 32),
    -Errno.EINVAL,
  );
  assert.equal(ring.register(R.REGISTER_FILES_UPDATE2, encodeRsrcUpdate2(2, arr.start, 1), 32), 1);
  assert.equal(ring.fileTable.get(2)!.path, "/a");
  ring[Symbol.dispose]();
});

Deno.test("files: a fixed slot keeps the file after close(fd); a cleared slot is -EBADF", () => {
  const { k, ring } = newRing();
  const fd = doSysOpen(k, "/keep", O.RDWR | O.CREAT);
  const buf = k.mm.mmap(4096);
  buf.bytes.set([1, 2, 3, 4]);
  assert.equal(ring.register(R.REGISTER_FILES, fdBytes([fd]), 1), 0);
  assert.equal(sysClose(k, fd), 0);
  const w = { opcode: IORING_OP.WRITE, fd: 0, flags: IOSQE.FIXED_FILE, addr: buf.start, len: 4 };
  assert.deepEqual(pairs(run(ring, [{ ...w, userData: 1n }])), [[1, 4]]);
  const arr = fdsInUser(k, [-1]);
  assert.equal(ring.register(R.REGISTER_FILES_UPDATE2, encodeRsrcUpdate2(0, arr.start, 1), 32), 1);
  assert.deepEqual(pairs(run(ring, [{ ...w, userData: 2n }])), [[2, -Errno.EBADF]]);
  assert.deepEqual(pairs(run(ring, [{ ...w, fd: 5, userData: 3n }])), [[3, -Errno.EBADF]]);
  ring[Symbol.dispose]();
});

Deno.test("probe: nr_args > 256 and a dirty buffer are -EINVAL; last_op 62 (observed)", () => {
  const { ring } = newRing();
  assert.equal(ring.register(R.REGISTER_PROBE, new Uint8Array(4096), 300), -Errno.EINVAL);
  assert.equal(ring.register(R.REGISTER_PROBE, null, 4), -Errno.EINVAL);
  const b = new Uint8Array(PROBE.SIZE + 256 * PROBE.OP_SIZE);
  assert.equal(ring.register(R.REGISTER_PROBE, b, 256), 0);
  assert.equal(b[PROBE.lastOp], 62);
  assert.equal(b[PROBE.opsLen], 63);
  const supported = [];
  for (let i = 0; i < 63; i++) {
    const at = PROBE.SIZE + i * PROBE.OP_SIZE;
    assert.equal(b[at], i);
    if (b[at + PROBE.opFlags] & 1) supported.push(i);
  }
  assert.deepEqual(supported, [
    IORING_OP.NOP,
    IORING_OP.READV,
    IORING_OP.WRITEV,
    IORING_OP.FSYNC,
    IORING_OP.READ_FIXED,
    IORING_OP.WRITE_FIXED,
    IORING_OP.TIMEOUT,
    IORING_OP.TIMEOUT_REMOVE,
    IORING_OP.LINK_TIMEOUT,
    IORING_OP.FILES_UPDATE,
    IORING_OP.READ,
    IORING_OP.WRITE,
    IORING_OP.MSG_RING,
  ]);
  assert.equal(ring.register(R.REGISTER_PROBE, b, 256), -Errno.EINVAL);
  assert.equal(ring.register(R.REGISTER_PROBE, new Uint8Array(20), 2), -Errno.EFAULT);
  ring[Symbol.dispose]();
});
