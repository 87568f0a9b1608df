/**
 * Asynchronous completions on /dev/nvme0n1 (attachNvme, IOMMU off): CQEs
 * post when the device completes, drains wait for earlier requests, links
 * wait for their predecessor, and waiting polls the device.
 */

import assert from "node:assert/strict";
import { Kernel } from "../../sim/kernel.ts";
import { attachNvme } from "../../sim/host.ts";
import { doSysOpen } from "../../sim/fs/namei.ts";
import { filesOf } from "../../sim/fs/fdtable.ts";
import { encodeSqe, IORING_OP, IOSQE, O, type SqeFields } from "../../sim/uapi/io_uring.ts";
import { newRing, pairs, pattern } from "./_util.ts";

function fixture() {
  const k = new Kernel({ seed: 5 });
  const host = attachNvme(k, { iommu: "off" });
  const { ring } = newRing(16, 0, {}, k);
  const fd = doSysOpen(k, host.namespaces[0].path, O.RDWR | O.DIRECT);
  const mem = k.mm.mmap(65536);
  return {
    k,
    ring,
    fd,
    mem,
    [Symbol.dispose]() {
      ring[Symbol.dispose]();
      filesOf(k)[Symbol.dispose]();
      host[Symbol.dispose]();
    },
  };
}

const nop = (ud: number, flags = 0): SqeFields => ({
  opcode: IORING_OP.NOP,
  userData: BigInt(ud),
  flags,
});

Deno.test("async: a device read completes after inline NOPs; submit(0) does not wait", () => {
  using f = fixture();
  const rd: SqeFields = {
    opcode: IORING_OP.READ,
    fd: f.fd,
    addr: f.mem.start,
    len: 4096,
    userData: 1n,
  };
  for (const s of [rd, nop(2), nop(3)]) f.ring.pushSqe(encodeSqe(s));
  assert.equal(f.ring.submit(0), 3);
  assert.deepEqual(pairs(f.ring.reap()), [[2, 0], [3, 0]]);
  assert.equal(f.ring.inflight, 1);
  assert.equal(f.ring.submit(1), 0);
  assert.deepEqual(pairs(f.ring.reap()), [[1, 4096]]);
  assert.equal(f.ring.inflight, 0);
});

Deno.test("async: IO_DRAIN waits for the earlier read; later requests wait behind it", () => {
  using f = fixture();
  const rd: SqeFields = {
    opcode: IORING_OP.READ,
    fd: f.fd,
    addr: f.mem.start,
    len: 4096,
    userData: 20n,
  };
  for (const s of [rd, nop(21, IOSQE.IO_DRAIN), nop(22)]) f.ring.pushSqe(encodeSqe(s));
  assert.equal(f.ring.submit(0), 3);
  assert.deepEqual(f.ring.reap(), []);
  assert.equal(f.ring.submit(3), 0);
  assert.deepEqual(pairs(f.ring.reap()), [[20, 4096], [21, 0], [22, 0]]);
});

Deno.test("async: a link waits for the device; write then read back byte-exact", () => {
  using f = fixture();
  const data = pattern(8192, 8);
  f.mem.bytes.set(data);
  const w: SqeFields = {
    opcode: IORING_OP.WRITE,
    fd: f.fd,
    addr: f.mem.start,
    len: 8192,
    off: 65536n,
    userData: 1n,
    flags: IOSQE.IO_LINK,
  };
  const r: SqeFields = {
    opcode: IORING_OP.READ,
    fd: f.fd,
    addr: f.mem.start + 16384n,
    len: 8192,
    off: 65536n,
    userData: 2n,
    flags: IOSQE.IO_LINK,
  };
  for (const s of [w, r, nop(3)]) f.ring.pushSqe(encodeSqe(s));
  assert.equal(f.ring.submit(3), 3);
  assert.deepEqual(pairs(f.ring.reap()), [[1, 8192], [2, 8192], [3, 0]]);
  assert.deepEqual(f.mem.bytes.subarray(16384, 16384 + 8192), data);
});

Deno.test("async: a failed device write breaks the chain with -ECANCELED", () => {
  using f = fixture();
  // 100 bytes is not a multiple of the logical block size: -EINVAL from the block layer.
  const w: SqeFields = {
    opcode: IORING_OP.WRITE,
    fd: f.fd,
    addr: f.mem.start,
    len: 100,
    userData: 1n,
    flags: IOSQE.IO_LINK,
  };
  for (const s of [w, nop(2)]) f.ring.pushSqe(encodeSqe(s));
  assert.equal(f.ring.submit(2), 2);
  assert.deepEqual(pairs(f.ring.reap()), [[1, -22], [2, -125]]);
});

Deno.test("async: fsync on the block device completes", () => {
  using f = fixture();
  f.ring.pushSqe(encodeSqe({ opcode: IORING_OP.FSYNC, fd: f.fd, userData: 9n }));
  assert.equal(f.ring.submit(1), 1);
  assert.deepEqual(pairs(f.ring.reap()), [[9, 0]]);
});
