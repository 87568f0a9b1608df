import assert from "node:assert/strict";
import { Host, pattern, putU64s } from "./harness.ts";
import { NVME_CMD, NVME_SC, NVME_STATUS_DNR } from "../../sim/device/nvme_spec.ts";

const DNR = NVME_STATUS_DNR;
const HOLE = 0x7_0000_0000n; // a bus address with no frame behind it

Deno.test("write then read back exact bytes, 4096-byte LBAs, PRP1 only", () => {
  const h = Host.ready();
  const src = h.alloc(1);
  const dst = h.alloc(1);
  const data = pattern(4096, 1);
  src.write(0, data);
  let c = h.run(1, { opcode: NVME_CMD.WRITE, nsid: 1, prp1: src.addr, slba: 10n, nlb0: 0 });
  assert.equal(c.status, 0);
  assert.equal(c.sqId, 1);
  assert.deepEqual(h.ctrl.mediaRead(1, 10 * 4096, 4096), data);
  assert.deepEqual(h.ctrl.mediaRead(1, 9 * 4096, 4096), new Uint8Array(4096));
  c = h.run(1, { opcode: NVME_CMD.READ, nsid: 1, prp1: dst.addr, slba: 10n, nlb0: 0 });
  assert.equal(c.status, 0);
  assert.deepEqual(dst.read(0, 4096), data);
});

Deno.test("write then read back exact bytes, 512-byte LBAs, offset PRP1", () => {
  const h = Host.ready({ namespaces: [{ lbaSize: 512, sizeBytes: 1n << 20n }] });
  const buf = h.alloc(1);
  const data = pattern(1536, 2);
  buf.write(512, data);
  let c = h.run(1, {
    opcode: NVME_CMD.WRITE,
    nsid: 1,
    prp1: buf.addr + 512n,
    slba: 5n,
    nlb0: 2,
  });
  assert.equal(c.status, 0);
  assert.deepEqual(h.ctrl.mediaRead(1, 5 * 512, 1536), data);
  assert.deepEqual(h.ctrl.mediaRead(1, 4 * 512, 512), new Uint8Array(512));
  assert.deepEqual(h.ctrl.mediaRead(1, 8 * 512, 512), new Uint8Array(512));
  const out = h.alloc(1);
  out.write(0, new Uint8Array(4096).fill(0xcc));
  c = h.run(1, { opcode: NVME_CMD.READ, nsid: 1, prp1: out.addr + 1024n, slba: 6n, nlb0: 0 });
  assert.equal(c.status, 0);
  assert.deepEqual(out.read(1024, 512), data.subarray(512, 1024));
  assert.deepEqual(out.read(0, 1024), new Uint8Array(1024).fill(0xcc));
  assert.deepEqual(out.read(1536, 2560), new Uint8Array(2560).fill(0xcc));
});

Deno.test("PRP1 + PRP2: a transfer crossing exactly one page boundary", () => {
  const h = Host.ready();
  const a = h.alloc(1);
  const b = h.alloc(1);
  const data = pattern(4096, 3);
  a.write(1024, data.subarray(0, 3072));
  b.write(0, data.subarray(3072));
  const c = h.run(1, {
    opcode: NVME_CMD.WRITE,
    nsid: 1,
    prp1: a.addr + 1024n,
    prp2: b.addr,
    slba: 0n,
    nlb0: 0,
  });
  assert.equal(c.status, 0);
  assert.deepEqual(h.ctrl.mediaRead(1, 0, 4096), data);
});

Deno.test("PRP list: PRP2 points at a list (with an offset) of page entries", () => {
  const h = Host.ready();
  const pages = [h.alloc(1), h.alloc(1), h.alloc(1), h.alloc(1)];
  const list = h.alloc(1);
  putU64s(list, 8, pages.slice(1).map((p) => p.addr));
  const out = [h.alloc(1), h.alloc(1), h.alloc(1), h.alloc(1)];
  const outList = h.alloc(1);
  putU64s(outList, 0, out.slice(1).map((p) => p.addr));
  const data = pattern(16384, 4);
  pages.forEach((p, i) => p.write(0, data.subarray(i * 4096, (i + 1) * 4096)));
  let c = h.run(1, {
    opcode: NVME_CMD.WRITE,
    nsid: 1,
    prp1: pages[0].addr,
    prp2: list.addr + 8n,
    slba: 100n,
    nlb0: 3,
  });
  assert.equal(c.status, 0);
  assert.deepEqual(h.ctrl.mediaRead(1, 100 * 4096, 16384), data);
  c = h.run(1, {
    opcode: NVME_CMD.READ,
    nsid: 1,
    prp1: out[0].addr,
    prp2: outList.addr,
    slba: 100n,
    nlb0: 3,
  });
  assert.equal(c.status, 0);
  out.forEach((p, i) => assert.deepEqual(p.read(0, 4096), data.subarray(i * 4096, (i + 1) * 4096)));
});

Deno.test("PRP list chained through the last entry of a list page", () => {
  const h = Host.ready();
  const n = 8;
  const pages = Array.from({ length: n }, () => h.alloc(1));
  const list1 = h.alloc(1);
  const list2 = h.alloc(1);
  // list1 starts 16 bytes before its page end: one data entry, then the chain pointer.
  putU64s(list1, 4080, [pages[1].addr, list2.addr]);
  putU64s(list2, 0, pages.slice(2).map((p) => p.addr));
  const data = pattern(n * 4096, 5);
  pages.forEach((p, i) => p.write(0, data.subarray(i * 4096, (i + 1) * 4096)));
  const c = h.run(1, {
    opcode: NVME_CMD.WRITE,
    nsid: 1,
    prp1: pages[0].addr,
    prp2: list1.addr + 4080n,
    slba: 7n,
    nlb0: n - 1,
  });
  assert.equal(c.status, 0);
  assert.deepEqual(h.ctrl.mediaRead(1, 7 * 4096, n * 4096), data);
});

Deno.test("PRP offset rules: list entry, chain pointer, PRP2 page, PRP1 dword -> 0x13 DNR", () => {
  const h = Host.ready();
  const p = [h.alloc(1), h.alloc(1), h.alloc(1), h.alloc(1)];
  const list = h.alloc(1);
  p[0].write(0, pattern(4096, 9));
  const w = (prp1: bigint, prp2: bigint, nlb0: number) =>
    h.run(1, { opcode: NVME_CMD.WRITE, nsid: 1, prp1, prp2, slba: 0n, nlb0 }).status;
  const bad = NVME_SC.PRP_INVALID_OFFSET | DNR;
  // A list entry with a nonzero offset.
  putU64s(list, 0, [p[1].addr, p[2].addr + 0x200n, p[3].addr]);
  assert.equal(w(p[0].addr, list.addr, 3), bad);
  // A chain pointer with a nonzero offset.
  putU64s(list, 4088, [p[1].addr]);
  putU64s(list, 4080, [p[2].addr]);
  const list2 = h.alloc(1);
  putU64s(list, 4088, [list2.addr + 8n]);
  assert.equal(w(p[0].addr, list.addr + 4080n, 3), bad);
  // PRP2 as the second page must have no offset.
  assert.equal(w(p[0].addr + 512n, p[1].addr + 512n, 0), bad);
  // PRP1 must be dword aligned; so must a list pointer.
  assert.equal(w(p[0].addr + 2n, 0n, 0), bad);
  assert.equal(w(p[0].addr, list.addr + 2n, 3), bad);
  // None of these touched the media.
  assert.deepEqual(h.ctrl.mediaRead(1, 0, 16384), new Uint8Array(16384));
});

Deno.test("LBA out of range -> 0x80 with DNR; MDTS -> Invalid Field; bad NSID; bad opcode", () => {
  const h = Host.ready({ namespaces: [{ lbaSize: 4096, sizeBytes: 1n << 20n }], mdts: 5 });
  const b = h.alloc(33);
  const rw = (over: Record<string, unknown>) =>
    h.run(1, { opcode: NVME_CMD.READ, nsid: 1, prp1: b.addr, slba: 0n, nlb0: 0, ...over });
  const c = rw({ slba: 255n, nlb0: 1 });
  assert.equal(c.status, NVME_SC.LBA_RANGE | DNR);
  assert.equal(c.sc, 0x80);
  assert.equal(c.sct, 0);
  assert.equal(c.dnr, true);
  assert.equal(rw({ slba: 1n << 63n }).status, NVME_SC.LBA_RANGE | DNR);
  assert.equal(rw({ slba: 255n }).status, 0); // last block is fine
  assert.equal(rw({ nlb0: 32 }).status, NVME_SC.INVALID_FIELD | DNR); // 132 KiB > 128 KiB
  assert.equal(rw({ nsid: 2 }).status, NVME_SC.INVALID_NS | DNR);
  assert.equal(rw({ nsid: 0 }).status, NVME_SC.INVALID_NS | DNR);
  assert.equal(rw({ opcode: 0x7e }).status, NVME_SC.INVALID_OPCODE | DNR);
  assert.equal(rw({ flags: 1 }).status, NVME_SC.INVALID_FIELD | DNR); // fused
  assert.equal(rw({ psdt: 3 }).status, NVME_SC.INVALID_FIELD | DNR); // reserved PSDT
});

Deno.test("DMA fault -> Data Transfer Error (no DNR), no media or memory change", () => {
  const h = Host.ready();
  const a = h.alloc(1);
  a.write(0, pattern(4096, 6));
  // Write whose second page is a hole: the media is untouched.
  let c = h.run(1, {
    opcode: NVME_CMD.WRITE,
    nsid: 1,
    prp1: a.addr,
    prp2: HOLE,
    slba: 3n,
    nlb0: 1,
  });
  assert.equal(c.status, NVME_SC.DATA_XFER_ERROR);
  assert.equal(c.dnr, false);
  assert.deepEqual(h.ctrl.mediaRead(1, 3 * 4096, 8192), new Uint8Array(8192));
  // Read whose PRP list page is a hole: no data page is written.
  h.run(1, { opcode: NVME_CMD.WRITE, nsid: 1, prp1: a.addr, slba: 0n, nlb0: 0 });
  const out = h.alloc(1);
  out.write(0, new Uint8Array(4096).fill(0x77));
  c = h.run(1, { opcode: NVME_CMD.READ, nsid: 1, prp1: out.addr, prp2: HOLE, slba: 0n, nlb0: 2 });
  assert.equal(c.status, NVME_SC.DATA_XFER_ERROR);
  assert.deepEqual(out.read(0, 4096), new Uint8Array(4096).fill(0x77));
  // Read into a hole at PRP1: reported, nothing else written.
  c = h.run(1, { opcode: NVME_CMD.READ, nsid: 1, prp1: HOLE, prp2: out.addr, slba: 0n, nlb0: 1 });
  assert.equal(c.status, NVME_SC.DATA_XFER_ERROR);
  assert.deepEqual(out.read(0, 4096), new Uint8Array(4096).fill(0x77));
  assert.equal(h.kernel.stats.counters.deviceErrors, 3);
});

Deno.test("Flush succeeds for a namespace and for all; bad NSID is rejected", () => {
  const h = Host.ready();
  assert.equal(h.run(1, { opcode: NVME_CMD.FLUSH, nsid: 1 }).status, 0);
  assert.equal(h.run(1, { opcode: NVME_CMD.FLUSH, nsid: 0xffffffff }).status, 0);
  assert.equal(h.run(1, { opcode: NVME_CMD.FLUSH, nsid: 5 }).status, NVME_SC.INVALID_NS | DNR);
});

Deno.test("device DMA counters: one SQE read, one data read, one CQE write", () => {
  const h = Host.ready();
  const a = h.alloc(1);
  const before = { ...h.kernel.stats.counters };
  h.run(1, { opcode: NVME_CMD.WRITE, nsid: 1, prp1: a.addr, slba: 0n, nlb0: 0 });
  const c = h.kernel.stats.counters;
  assert.equal(c.deviceDmaReads - before.deviceDmaReads, 2);
  assert.equal(c.deviceDmaWrites - before.deviceDmaWrites, 1);
  assert.equal(c.deviceErrors - before.deviceErrors, 0);
});
