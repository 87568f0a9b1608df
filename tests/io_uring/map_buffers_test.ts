/**
 * The proposal's IORING_REGISTER_MAP_BUFFERS / UNMAP_BUFFERS (DESIGN.md
 * section 2), one test per rule, on /dev/nvme0n1 from `attachNvme` (IOMMU
 * off) with the real nvme-pci dma_map. Each test fails if its rule breaks.
 *
 * Fixed file slots: 0 nvme O_DIRECT, 1 nvme O_DIRECT (a second open: another
 * file), 2 nvme without O_DIRECT, 3 regular file O_DIRECT, 4 empty.
 * Registered buffers: 4 of 16 KiB (4 pages each).
 */

import assert from "node:assert/strict";
import { Kernel } from "../../sim/kernel.ts";
import { attachNvme, type NvmeHost } from "../../sim/host.ts";
import type { SimRing } from "../../sim/io_uring/io_uring.ts";
import { ioUringRegister } from "../../sim/io_uring/register.ts";
import { doSysOpen, filpOpen } from "../../sim/fs/namei.ts";
import { filesOf } from "../../sim/fs/fdtable.ts";
import type { File } from "../../sim/fs/file.ts";
import { Errno } from "../../sim/uapi/errno.ts";
import {
  encodeMapBuffers,
  encodeRsrcUpdate2,
  IORING_OP,
  IORING_REGISTER,
  IORING_REGISTER_MAP_BUFFERS,
  IORING_REGISTER_UNMAP_BUFFERS,
  IOSQE,
  MAP_BUFFERS,
  O,
} from "../../sim/uapi/io_uring.ts";
import { encodeIovecs } from "../../sim/uapi/ring_api.ts";
import type { Vma } from "../../sim/memory/mm.ts";
import { fdsInUser, iovecsInUser, newRing, pairs, pattern, run } from "./_util.ts";

const NVME = 0;
const NVME2 = 1;
const BUFFERED = 2;
const REG = 3;
const EMPTY = 4;
const BUF = 16384;
const NBUF = 4;

interface Fx extends Disposable {
  k: Kernel;
  host: NvmeHost;
  ring: SimRing;
  mem: Vma;
  map(slot: number, start: number, end: number, flags?: number): number;
  unmap(slot: number, start: number, end: number): number;
  /** The slot each buffer is mapped on, or null. */
  mapped(): (number | null)[];
  /** Pages currently DMA-mapped by the driver (map calls minus unmap calls). */
  livePages(): number;
  bufAddr(i: number): bigint;
}

function fixture(): Fx {
  const k = new Kernel({ seed: 11 });
  const host = attachNvme(k, { iommu: "off" });
  const { ring } = newRing(16, 0, {}, k);
  const dev = host.namespaces[0].path;
  const fds = [
    doSysOpen(k, dev, O.RDWR | O.DIRECT),
    doSysOpen(k, dev, O.RDWR | O.DIRECT),
    doSysOpen(k, dev, O.RDWR),
    doSysOpen(k, "/reg", O.RDWR | O.CREAT | O.DIRECT),
    -1,
  ];
  assert.ok(fds.every((fd, i) => i === EMPTY || fd >= 0));
  const fdb = new Uint8Array(4 * fds.length);
  fds.forEach((fd, i) => new DataView(fdb.buffer).setInt32(4 * i, fd, true));
  assert.equal(ring.register(IORING_REGISTER.REGISTER_FILES, fdb, fds.length), 0);
  const mem = k.mm.mmap(NBUF * BUF);
  const iovs = Array.from(
    { length: NBUF },
    (_, i) => ({ addr: mem.start + BigInt(i * BUF), len: BUF }),
  );
  assert.equal(ring.register(IORING_REGISTER.REGISTER_BUFFERS, encodeIovecs(iovs), NBUF), 0);
  const c = k.stats.counters;
  return {
    k,
    host,
    ring,
    mem,
    map: (slot, start, end, flags = 0) =>
      ring.register(IORING_REGISTER_MAP_BUFFERS, encodeMapBuffers(slot, start, end, flags), 1),
    unmap: (slot, start, end) =>
      ring.register(IORING_REGISTER_UNMAP_BUFFERS, encodeMapBuffers(slot, start, end), 1),
    mapped: () =>
      Array.from({ length: ring.bufTable.nr }, (_, i) => ring.bufTable.get(i)?.dma?.slot ?? null),
    livePages: () => c.dmaMapPageCalls - c.dmaUnmapPageCalls,
    bufAddr: (i) => mem.start + BigInt(i * BUF),
    [Symbol.dispose]() {
      ring[Symbol.dispose]();
      filesOf(k)[Symbol.dispose]();
      host[Symbol.dispose]();
    },
  };
}

Deno.test("map: opcodes are the rebased 38/39", () => {
  assert.equal(IORING_REGISTER_MAP_BUFFERS, 38);
  assert.equal(IORING_REGISTER_UNMAP_BUFFERS, 39);
});

Deno.test("map: dispatch: a NULL argument or nr_args != 1 is -EINVAL, before CAP_SYS_ADMIN", () => {
  using f = fixture();
  const arg = encodeMapBuffers(NVME, 0, 1);
  for (const op of [IORING_REGISTER_MAP_BUFFERS, IORING_REGISTER_UNMAP_BUFFERS]) {
    for (const cap of [false, true]) {
      f.k.capSysAdmin = cap;
      assert.equal(f.ring.register(op, arg, 0), -Errno.EINVAL);
      assert.equal(f.ring.register(op, arg, 2), -Errno.EINVAL);
      assert.equal(f.ring.register(op, null, 1), -Errno.EINVAL);
      assert.equal(f.ring.register(op, new Uint8Array(0), 1), -Errno.EINVAL, "zero-length is NULL");
      assert.equal(f.ring.register(op, null, 2), -Errno.EINVAL);
    }
  }
  assert.deepEqual(f.mapped(), [null, null, null, null]);
});

Deno.test("map: the register guard runs first: a short non-NULL argument is -EFAULT", () => {
  using f = fixture();
  const short = encodeMapBuffers(NVME, 0, 1).subarray(0, 31);
  for (const cap of [false, true]) {
    f.k.capSysAdmin = cap;
    assert.equal(f.ring.register(IORING_REGISTER_MAP_BUFFERS, short, 1), -Errno.EFAULT);
    assert.equal(f.ring.register(IORING_REGISTER_UNMAP_BUFFERS, short, 1), -Errno.EFAULT);
    // With nr_args 2 the guard asks for no bytes, and the dispatch's -EINVAL answers.
    assert.equal(f.ring.register(IORING_REGISTER_MAP_BUFFERS, short, 2), -Errno.EINVAL);
  }
});

Deno.test("map: without CAP_SYS_ADMIN a well-formed call is -EPERM, before get_map_range", () => {
  using f = fixture();
  f.k.capSysAdmin = false;
  assert.equal(f.map(NVME, 0, 1), -Errno.EPERM);
  assert.equal(f.unmap(NVME, 0, 1), -Errno.EPERM);
  // Every check of get_map_range and of the handler comes later.
  assert.equal(f.map(NVME, 0, 1, 1), -Errno.EPERM);
  assert.equal(f.map(99, 0, 1), -Errno.EPERM);
  assert.equal(f.map(NVME, 2, 2), -Errno.EPERM);
  assert.equal(f.map(EMPTY, 0, 1), -Errno.EPERM);
  // Past the guard (ioUringRegister is the kernel's __io_uring_register), a short argument is
  // get_map_range's copy_from_user fault, which comes after the capability check.
  const short = encodeMapBuffers(NVME, 0, 1).subarray(0, 31);
  assert.equal(ioUringRegister(f.ring, IORING_REGISTER_MAP_BUFFERS, short, 1), -Errno.EPERM);
  f.k.capSysAdmin = true;
  assert.equal(ioUringRegister(f.ring, IORING_REGISTER_MAP_BUFFERS, short, 1), -Errno.EFAULT);
  assert.equal(ioUringRegister(f.ring, IORING_REGISTER_UNMAP_BUFFERS, short, 1), -Errno.EFAULT);
  assert.equal(f.map(NVME, 0, 1), 0);
  assert.deepEqual(f.mapped(), [NVME, null, null, null]);
});

Deno.test("map: nonzero flags or rsvd is -EINVAL", () => {
  using f = fixture();
  assert.equal(f.map(NVME, 0, 1, 1), -Errno.EINVAL);
  for (const at of [MAP_BUFFERS.rsvd, MAP_BUFFERS.rsvd + 8]) {
    const arg = encodeMapBuffers(NVME, 0, 1);
    arg[at + 3] = 1;
    assert.equal(f.ring.register(IORING_REGISTER_MAP_BUFFERS, arg, 1), -Errno.EINVAL);
    assert.equal(f.ring.register(IORING_REGISTER_UNMAP_BUFFERS, arg, 1), -Errno.EINVAL);
  }
  assert.deepEqual(f.mapped(), [null, null, null, null]);
});

Deno.test("map: fd >= nr_user_files, buf_start out of range and empty ranges are -EINVAL", () => {
  using f = fixture();
  assert.equal(f.map(5, 0, 1), -Errno.EINVAL);
  assert.equal(f.map(-1, 0, 1), -Errno.EINVAL);
  assert.equal(f.map(NVME, -1, 1), -Errno.EINVAL);
  assert.equal(f.map(NVME, NBUF, NBUF + 1), -Errno.EINVAL);
  assert.equal(f.map(NVME, 2, 2), -Errno.EINVAL);
  assert.equal(f.map(NVME, 2, 1), -Errno.EINVAL);
  assert.equal(f.unmap(5, 0, 1), -Errno.EINVAL);
  assert.equal(f.unmap(NVME, NBUF, NBUF + 1), -Errno.EINVAL);
  assert.deepEqual(f.mapped(), [null, null, null, null]);
  assert.equal(f.livePages(), 0);
});

Deno.test("map: the range checks come before the file checks (two wrong args)", () => {
  using f = fixture();
  // Empty slot (-EBADF) with a bad range or flags: the range check's -EINVAL wins.
  assert.equal(f.map(EMPTY, NBUF, NBUF + 1), -Errno.EINVAL);
  assert.equal(f.map(EMPTY, 1, 1), -Errno.EINVAL);
  assert.equal(f.map(EMPTY, 0, 1, 4), -Errno.EINVAL);
  assert.equal(f.map(EMPTY, 0, 1), -Errno.EBADF);
  // No O_DIRECT (-EOPNOTSUPP) beats a buffer already mapped (-EBUSY).
  assert.equal(f.map(NVME, 0, 1), 0);
  assert.equal(f.map(BUFFERED, 0, 1), -Errno.EOPNOTSUPP);
  // A mapped buffer (-EBUSY) is reported before a missing dma_map (-EINVAL).
  assert.equal(f.map(REG, 0, 1), -Errno.EBUSY);
  assert.equal(f.map(REG, 1, 2), -Errno.EINVAL);
});

Deno.test("map: buf_end above nr_user_bufs is clamped", () => {
  using f = fixture();
  assert.equal(f.map(NVME, 1, 1000), 0);
  assert.deepEqual(f.mapped(), [null, NVME, NVME, NVME]);
  assert.equal(f.livePages(), 3 * 4);
  assert.equal(f.unmap(NVME, 2, 0x7fffffff), 0);
  assert.deepEqual(f.mapped(), [null, NVME, null, null]);
  assert.equal(f.livePages(), 4);
});

Deno.test("map: an empty file slot is -EBADF for MAP; UNMAP only range-checks fd", () => {
  using f = fixture();
  assert.equal(f.map(EMPTY, 0, 2), -Errno.EBADF);
  assert.equal(f.livePages(), 0);
  assert.equal(f.map(NVME, 0, 2), 0);
  // io_register_unmap_buffers never looks at the slot: an empty one is no error, and it unmaps.
  assert.equal(f.unmap(EMPTY, 0, 2), 0);
  assert.deepEqual(f.mapped(), [null, null, null, null]);
  assert.equal(f.livePages(), 0);
  assert.equal(f.unmap(EMPTY + 1, 0, 2), -Errno.EINVAL, "fd >= nr_user_files is still -EINVAL");
});

Deno.test("map: a file not opened O_DIRECT is -EOPNOTSUPP", () => {
  using f = fixture();
  assert.equal(f.map(BUFFERED, 0, 2), -Errno.EOPNOTSUPP);
  assert.deepEqual(f.mapped(), [null, null, null, null]);
  assert.equal(f.livePages(), 0);
});

Deno.test("map: a buffer already mapped is -EBUSY (same slot or another)", () => {
  using f = fixture();
  assert.equal(f.map(NVME, 0, 2), 0);
  assert.equal(f.map(NVME, 1, 2), -Errno.EBUSY);
  assert.equal(f.map(NVME2, 0, 1), -Errno.EBUSY);
  assert.deepEqual(f.mapped(), [NVME, NVME, null, null]);
  assert.equal(f.livePages(), 8);
});

Deno.test("map: a file without dma_map (regular file) is -EINVAL", () => {
  using f = fixture();
  assert.equal(f.map(REG, 0, NBUF), -Errno.EINVAL);
  assert.deepEqual(f.mapped(), [null, null, null, null]);
});

Deno.test("map: a driver without dma_map gives its -EINVAL", () => {
  const k = new Kernel({ seed: 2 });
  using host = attachNvme(k, { iommu: "off", dmaMapSupported: false });
  using ring = newRing(8, 0, {}, k).ring;
  const fd = doSysOpen(k, host.namespaces[0].path, O.RDWR | O.DIRECT);
  const fdb = new Uint8Array(4);
  new DataView(fdb.buffer).setInt32(0, fd, true);
  assert.equal(ring.register(IORING_REGISTER.REGISTER_FILES, fdb, 1), 0);
  const mem = k.mm.mmap(BUF);
  assert.equal(
    ring.register(
      IORING_REGISTER.REGISTER_BUFFERS,
      encodeIovecs([{ addr: mem.start, len: BUF }]),
      1,
    ),
    0,
  );
  assert.equal(
    ring.register(IORING_REGISTER_MAP_BUFFERS, encodeMapBuffers(0, 0, 1), 1),
    -Errno.EINVAL,
  );
  assert.equal(ring.bufTable.get(0)!.dma, null);
});

Deno.test("map: a failure part-way unmaps what this call mapped (EBUSY and dma_map error)", () => {
  using f = fixture();
  assert.equal(f.map(NVME, 2, 3), 0);
  assert.equal(f.livePages(), 4);
  // Buffers 0 and 1 map, buffer 2 is busy: 0 and 1 are unmapped again; 2 stays as it was.
  assert.equal(f.map(NVME2, 0, NBUF), -Errno.EBUSY);
  assert.deepEqual(f.mapped(), [null, null, NVME, null]);
  assert.equal(f.livePages(), 4);
  assert.equal(f.k.stats.counters.dmaMapPageCalls, 3 * 4);
  assert.equal(f.k.stats.counters.dmaUnmapPageCalls, 2 * 4);

  // Fault injection around the real driver: its third dma_map call fails with -ENOMEM.
  const dev = f.host.namespaces[0].path;
  const real = filpOpen(f.k, dev, O.RDWR | O.DIRECT) as File;
  let calls = 0;
  const faulty: File = {
    ...real,
    fOp: {
      ...real.fOp,
      dmaMap: (file, bvecs) => (++calls === 3 ? -Errno.ENOMEM : real.fOp.dmaMap!(file, bvecs)),
    },
  };
  const fd = filesOf(f.k).install(faulty);
  const arr = fdsInUser(f.k, [fd]);
  assert.equal(
    f.ring.register(
      IORING_REGISTER.REGISTER_FILES_UPDATE2,
      encodeRsrcUpdate2(EMPTY, arr.start, 1),
      32,
    ),
    1,
  );
  assert.equal(f.unmap(NVME, 0, NBUF), 0);
  assert.equal(f.livePages(), 0);
  assert.equal(f.map(EMPTY, 0, NBUF), -Errno.ENOMEM);
  assert.equal(calls, 3);
  assert.deepEqual(f.mapped(), [null, null, null, null]);
  assert.equal(f.livePages(), 0);
});

Deno.test("map: a sparse buffer reaches the driver's dma_map, which refuses zero bvecs", () => {
  using f = fixture();
  // Buffer 1 becomes sparse: the kernel's dummy buffer, with no pages and zero bvecs.
  const sparse = iovecsInUser(f.k, [{ addr: 0n, len: 0 }]);
  assert.equal(
    f.ring.register(
      IORING_REGISTER.REGISTER_BUFFERS_UPDATE,
      encodeRsrcUpdate2(1, sparse.start, 1),
      32,
    ),
    1,
  );
  assert.equal(f.ring.bufTable.get(1), null);
  const c = f.k.stats.counters;
  // nvme-pci's dma_map answers zero bvecs with -EINVAL; buffer 0, mapped first, is unmapped.
  assert.equal(f.map(NVME, 0, 3), -Errno.EINVAL);
  assert.equal(c.dmaMapPageCalls, 4);
  assert.equal(c.dmaUnmapPageCalls, 4);
  assert.deepEqual(f.mapped(), [null, null, null, null]);
  assert.equal(f.map(NVME, 1, 2), -Errno.EINVAL);
  assert.equal(c.dmaMapPageCalls, 4);
  // The driver is asked, with zero bvecs, and nothing after the sparse buffer is tried.
  const dev = f.host.namespaces[0].path;
  const real = filpOpen(f.k, dev, O.RDWR | O.DIRECT) as File;
  const asked: number[] = [];
  const spy: File = {
    ...real,
    fOp: {
      ...real.fOp,
      dmaMap: (file, bvecs) => (asked.push(bvecs.length), real.fOp.dmaMap!(file, bvecs)),
    },
  };
  const arr = fdsInUser(f.k, [filesOf(f.k).install(spy)]);
  assert.equal(
    f.ring.register(
      IORING_REGISTER.REGISTER_FILES_UPDATE2,
      encodeRsrcUpdate2(EMPTY, arr.start, 1),
      32,
    ),
    1,
  );
  assert.equal(f.map(EMPTY, 0, NBUF), -Errno.EINVAL);
  assert.deepEqual(asked, [4, 0]);
  assert.deepEqual(f.mapped(), [null, null, null, null]);
  assert.equal(f.livePages(), 0);
  // Past the sparse buffer, mapping works; UNMAP over a sparse buffer is fine.
  assert.equal(f.map(NVME, 2, NBUF), 0);
  assert.equal(f.unmap(NVME, 0, NBUF), 0);
  assert.equal(f.livePages(), 0);
});

Deno.test("undo: UNMAP_BUFFERS unmaps every mapped buffer in the range, whatever its slot", () => {
  using f = fixture();
  assert.equal(f.map(NVME, 0, 2), 0);
  assert.equal(f.map(NVME2, 2, 4), 0);
  // The fd names slot NVME, yet buffer 2 (mapped on NVME2) goes too: v2 unmaps by range only.
  assert.equal(f.unmap(NVME, 1, 3), 0);
  assert.deepEqual(f.mapped(), [NVME, null, null, NVME2]);
  assert.equal(f.livePages(), 8);
  // Any slot in range will do, one holding another file included.
  assert.equal(f.unmap(BUFFERED, 3, 4), 0);
  assert.deepEqual(f.mapped(), [NVME, null, null, null]);
  // Unmapping what is not mapped is a no-op.
  assert.equal(f.unmap(REG, 1, NBUF), 0);
  assert.deepEqual(f.mapped(), [NVME, null, null, null]);
  assert.equal(f.livePages(), 4);
  assert.equal(f.unmap(NVME2, 0, NBUF), 0);
  assert.equal(f.livePages(), 0);
});

Deno.test("undo: unregistering buffers", () => {
  using f = fixture();
  assert.equal(f.map(NVME, 0, NBUF), 0);
  assert.equal(f.livePages(), 16);
  assert.equal(f.ring.register(IORING_REGISTER.UNREGISTER_BUFFERS, null, 0), 0);
  assert.equal(f.livePages(), 0);
  assert.equal(f.k.stats.counters.pagesPinned, f.k.stats.counters.pagesUnpinned);
});

Deno.test("undo: updating a buffer undoes that buffer's mapping only", () => {
  using f = fixture();
  assert.equal(f.map(NVME, 0, 2), 0);
  const arr = iovecsInUser(f.k, [{ addr: f.bufAddr(1), len: 4096 }]);
  assert.equal(
    f.ring.register(
      IORING_REGISTER.REGISTER_BUFFERS_UPDATE,
      encodeRsrcUpdate2(1, arr.start, 1),
      32,
    ),
    1,
  );
  assert.deepEqual(f.mapped(), [NVME, null, null, null]);
  assert.equal(f.livePages(), 4);
  // The new buffer in slot 1 can be mapped again.
  assert.equal(f.map(NVME, 1, 2), 0);
  assert.equal(f.livePages(), 5);
});

Deno.test("undo: replacing or clearing the file slot, and unregistering files", () => {
  using f = fixture();
  assert.equal(f.map(NVME, 0, 2), 0);
  assert.equal(f.map(NVME2, 2, 4), 0);
  const dev = f.host.namespaces[0].path;
  const other = doSysOpen(f.k, dev, O.RDWR | O.DIRECT);
  const arr = fdsInUser(f.k, [other]);
  assert.equal(
    f.ring.register(
      IORING_REGISTER.REGISTER_FILES_UPDATE2,
      encodeRsrcUpdate2(NVME, arr.start, 1),
      32,
    ),
    1,
  );
  assert.deepEqual(f.mapped(), [null, null, NVME2, NVME2]);
  assert.equal(f.livePages(), 8);
  const clear = fdsInUser(f.k, [-1]);
  assert.equal(
    f.ring.register(
      IORING_REGISTER.REGISTER_FILES_UPDATE2,
      encodeRsrcUpdate2(NVME2, clear.start, 1),
      32,
    ),
    1,
  );
  assert.deepEqual(f.mapped(), [null, null, null, null]);
  assert.equal(f.livePages(), 0);
  assert.equal(f.map(NVME, 0, 1), 0);
  assert.equal(f.ring.register(IORING_REGISTER.UNREGISTER_FILES, null, 0), 0);
  assert.deepEqual(f.mapped(), [null, null, null, null]);
  assert.equal(f.livePages(), 0);
});

Deno.test("undo: ring teardown", () => {
  const f = fixture();
  assert.equal(f.map(NVME, 0, NBUF), 0);
  assert.equal(f.livePages(), 16);
  f.ring[Symbol.dispose]();
  assert.equal(f.livePages(), 0);
  assert.equal(f.k.stats.counters.pagesPinned, f.k.stats.counters.pagesUnpinned);
  f[Symbol.dispose]();
});

/** Write buffer 0's pattern to LBA 0, map buffer 1 and start a READ_FIXED into it (in flight). */
function readInFlight(f: Fx): void {
  f.mem.bytes.set(pattern(BUF, 3), 0);
  const w = { opcode: IORING_OP.WRITE_FIXED, fd: NVME, flags: IOSQE.FIXED_FILE, bufIndex: 0 };
  assert.deepEqual(
    pairs(run(f.ring, [{ ...w, addr: f.bufAddr(0), len: BUF, off: 0n, userData: 1n }])),
    [[1, BUF]],
  );
  assert.equal(f.map(NVME, 1, 2), 0);
  const r = { opcode: IORING_OP.READ_FIXED, fd: NVME, flags: IOSQE.FIXED_FILE, bufIndex: 1 };
  assert.deepEqual(
    pairs(run(f.ring, [{ ...r, addr: f.bufAddr(1), len: BUF, off: 0n, userData: 2n }], 0)),
    [],
  );
  assert.equal(f.ring.inflight, 1);
}

Deno.test("undo (v2): an unmap during in-flight I/O unmaps at once; the I/O is left without it", () => {
  using f = fixture();
  readInFlight(f);
  assert.equal(f.unmap(NVME, 1, 2), 0);
  assert.deepEqual(f.mapped(), [null, null, null, null]);
  assert.equal(f.livePages(), 0, "unmapped while the I/O holds the tag");
  assert.equal(f.host.driver.liveMappings, 0, "the flat PRP array is freed too");
  assert.equal(f.ring.submit(1), 0);
  // PRP2 pointed into the freed array: the device's fetch of the list fails.
  assert.deepEqual(pairs(f.ring.reap()), [[2, -Errno.EIO]]);
  assert.equal(f.livePages(), 0);
});

Deno.test("undo (hardened): an unmap during in-flight I/O waits for it; the I/O completes intact", () => {
  using f = fixture();
  f.k.premap = "hardened";
  readInFlight(f);
  assert.equal(f.unmap(NVME, 1, 2), 0);
  assert.deepEqual(f.mapped(), [null, null, null, null]);
  assert.equal(f.livePages(), 4, "pages stay mapped while the I/O holds the tag");
  assert.equal(f.ring.submit(1), 0);
  assert.deepEqual(pairs(f.ring.reap()), [[2, BUF]]);
  assert.equal(f.livePages(), 0);
  assert.deepEqual(f.mem.bytes.subarray(BUF, 2 * BUF), pattern(BUF, 3));
});

Deno.test("iter: a dma tag only for the mapped file; elsewhere bvec, and it still works", () => {
  using f = fixture();
  const c = f.k.stats.counters;
  const data = pattern(BUF, 5);
  f.mem.bytes.set(data, 0);
  assert.equal(f.map(NVME, 0, 1), 0);
  const op = (opcode: number, slot: number, ud: number, off = 0n) => ({
    opcode,
    fd: slot,
    flags: IOSQE.FIXED_FILE,
    bufIndex: 0,
    addr: f.bufAddr(0),
    len: BUF,
    off,
    userData: BigInt(ud),
  });
  // Mapped file: no scatterlist is built.
  let sg = c.dmaMapSgCalls;
  assert.deepEqual(pairs(run(f.ring, [op(IORING_OP.WRITE_FIXED, NVME, 1)])), [[1, BUF]]);
  assert.equal(c.dmaMapSgCalls, sg);
  // Another file on the same device: the bvec path, dma_map_sg per I/O, same bytes.
  f.mem.bytes.fill(0, 0, BUF);
  sg = c.dmaMapSgCalls;
  assert.deepEqual(pairs(run(f.ring, [op(IORING_OP.READ_FIXED, NVME2, 2)])), [[2, BUF]]);
  assert.equal(c.dmaMapSgCalls, sg + 1);
  assert.deepEqual(f.mem.bytes.subarray(0, BUF), data);
  // A regular file: bvec copy, byte-exact.
  assert.deepEqual(pairs(run(f.ring, [op(IORING_OP.WRITE_FIXED, REG, 3)])), [[3, BUF]]);
  f.mem.bytes.fill(0, 0, BUF);
  assert.deepEqual(pairs(run(f.ring, [op(IORING_OP.READ_FIXED, REG, 4)])), [[4, BUF]]);
  assert.deepEqual(f.mem.bytes.subarray(0, BUF), data);
  // Back on the mapped file, at an offset inside the buffer: tag path, exact bytes.
  f.mem.bytes.fill(0, 0, BUF);
  sg = c.dmaMapSgCalls;
  const part = {
    ...op(IORING_OP.READ_FIXED, NVME, 5, 4096n),
    addr: f.bufAddr(0) + 8192n,
    len: 8192,
  };
  assert.deepEqual(pairs(run(f.ring, [part])), [[5, 8192]]);
  assert.equal(c.dmaMapSgCalls, sg);
  assert.deepEqual(f.mem.bytes.subarray(8192, BUF), data.subarray(4096, 12288));
  assert.deepEqual(f.mem.bytes.subarray(0, 8192), new Uint8Array(8192));
});
