import assert from "node:assert/strict";
import { Host, pattern, type Region } from "./harness.ts";
import {
  encodeSglDescriptor,
  NVME_CMD,
  NVME_SC,
  NVME_SGL_TYPE,
  NVME_STATUS_DNR,
  type SglDescriptor,
} from "../../sim/device/nvme_spec.ts";

const T = NVME_SGL_TYPE;
const DNR = NVME_STATUS_DNR;

function putDescs(r: Region, off: number, ds: SglDescriptor[]): void {
  const b = new Uint8Array(16 * ds.length);
  ds.forEach((d, i) => encodeSglDescriptor(d, b, 16 * i));
  r.write(off, b);
}

function io(h: Host, opcode: number, sgl: SglDescriptor, slba: bigint, nlb0: number) {
  return h.run(1, { opcode, nsid: 1, sgl, slba, nlb0 });
}

Deno.test("SGL Data Block in the command: write and read back", () => {
  const h = Host.ready();
  const buf = h.alloc(2);
  const data = pattern(8192, 11);
  buf.write(0, data);
  let c = io(h, NVME_CMD.WRITE, { addr: buf.addr, length: 8192, type: T.DATA_BLOCK }, 4n, 1);
  assert.equal(c.status, 0);
  assert.deepEqual(h.ctrl.mediaRead(1, 4 * 4096, 8192), data);
  const out = h.alloc(3);
  // A data block that is not page aligned is fine for an SGL.
  c = io(h, NVME_CMD.READ, { addr: out.addr + 100n, length: 8192, type: T.DATA_BLOCK }, 4n, 1);
  assert.equal(c.status, 0);
  assert.deepEqual(out.read(100, 8192), data);
  assert.deepEqual(out.read(0, 100), new Uint8Array(100));
});

Deno.test("SGL Segment -> Last Segment chain of data blocks", () => {
  const h = Host.ready();
  const a = h.alloc(1);
  const b = h.alloc(1);
  const c3 = h.alloc(1);
  const seg1 = h.alloc(1);
  const seg2 = h.alloc(1);
  const data = pattern(8192, 12);
  a.write(0, data.subarray(0, 4096));
  b.write(0, data.subarray(4096, 6144));
  c3.write(1024, data.subarray(6144));
  putDescs(seg1, 0, [
    { addr: a.addr, length: 4096, type: T.DATA_BLOCK },
    { addr: seg2.addr + 64n, length: 32, type: T.LAST_SEGMENT },
  ]);
  putDescs(seg2, 64, [
    { addr: b.addr, length: 2048, type: T.DATA_BLOCK },
    { addr: c3.addr + 1024n, length: 2048, type: T.DATA_BLOCK },
  ]);
  const c = io(h, NVME_CMD.WRITE, { addr: seg1.addr, length: 32, type: T.SEGMENT }, 0n, 1);
  assert.equal(c.status, 0);
  assert.deepEqual(h.ctrl.mediaRead(1, 0, 8192), data);
});

Deno.test("SGL Bit Bucket discards read data; in a write it is an invalid type", () => {
  const h = Host.ready();
  const src = h.alloc(1);
  const data = pattern(4096, 13);
  src.write(0, data);
  io(h, NVME_CMD.WRITE, { addr: src.addr, length: 4096, type: T.DATA_BLOCK }, 0n, 0);
  const out = h.alloc(1);
  const seg = h.alloc(1);
  putDescs(seg, 0, [
    { addr: out.addr, length: 1024, type: T.DATA_BLOCK },
    { addr: 0n, length: 2048, type: T.BIT_BUCKET },
    { addr: out.addr + 2048n, length: 1024, type: T.DATA_BLOCK },
  ]);
  let c = io(h, NVME_CMD.READ, { addr: seg.addr, length: 48, type: T.LAST_SEGMENT }, 0n, 0);
  assert.equal(c.status, 0);
  assert.deepEqual(out.read(0, 1024), data.subarray(0, 1024));
  assert.deepEqual(out.read(1024, 1024), new Uint8Array(1024));
  assert.deepEqual(out.read(2048, 1024), data.subarray(3072));
  c = io(h, NVME_CMD.WRITE, { addr: seg.addr, length: 48, type: T.LAST_SEGMENT }, 1n, 0);
  assert.equal(c.status, NVME_SC.SGL_INVALID_TYPE | DNR);
  assert.deepEqual(h.ctrl.mediaRead(1, 4096, 4096), new Uint8Array(4096));
});

Deno.test("SGL errors: bad type, length too small or too long, segment rules, offset", () => {
  const h = Host.ready();
  const buf = h.alloc(2);
  const seg = h.alloc(1);
  const W = NVME_CMD.WRITE;
  // Keyed Data Block (fabrics only) in the command: SGL Descriptor Type Invalid.
  let c = io(h, W, { addr: buf.addr, length: 4096, type: T.KEYED_DATA_BLOCK }, 0n, 0);
  assert.equal(c.status, NVME_SC.SGL_INVALID_TYPE | DNR);
  assert.equal(c.sc, 0x11);
  // A reserved type inside a segment.
  putDescs(seg, 0, [{ addr: buf.addr, length: 4096, type: 0x7 }]);
  c = io(h, W, { addr: seg.addr, length: 16, type: T.LAST_SEGMENT }, 0n, 0);
  assert.equal(c.status, NVME_SC.SGL_INVALID_TYPE | DNR);
  // Data Block shorter than the transfer: Data SGL Length Invalid (0x0f).
  c = io(h, W, { addr: buf.addr, length: 4095, type: T.DATA_BLOCK }, 0n, 0);
  assert.equal(c.status, NVME_SC.SGL_INVALID_DATA | DNR);
  assert.equal(c.sc, 0x0f);
  // More data than the transfer (no excess-length support).
  putDescs(seg, 0, [
    { addr: buf.addr, length: 4096, type: T.DATA_BLOCK },
    { addr: buf.addr + 4096n, length: 512, type: T.DATA_BLOCK },
  ]);
  c = io(h, W, { addr: seg.addr, length: 32, type: T.LAST_SEGMENT }, 0n, 0);
  assert.equal(c.status, NVME_SC.SGL_INVALID_DATA | DNR);
  // Segment length not a multiple of 16: Invalid SGL Segment Descriptor.
  c = io(h, W, { addr: seg.addr, length: 24, type: T.SEGMENT }, 0n, 0);
  assert.equal(c.status, NVME_SC.SGL_INVALID_LAST | DNR);
  // A Last Segment that chains further.
  putDescs(seg, 0, [
    { addr: buf.addr, length: 2048, type: T.DATA_BLOCK },
    { addr: seg.addr + 256n, length: 16, type: T.SEGMENT },
  ]);
  c = io(h, W, { addr: seg.addr, length: 32, type: T.LAST_SEGMENT }, 0n, 0);
  assert.equal(c.status, NVME_SC.SGL_INVALID_LAST | DNR);
  // A segment descriptor that is not last in its segment.
  putDescs(seg, 0, [
    { addr: seg.addr + 256n, length: 16, type: T.SEGMENT },
    { addr: buf.addr, length: 4096, type: T.DATA_BLOCK },
  ]);
  c = io(h, W, { addr: seg.addr, length: 32, type: T.LAST_SEGMENT }, 0n, 0);
  assert.equal(c.status, NVME_SC.SGL_INVALID_COUNT | DNR);
  // Offset subtype (in-capsule data, fabrics only): SGL Offset Invalid.
  c = io(h, W, { addr: 0n, length: 4096, type: T.DATA_BLOCK, subtype: 1 }, 0n, 0);
  assert.equal(c.status, NVME_SC.SGL_INVALID_OFFSET | DNR);
  // A segment in a hole: Data Transfer Error.
  c = io(h, W, { addr: 0x7_0000_0000n, length: 32, type: T.SEGMENT }, 0n, 0);
  assert.equal(c.status, NVME_SC.DATA_XFER_ERROR);
  // A segment chain that loops is stopped by the segment limit.
  putDescs(seg, 512, [
    { addr: buf.addr, length: 8, type: T.DATA_BLOCK },
    { addr: seg.addr + 512n, length: 32, type: T.SEGMENT },
  ]);
  c = io(h, W, { addr: seg.addr + 512n, length: 32, type: T.SEGMENT }, 0n, 0);
  assert.equal(c.status, NVME_SC.SGL_INVALID_COUNT | DNR);
  assert.deepEqual(h.ctrl.mediaRead(1, 0, 4096), new Uint8Array(4096));
});

Deno.test("SGL on a controller without SGL support is Invalid Field", () => {
  const h = Host.ready({ sgls: false });
  const buf = h.alloc(1);
  const c = io(h, NVME_CMD.WRITE, { addr: buf.addr, length: 4096, type: T.DATA_BLOCK }, 0n, 0);
  assert.equal(c.status, NVME_SC.INVALID_FIELD | DNR);
});
