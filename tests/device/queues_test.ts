import assert from "node:assert/strict";
import { Host } from "./harness.ts";
import {
  NVME_ADMIN,
  NVME_CQ_IRQ_ENABLED,
  NVME_QUEUE_PHYS_CONTIG,
  NVME_SC,
  NVME_STATUS_DNR,
} from "../../sim/device/nvme_spec.ts";

const PC = NVME_QUEUE_PHYS_CONTIG;
const DNR = NVME_STATUS_DNR;

function createCq(h: Host, qid: number, size: number, prp1: bigint, flags: number, vec: number) {
  return h.run(0, {
    opcode: NVME_ADMIN.CREATE_CQ,
    prp1,
    cdw10: ((size - 1) << 16) | qid,
    cdw11: (vec << 16) | flags,
  }).status;
}

function createSq(h: Host, qid: number, size: number, prp1: bigint, flags: number, cqid: number) {
  return h.run(0, {
    opcode: NVME_ADMIN.CREATE_SQ,
    prp1,
    cdw10: ((size - 1) << 16) | qid,
    cdw11: (cqid << 16) | flags,
  }).status;
}

Deno.test("Create I/O CQ: each check returns its status", () => {
  const h = new Host({ maxQueues: 2, mqes: 64 });
  h.enable();
  const m = h.alloc(1);
  const ien = PC | NVME_CQ_IRQ_ENABLED;
  assert.equal(createCq(h, 0, 16, m.addr, ien, 0), NVME_SC.QID_INVALID | DNR);
  assert.equal(createCq(h, 3, 16, m.addr, ien, 0), NVME_SC.QID_INVALID | DNR);
  assert.equal(createCq(h, 1, 1, m.addr, ien, 1), NVME_SC.QUEUE_SIZE | DNR);
  assert.equal(createCq(h, 1, 65, m.addr, ien, 1), NVME_SC.QUEUE_SIZE | DNR);
  assert.equal(createCq(h, 1, 16, m.addr + 16n, ien, 1), NVME_SC.PRP_INVALID_OFFSET | DNR);
  assert.equal(createCq(h, 1, 16, m.addr, ien, 3), NVME_SC.INVALID_VECTOR | DNR);
  assert.equal(createCq(h, 1, 16, m.addr, NVME_CQ_IRQ_ENABLED, 1), NVME_SC.INVALID_FIELD | DNR);
  assert.equal(createCq(h, 1, 64, m.addr, ien, 2), 0);
  assert.equal(createCq(h, 1, 16, m.addr, ien, 1), NVME_SC.QID_INVALID | DNR); // exists
});

Deno.test("Create I/O SQ: each check returns its status, CQ check first", () => {
  const h = new Host({ maxQueues: 2, mqes: 64 });
  h.enable();
  const m = h.alloc(1);
  // Bad CQ wins over a bad SQ id.
  assert.equal(createSq(h, 0, 16, m.addr, PC, 1), NVME_SC.CQ_INVALID | DNR);
  assert.equal(createSq(h, 1, 16, m.addr, PC, 0), NVME_SC.CQ_INVALID | DNR); // admin CQ
  assert.equal(createCq(h, 1, 16, h.alloc(1).addr, PC, 1), 0);
  assert.equal(createSq(h, 0, 16, m.addr, PC, 1), NVME_SC.QID_INVALID | DNR);
  assert.equal(createSq(h, 3, 16, m.addr, PC, 1), NVME_SC.QID_INVALID | DNR);
  assert.equal(createSq(h, 1, 1, m.addr, PC, 1), NVME_SC.QUEUE_SIZE | DNR);
  assert.equal(createSq(h, 1, 65, m.addr, PC, 1), NVME_SC.QUEUE_SIZE | DNR);
  assert.equal(createSq(h, 1, 16, m.addr + 4096n + 8n, PC, 1), NVME_SC.PRP_INVALID_OFFSET | DNR);
  assert.equal(createSq(h, 1, 16, m.addr, 0, 1), NVME_SC.INVALID_FIELD | DNR);
  assert.equal(createSq(h, 1, 16, m.addr, PC, 1), 0);
  assert.equal(createSq(h, 1, 16, m.addr, PC, 1), NVME_SC.QID_INVALID | DNR);
  // Two SQs may share one CQ.
  assert.equal(createSq(h, 2, 16, h.alloc(1).addr, PC, 1), 0);
});

Deno.test("Delete SQ/CQ: invalid id, CQ still in use, then success", () => {
  const h = Host.ready({ maxQueues: 2 });
  const del = (op: number, qid: number) => h.run(0, { opcode: op, cdw10: qid }).status;
  assert.equal(del(NVME_ADMIN.DELETE_SQ, 0), NVME_SC.QID_INVALID | DNR);
  assert.equal(del(NVME_ADMIN.DELETE_SQ, 2), NVME_SC.QID_INVALID | DNR);
  assert.equal(del(NVME_ADMIN.DELETE_CQ, 0), NVME_SC.QID_INVALID | DNR);
  assert.equal(del(NVME_ADMIN.DELETE_CQ, 1), NVME_SC.INVALID_QUEUE); // SQ 1 still uses it
  assert.equal(del(NVME_ADMIN.DELETE_SQ, 1), 0);
  assert.equal(del(NVME_ADMIN.DELETE_CQ, 1), 0);
  assert.equal(del(NVME_ADMIN.DELETE_CQ, 1), NVME_SC.QID_INVALID | DNR);
  // The ids are free again.
  assert.deepEqual(h.createIoQueuePair(1), [0, 0]);
});
