import assert from "node:assert/strict";
import { Host } from "./harness.ts";
import {
  NVME_ADMIN,
  NVME_FEAT,
  NVME_ID_CNS,
  NVME_SC,
  NVME_STATUS_DNR,
} from "../../sim/device/nvme_spec.ts";
import { ID_CTRL, ID_NS, SGLS } from "../../sim/device/identify.ts";

function u32(b: Uint8Array, off: number): number {
  return new DataView(b.buffer, b.byteOffset).getUint32(off, true);
}
function u64(b: Uint8Array, off: number): bigint {
  return new DataView(b.buffer, b.byteOffset).getBigUint64(off, true);
}

Deno.test("Identify Controller reports MDTS, SQES/CQES, NN, SGLS, VER", () => {
  const h = new Host({
    mdts: 6,
    namespaces: [{ lbaSize: 512, sizeBytes: 1n << 20n }, {
      lbaSize: 4096,
      sizeBytes: 1n << 24n,
    }],
  });
  h.enable();
  const buf = h.alloc(1);
  const cqe = h.run(0, { opcode: NVME_ADMIN.IDENTIFY, prp1: buf.addr, cdw10: NVME_ID_CNS.CTRL });
  assert.equal(cqe.status, 0);
  assert.equal(cqe.sqId, 0);
  assert.equal(cqe.sqHead, 1);
  const d = buf.read(0, 4096);
  assert.equal(d[ID_CTRL.MDTS], 6);
  assert.equal(d[ID_CTRL.SQES], 0x66);
  assert.equal(d[ID_CTRL.CQES], 0x44);
  assert.equal(u32(d, ID_CTRL.NN), 2);
  assert.equal(u32(d, ID_CTRL.VER), 0x00010400);
  assert.equal(u32(d, ID_CTRL.SGLS), SGLS.SUPPORTED | SGLS.BIT_BUCKET);
  assert.equal(new TextDecoder().decode(d.subarray(ID_CTRL.MN, ID_CTRL.MN + 14)), "premap testbed");

  const h2 = new Host({ sgls: false });
  h2.enable();
  const b2 = h2.alloc(1);
  h2.run(0, { opcode: NVME_ADMIN.IDENTIFY, prp1: b2.addr, cdw10: NVME_ID_CNS.CTRL });
  assert.equal(u32(b2.read(0, 4096), ID_CTRL.SGLS), 0);
});

Deno.test("Identify Namespace reports size and LBA format; bad NSID is Invalid Namespace", () => {
  const h = new Host({
    namespaces: [{ lbaSize: 512, sizeBytes: 1n << 20n }, {
      lbaSize: 4096,
      sizeBytes: 1n << 24n,
    }],
  });
  h.enable();
  const buf = h.alloc(1);
  for (const [nsid, nlb, lbads] of [[1, 2048n, 9], [2, 4096n, 12]] as const) {
    const c = h.run(0, { opcode: NVME_ADMIN.IDENTIFY, nsid, prp1: buf.addr, cdw10: 0 });
    assert.equal(c.status, 0);
    const d = buf.read(0, 4096);
    assert.equal(u64(d, ID_NS.NSZE), nlb);
    assert.equal(u64(d, ID_NS.NCAP), nlb);
    assert.equal(d[ID_NS.NLBAF], 0);
    assert.equal(u32(d, ID_NS.LBAF), lbads << 16);
  }
  for (const nsid of [0, 3, 0xffffffff]) {
    const c = h.run(0, { opcode: NVME_ADMIN.IDENTIFY, nsid, prp1: buf.addr, cdw10: 0 });
    assert.equal(c.status, NVME_SC.INVALID_NS | NVME_STATUS_DNR, `nsid ${nsid}`);
    assert.equal(c.sc, 0x0b);
    assert.equal(c.dnr, true);
  }
});

Deno.test("Identify active namespace list lists NSIDs above CDW1.NSID", () => {
  const ns = { lbaSize: 4096 as const, sizeBytes: 1n << 20n };
  const h = new Host({ namespaces: [ns, ns, ns] });
  h.enable();
  const buf = h.alloc(1);
  buf.write(0, new Uint8Array(4096).fill(0xee));
  let c = h.run(0, {
    opcode: NVME_ADMIN.IDENTIFY,
    nsid: 1,
    prp1: buf.addr,
    cdw10: NVME_ID_CNS.NS_ACTIVE_LIST,
  });
  assert.equal(c.status, 0);
  const d = buf.read(0, 16);
  assert.deepEqual([u32(d, 0), u32(d, 4), u32(d, 8), u32(d, 12)], [2, 3, 0, 0]);
  c = h.run(0, {
    opcode: NVME_ADMIN.IDENTIFY,
    nsid: 0xfffffffe,
    prp1: buf.addr,
    cdw10: NVME_ID_CNS.NS_ACTIVE_LIST,
  });
  assert.equal(c.status, NVME_SC.INVALID_NS | NVME_STATUS_DNR);
});

Deno.test("Identify with an unknown CNS is Invalid Field; data crosses pages through PRP2", () => {
  const h = new Host();
  h.enable();
  const buf = h.alloc(3);
  let c = h.run(0, { opcode: NVME_ADMIN.IDENTIFY, prp1: buf.addr, cdw10: 0x55 });
  assert.equal(c.status, NVME_SC.INVALID_FIELD | NVME_STATUS_DNR);
  // 4096 bytes starting 2048 into page 0, continuing in page 2 (PRP2).
  buf.write(4096, new Uint8Array(4096).fill(0x5a));
  c = h.run(0, {
    opcode: NVME_ADMIN.IDENTIFY,
    prp1: buf.addr + 2048n,
    prp2: buf.addr + 8192n,
    cdw10: NVME_ID_CNS.CTRL,
  });
  assert.equal(c.status, 0);
  const ref = h.alloc(1);
  h.run(0, { opcode: NVME_ADMIN.IDENTIFY, prp1: ref.addr, cdw10: NVME_ID_CNS.CTRL });
  const whole = ref.read(0, 4096);
  assert.equal(whole[ID_CTRL.MDTS], 5);
  assert.deepEqual(buf.read(2048, 2048), whole.subarray(0, 2048));
  assert.deepEqual(buf.read(8192, 2048), whole.subarray(2048));
  assert.deepEqual(buf.read(0, 2048), new Uint8Array(2048)); // before PRP1 untouched
  assert.deepEqual(buf.read(4096, 4096), new Uint8Array(4096).fill(0x5a)); // page 1 untouched
});

Deno.test("unknown admin opcode is Invalid Opcode; SGL on admin is Invalid Field", () => {
  const h = new Host();
  h.enable();
  let c = h.run(0, { opcode: 0x7f });
  assert.equal(c.status, NVME_SC.INVALID_OPCODE | NVME_STATUS_DNR);
  c = h.run(0, { opcode: NVME_ADMIN.GET_LOG_PAGE });
  assert.equal(c.status, NVME_SC.INVALID_OPCODE | NVME_STATUS_DNR);
  const buf = h.alloc(1);
  c = h.run(0, {
    opcode: NVME_ADMIN.IDENTIFY,
    cdw10: 1,
    sgl: { addr: buf.addr, length: 4096, type: 0 },
  });
  assert.equal(c.status, NVME_SC.INVALID_FIELD | NVME_STATUS_DNR);
});

Deno.test("Set/Get Features Number of Queues", () => {
  const h = new Host({ maxQueues: 4 });
  h.enable();
  let c = h.run(0, {
    opcode: NVME_ADMIN.SET_FEATURES,
    cdw10: NVME_FEAT.NUM_QUEUES,
    cdw11: (63 << 16) | 63,
  });
  assert.equal(c.status, 0);
  assert.equal(c.result, (3 << 16) | 3);
  c = h.run(0, { opcode: NVME_ADMIN.GET_FEATURES, cdw10: NVME_FEAT.NUM_QUEUES });
  assert.equal(c.status, 0);
  assert.equal(c.result, (3 << 16) | 3);
  c = h.run(0, { opcode: NVME_ADMIN.SET_FEATURES, cdw10: NVME_FEAT.NUM_QUEUES, cdw11: 0xffff });
  assert.equal(c.status, NVME_SC.INVALID_FIELD | NVME_STATUS_DNR);
  c = h.run(0, { opcode: NVME_ADMIN.SET_FEATURES, cdw10: 0x42 });
  assert.equal(c.status, NVME_SC.INVALID_FIELD | NVME_STATUS_DNR);
  c = h.run(0, {
    opcode: NVME_ADMIN.SET_FEATURES,
    cdw10: (1 << 31) | NVME_FEAT.NUM_QUEUES,
    cdw11: 0,
  });
  assert.equal(c.status, NVME_SC.FEATURE_NOT_SAVEABLE | NVME_STATUS_DNR);
  assert.deepEqual(h.createIoQueuePair(1), [0, 0]);
  c = h.run(0, { opcode: NVME_ADMIN.SET_FEATURES, cdw10: NVME_FEAT.NUM_QUEUES, cdw11: 0 });
  assert.equal(c.status, NVME_SC.CMD_SEQ_ERROR | NVME_STATUS_DNR);
});
