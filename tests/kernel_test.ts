/**
 * The Kernel is the whole per-host state: two testbeds in one process, built
 * from the same seed and driven the same way, hand out the same ids (bios,
 * dma tags, descriptors) and end with the same counters. Fails if any id
 * comes from a module-level counter shared between hosts.
 */

import assert from "node:assert/strict";
import { Kernel } from "../sim/kernel.ts";
import { attachNvme } from "../sim/host.ts";
import { doSysOpen } from "../sim/fs/namei.ts";
import { filesOf } from "../sim/fs/fdtable.ts";
import { currentPlug } from "../sim/block/blk-mq.ts";
import {
  encodeMapBuffers,
  IORING_OP,
  IORING_REGISTER,
  IORING_REGISTER_MAP_BUFFERS,
  IOSQE,
  O,
} from "../sim/uapi/io_uring.ts";
import { encodeIovecs } from "../sim/uapi/ring_api.ts";
import { newRing, pairs, run } from "./io_uring/_util.ts";

const BUF = 16384;

/** Register and map a buffer, then READ_FIXED through the tag and a plain READ; what was seen. */
function session(seed: number) {
  const k = new Kernel({ seed, timing: false });
  const host = attachNvme(k, { iommu: "strict" });
  const bioIds: number[][] = [];
  host.driver.onSubmit = (ev) => {
    if (ev.rq) bioIds.push(ev.rq.bios.map((b) => b.id));
  };
  const { ring } = newRing(8, 0, {}, k);
  const fd = doSysOpen(k, host.namespaces[0].path, O.RDWR | O.DIRECT);
  const fdb = new Uint8Array(4);
  new DataView(fdb.buffer).setInt32(0, fd, true);
  assert.equal(ring.register(IORING_REGISTER.REGISTER_FILES, fdb, 1), 0);
  const mem = k.mm.mmap(2 * BUF);
  const iov = encodeIovecs([{ addr: mem.start, len: BUF }]);
  assert.equal(ring.register(IORING_REGISTER.REGISTER_BUFFERS, iov, 1), 0);
  assert.equal(ring.register(IORING_REGISTER_MAP_BUFFERS, encodeMapBuffers(0, 0, 1), 1), 0);
  const tagId = ring.bufTable.get(0)?.dma?.tag.tagId;
  const io = { fd: 0, flags: IOSQE.FIXED_FILE, len: BUF, off: 0n };
  const cqes = pairs(run(ring, [
    { ...io, opcode: IORING_OP.READ_FIXED, bufIndex: 0, addr: mem.start, userData: 1n },
    { ...io, opcode: IORING_OP.READ, addr: mem.start + BigInt(BUF), userData: 2n },
  ]));
  const seen = {
    fd,
    tagId,
    bioIds,
    cqes,
    openFds: filesOf(k).openCount,
    plugged: currentPlug(k) !== undefined,
    counters: { ...k.stats.counters },
  };
  ring[Symbol.dispose]();
  filesOf(k)[Symbol.dispose]();
  host[Symbol.dispose]();
  return seen;
}

Deno.test("kernel: two testbeds in one process get the same ids and counters", () => {
  const a = session(3);
  const b = session(3);
  assert.equal(a.tagId, 1, "the first dma tag on a host is 1");
  assert.deepEqual(a.bioIds, [[1], [2]], "bios are numbered per host from 1");
  assert.deepEqual(a.cqes, [[1, BUF], [2, BUF]]);
  assert.equal(a.plugged, false);
  assert.deepEqual(b, a);
});
