import assert from "node:assert/strict";
import { Host } from "./harness.ts";
import { NVME_ADMIN, NVME_CMD, NVME_SC, NVME_STATUS_DNR } from "../../sim/device/nvme_spec.ts";
import { CSTS, doorbellOffset } from "../../sim/device/regs.ts";
import { NVME_REG } from "../../sim/device/port.ts";

Deno.test("phase tag inverts on each pass through the CQ; SQ head reported", () => {
  const h = Host.ready({}, 4);
  const phases: number[] = [];
  const heads: number[] = [];
  for (let i = 0; i < 10; i++) {
    const c = h.run(1, { opcode: NVME_CMD.FLUSH, nsid: 1 });
    assert.equal(c.status, 0);
    phases.push(c.phase);
    heads.push(c.sqHead);
  }
  assert.deepEqual(phases, [1, 1, 1, 1, 0, 0, 0, 0, 1, 1]);
  assert.deepEqual(heads, [1, 2, 3, 0, 1, 2, 3, 0, 1, 2]);
});

Deno.test("a full CQ holds completions until the host frees room", () => {
  const h = Host.ready({}, 8);
  const q = h.queues.get(1)!;
  for (let i = 0; i < 7; i++) h.push(1, { opcode: NVME_CMD.FLUSH, nsid: 1 });
  h.ring(1);
  assert.equal(h.ctrl.inFlight, 7);
  assert.equal(h.ctrl.poll(), 7);
  assert.equal(h.ctrl.inFlight, 0);
  // Reap all seven without telling the controller (no CQ head doorbell).
  for (let i = 0; i < 7; i++) assert.notEqual(h.reap(1, false), null);
  for (let i = 0; i < 3; i++) h.push(1, { opcode: NVME_CMD.FLUSH, nsid: 1 });
  h.ring(1);
  assert.equal(h.ctrl.poll(), 0); // fetched and executed, but the CQ is full
  assert.equal(h.ctrl.inFlight, 3);
  assert.deepEqual(q.cq.read(7 * 16, 16), new Uint8Array(16)); // slot 7 not written
  h.ctrl.writeReg32(doorbellOffset(1, true), q.cqHead);
  assert.equal(h.ctrl.poll(), 3);
  assert.equal(h.ctrl.inFlight, 0);
  const got = [h.reap(1)!, h.reap(1)!, h.reap(1)!];
  assert.deepEqual(got.map((c) => c.phase), [1, 0, 0]);
  assert.deepEqual(got.map((c) => c.sqHead), [2, 2, 2]);
  assert.equal(h.reap(1), null);
});

Deno.test("invalid doorbell writes are ignored and reported as asynchronous events", () => {
  const h = Host.ready({ maxQueues: 2 }, 8);
  const aer = h.push(0, { opcode: NVME_ADMIN.ASYNC_EVENT });
  h.ring(0);
  assert.equal(h.ctrl.poll(), 0); // held
  assert.equal(h.ctrl.inFlight, 0);

  h.ctrl.writeReg32(doorbellOffset(2, false), 1); // queue 2 not created
  let c = h.reap(0);
  assert.equal(c, null); // posted at the next poll
  assert.equal(h.ctrl.poll(), 1);
  c = h.reap(0)!;
  assert.equal(c.commandId, aer);
  assert.equal(c.status, 0);
  assert.equal(c.result, 0x01_00_00); // error type, invalid doorbell register, log page 01h

  h.ctrl.writeReg32(doorbellOffset(1, false), 8); // SQ tail == size
  h.ctrl.writeReg32(doorbellOffset(1, true), 3); // CQ head beyond posted entries
  h.ctrl.writeReg32(doorbellOffset(3, true), 0); // beyond the last queue
  h.ctrl.writeReg32(NVME_REG.DBS + 2, 0); // misaligned
  assert.equal(h.ctrl.invalidDoorbellWrites, 5);
  assert.deepEqual(h.ctrl.pendingEvents.map((e) => e.info), [1, 1, 0, 0]);
  assert.equal(h.ctrl.readReg32(NVME_REG.CSTS), CSTS.RDY);
  assert.equal(h.ctrl.inFlight, 0);
  // The queue still works.
  assert.equal(h.run(1, { opcode: NVME_CMD.FLUSH, nsid: 1 }).status, 0);
  // A second AER picks up the oldest queued event at once.
  c = h.run(0, { opcode: NVME_ADMIN.ASYNC_EVENT });
  assert.equal(c.result, 0x01_01_00);
});

Deno.test("AER limit: AERL + 1 outstanding, then Asynchronous Event Request Limit Exceeded", () => {
  const h = new Host();
  h.enable();
  for (let i = 0; i < 4; i++) h.push(0, { opcode: NVME_ADMIN.ASYNC_EVENT });
  h.ring(0);
  assert.equal(h.ctrl.poll(), 0);
  const c = h.run(0, { opcode: NVME_ADMIN.ASYNC_EVENT });
  assert.equal(c.status, NVME_SC.ASYNC_LIMIT | NVME_STATUS_DNR);
});

Deno.test("MSI-X: the CQ's vector fires after posting; re-entrant poll does nothing", () => {
  const h = new Host({ maxQueues: 2 });
  h.enable();
  let fired0 = 0;
  let fired2 = 0;
  h.ctrl.setIrqHandler(0, () => fired0++);
  h.ctrl.setIrqHandler(2, () => {
    fired2++;
    assert.equal(h.ctrl.poll(), 0);
  });
  assert.deepEqual(h.createIoQueuePair(1, 8, 2), [0, 0]);
  assert.equal(fired0, 2);
  h.run(1, { opcode: NVME_CMD.FLUSH, nsid: 1 });
  h.run(1, { opcode: NVME_CMD.FLUSH, nsid: 1 });
  assert.equal(fired2, 2);
  assert.throws(() => h.ctrl.setIrqHandler(3, () => {}), RangeError);
});

Deno.test("round-robin arbitration across SQs with a poll budget", () => {
  const h = Host.ready({ maxQueues: 2 }, 8);
  assert.deepEqual(h.createIoQueuePair(2, 8), [0, 0]);
  const a = [h.push(1, { opcode: NVME_CMD.FLUSH, nsid: 1 }), h.push(1, { opcode: 0, nsid: 1 })];
  const b = [h.push(2, { opcode: NVME_CMD.FLUSH, nsid: 1 }), h.push(2, { opcode: 0, nsid: 1 })];
  h.ring(1);
  h.ring(2);
  assert.equal(h.ctrl.inFlight, 4);
  assert.equal(h.ctrl.poll(2), 2);
  assert.equal(h.reap(1)!.commandId, a[0]);
  assert.equal(h.reap(2)!.commandId, b[0]);
  assert.equal(h.ctrl.inFlight, 2);
  assert.equal(h.ctrl.poll(), 2);
  assert.equal(h.reap(1)!.commandId, a[1]);
  assert.equal(h.reap(2)!.commandId, b[1]);
});

Deno.test("latency model: simulated clock, seeded jitter, replayable", () => {
  const runOnce = (seed: number) => {
    const h = new Host({ latency: { baseNs: 1000, nsPerKiB: 10, jitterNs: 500 } }, seed);
    h.enable();
    h.createIoQueuePair(1, 16);
    const buf = h.alloc(1);
    const ids: number[] = [];
    for (let i = 0; i < 8; i++) {
      ids.push(h.push(1, { opcode: NVME_CMD.READ, nsid: 1, prp1: buf.addr, slba: 0n, nlb0: 0 }));
    }
    h.ring(1);
    const order: number[] = [];
    const times: number[] = [];
    while (order.length < 8) {
      h.ctrl.poll();
      for (let c = h.reap(1); c; c = h.reap(1)) {
        order.push(ids.indexOf(c.commandId));
        times.push(h.ctrl.simNowNs);
      }
    }
    return { order, times };
  };
  const r1 = runOnce(42);
  assert.deepEqual(runOnce(42), r1);
  for (const t of r1.times) assert.ok(t >= 1040 && t <= 1540, `t=${t}`);
  assert.deepEqual([...r1.order].sort(), [0, 1, 2, 3, 4, 5, 6, 7]);
  // Completions come out in due-time order.
  for (let i = 1; i < 8; i++) assert.ok(r1.times[i] >= r1.times[i - 1]);

  const h = Host.ready();
  h.run(1, { opcode: NVME_CMD.FLUSH, nsid: 1 });
  assert.equal(h.ctrl.simNowNs, 0);
});
