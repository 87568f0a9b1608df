import assert from "node:assert/strict";
import { Host } from "./harness.ts";
import { NVME_REG } from "../../sim/device/port.ts";
import { CSTS, decodeCap, doorbellOffset, encodeCc } from "../../sim/device/regs.ts";

const GOOD_CC = { en: true, css: 0, mps: 0, shn: 0, iosqes: 6, iocqes: 4 };

Deno.test("CAP and VS report the configured controller", () => {
  const h = new Host({ mqes: 256 });
  const cap = decodeCap(h.ctrl.readReg64(NVME_REG.CAP));
  assert.deepEqual(cap, { mqes: 255, cqr: true, to: 15, dstrd: 0, css: 1, mpsmin: 0, mpsmax: 4 });
  assert.equal(h.ctrl.readReg32(NVME_REG.VS), 0x00010400);
  assert.equal(h.ctrl.readReg32(NVME_REG.CSTS), 0);
});

Deno.test("CC.EN 0->1 with a good configuration sets CSTS.RDY and reads back ASQ/ACQ", () => {
  const h = new Host();
  assert.equal(h.enable(8, 4), CSTS.RDY);
  const q = h.queues.get(0)!;
  assert.equal(h.ctrl.readReg64(NVME_REG.ASQ), q.sq.addr);
  assert.equal(h.ctrl.readReg64(NVME_REG.ACQ), q.cq.addr);
  assert.equal(h.ctrl.readReg32(NVME_REG.AQA), (3 << 16) | 7);
});

Deno.test("bad CC or admin queue registers set CSTS.CFS, not RDY", () => {
  const bad = [
    encodeCc({ ...GOOD_CC, mps: 5 }), // above MPSMAX
    encodeCc({ ...GOOD_CC, iosqes: 7 }),
    encodeCc({ ...GOOD_CC, iocqes: 5 }),
    encodeCc({ ...GOOD_CC, css: 1 }),
  ];
  for (const cc of bad) {
    const h = new Host();
    assert.equal(h.enable(16, 16, cc), CSTS.CFS, `cc 0x${cc.toString(16)}`);
    assert.equal(h.ctrl.poll(), 0);
  }
  // Unaligned ASQ
  const h = new Host();
  const r = h.alloc(1);
  h.ctrl.writeReg32(NVME_REG.AQA, (15 << 16) | 15);
  h.ctrl.writeReg64(NVME_REG.ASQ, r.addr + 64n);
  h.ctrl.writeReg64(NVME_REG.ACQ, r.addr);
  h.ctrl.writeReg32(NVME_REG.CC, encodeCc(GOOD_CC));
  assert.equal(h.ctrl.readReg32(NVME_REG.CSTS), CSTS.CFS);
  // AQA with a one-entry admin SQ
  const h2 = new Host();
  h2.ctrl.writeReg32(NVME_REG.AQA, 15 << 16);
  h2.ctrl.writeReg64(NVME_REG.ASQ, r.addr);
  h2.ctrl.writeReg64(NVME_REG.ACQ, r.addr);
  h2.ctrl.writeReg32(NVME_REG.CC, encodeCc(GOOD_CC));
  assert.equal(h2.ctrl.readReg32(NVME_REG.CSTS), CSTS.CFS);
});

Deno.test("CC.EN 1->0 resets: queues are gone, CSTS clears, re-enable works", () => {
  const h = Host.ready();
  h.ctrl.writeReg32(NVME_REG.CC, 0);
  assert.equal(h.ctrl.readReg32(NVME_REG.CSTS), 0);
  assert.equal(h.ctrl.inFlight, 0);
  assert.equal(h.enable(), CSTS.RDY);
  // I/O queue 1 no longer exists: its doorbell is invalid.
  const before = h.ctrl.invalidDoorbellWrites;
  h.ctrl.writeReg32(doorbellOffset(1, false), 1);
  assert.equal(h.ctrl.invalidDoorbellWrites, before + 1);
  // Creating it again succeeds (a fresh controller).
  assert.deepEqual(h.createIoQueuePair(1), [0, 0]);
});

Deno.test("shutdown notification reports SHST complete", () => {
  const h = new Host();
  h.enable();
  h.ctrl.writeReg32(NVME_REG.CC, encodeCc({ ...GOOD_CC, shn: 1 }));
  assert.equal(h.ctrl.readReg32(NVME_REG.CSTS), CSTS.RDY | CSTS.SHST_CMPLT);
});

Deno.test("admin SQE fetch from an unmapped address is a fatal status (CFS)", () => {
  const h = new Host();
  const cq = h.alloc(1);
  h.ctrl.writeReg32(NVME_REG.AQA, (15 << 16) | 15);
  h.ctrl.writeReg64(NVME_REG.ASQ, 0x7_0000_0000n); // no frame there
  h.ctrl.writeReg64(NVME_REG.ACQ, cq.addr);
  h.ctrl.writeReg32(NVME_REG.CC, encodeCc(GOOD_CC));
  assert.equal(h.ctrl.readReg32(NVME_REG.CSTS), CSTS.RDY);
  h.ctrl.writeReg32(doorbellOffset(0, false), 1);
  assert.equal(h.ctrl.poll(), 0);
  assert.equal(h.ctrl.readReg32(NVME_REG.CSTS), CSTS.RDY | CSTS.CFS);
  assert.equal(h.kernel.stats.counters.deviceErrors, 1);
});
