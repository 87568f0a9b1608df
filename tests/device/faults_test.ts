/**
 * Fault injection and the volatile write cache at the device level, with the
 * same test bodies on the TypeScript controller and on the C one: each fault
 * kind's status, DNR bit, what it leaves in host memory and on the media, and
 * its counter; the rules' filters, probability and count; the cache's Flush,
 * FUA, eviction and power cut. (The host's handling of each fault, retries,
 * timeouts and resets, is tested with the driver.)
 */
import assert from "node:assert/strict";
import { assertBytes, Host, pattern, type QueueHost, type QueueRegisters } from "./harness.ts";
import { CHost, cHostUnavailable } from "./c_host.ts";
import { NvmeEmu } from "../../ffi/nvme_emu.ts";
import {
  NVME_ADMIN,
  NVME_CMD,
  NVME_CQ_IRQ_ENABLED,
  NVME_NSID_ALL,
  NVME_QUEUE_PHYS_CONTIG,
  NVME_RW_FUA_CDW12,
  NVME_SC,
  NVME_STATUS_DNR,
  type NvmeCqe,
} from "../../sim/device/nvme_spec.ts";
import { NVME_REG } from "../../sim/device/port.ts";
import type { NvmeFaultKind, NvmeFaultRule } from "../../sim/device/faults.ts";
import type { PowerCutReport } from "../../sim/device/write_cache.ts";

const PAGE = 4096;
const DNR = NVME_STATUS_DNR;

/** What the tests need of either controller besides its registers. */
interface FaultPort extends QueueRegisters {
  addFault(rule: NvmeFaultRule): void;
  clearFaults(): void;
  readonly faultsInjected: Record<NvmeFaultKind, number>;
  powerCut(seed: number): PowerCutReport;
  mediaRead(nsid: number, pos: number, len: number): Uint8Array;
}
type AnyHost = QueueHost<FaultPort>;

interface Cfg {
  volatileWriteCache?: boolean;
  writeCacheBytes?: number;
}

const cWhy = cHostUnavailable();
if (cWhy !== null) console.log(`SKIP fault injection on the C controller: ${cWhy}`);

const CONTROLLERS: { name: string; why: string | null; make(cfg: Cfg): AnyHost }[] = [
  { name: "TS", why: null, make: (cfg) => Host.ready(cfg) },
  { name: "C", why: cWhy, make: (cfg) => CHost.ready(cfg) },
];

/** Each case on both controllers; the C one's allocation ledger is checked empty after. */
function both(name: string, cfg: Cfg, body: (h: AnyHost) => void): void {
  for (const c of CONTROLLERS) {
    Deno.test({
      name: `${name} [${c.name}]`,
      ignore: c.why !== null,
      fn: () => {
        {
          using h = c.make(cfg);
          body(h);
        }
        if (c.name === "C") assert.equal(NvmeEmu.ledger(), 0, "nvme_emu_ledger() after destroy");
      },
    });
  }
}

function counts(partial: Partial<Record<NvmeFaultKind, number>>): Record<NvmeFaultKind, number> {
  return {
    "read-error": 0,
    "write-fault": 0,
    drop: 0,
    cfs: 0,
    "admin-fail": 0,
    "bad-cid": 0,
    ...partial,
  };
}

/** Write `data` (whole 4 KiB blocks) at `slba` of namespace 1 from a fresh buffer. */
function write(h: AnyHost, slba: bigint, data: Uint8Array, cdw12 = 0): NvmeCqe {
  const buf = h.alloc(data.length / PAGE);
  buf.write(0, data);
  return h.run(1, {
    opcode: NVME_CMD.WRITE,
    nsid: 1,
    prp1: buf.addr,
    prp2: data.length > PAGE ? buf.addr + BigInt(PAGE) : 0n,
    slba,
    nlb0: data.length / PAGE - 1,
    cdw12,
  });
}

/** Read one block at `slba` into a buffer filled with 0xcc first: the CQE and the buffer. */
function read(h: AnyHost, slba: bigint, cdw12 = 0): { cqe: NvmeCqe; data: Uint8Array } {
  const buf = h.alloc(1);
  buf.write(0, new Uint8Array(PAGE).fill(0xcc));
  const cqe = h.run(1, { opcode: NVME_CMD.READ, nsid: 1, prp1: buf.addr, slba, nlb0: 0, cdw12 });
  return { cqe, data: buf.read(0, PAGE) };
}

function flush(h: AnyHost, nsid = 1): NvmeCqe {
  return h.run(1, { opcode: NVME_CMD.FLUSH, nsid });
}

/** Ring and step; whatever CQEs arrive (none for a dropped command). */
function submitAndStep(h: AnyHost, qid: number, init: Parameters<AnyHost["push"]>[1]) {
  const cid = h.push(qid, init);
  h.ring(qid);
  const got: NvmeCqe[] = [];
  for (let i = 0; i < 20; i++) {
    h.step();
    for (let c = h.reap(qid); c; c = h.reap(qid)) got.push(c);
  }
  return { cid, got };
}

/** CC.EN 1 -> 0 -> 1 and queue pair 1 again. */
function resetAndRestart(h: AnyHost): void {
  h.ctrl.writeReg32(NVME_REG.CC, 0);
  assert.equal(h.ctrl.readReg32(NVME_REG.CSTS), 0);
  h.queues.clear();
  h.start();
}

// ------------------------------------------------------------- read-error

both("read-error: Unrecovered Read Error (SCT 2, SC 0x81) in the range, no data moved", {}, (h) => {
  const data = pattern(PAGE, 1);
  assert.equal(write(h, 10n, data).status, 0);
  h.ctrl.addFault({ kind: "read-error", slbaFirst: 10n, slbaLast: 10n, dnr: true });
  const bad = read(h, 10n);
  assert.equal(bad.cqe.status, NVME_SC.READ_ERROR | DNR);
  assert.equal(bad.cqe.status, 0x281 | DNR);
  assertBytes(bad.data, new Uint8Array(PAGE).fill(0xcc), "host buffer after a read error");
  const ok = read(h, 11n); // outside the range
  assert.equal(ok.cqe.status, 0);
  h.ctrl.clearFaults();
  h.ctrl.addFault({ kind: "read-error", nsid: 1 }); // no DNR: the host may retry
  assert.equal(read(h, 10n).cqe.status, 0x281);
  assertBytes(h.ctrl.mediaRead(1, 10 * PAGE, PAGE), data, "media");
  assert.deepEqual(h.ctrl.faultsInjected, counts({ "read-error": 2 }));
  h.ctrl.clearFaults();
  const again = read(h, 10n);
  assert.equal(again.cqe.status, 0);
  assertBytes(again.data, data, "read after clearFaults");
});

// ------------------------------------------------------------ write-fault

both("write-fault: Write Fault (SCT 2, SC 0x80), the media keeps its old data", {}, (h) => {
  const old = pattern(PAGE, 2);
  assert.equal(write(h, 5n, old).status, 0);
  h.ctrl.addFault({ kind: "write-fault", count: 1 });
  const c = write(h, 5n, pattern(PAGE, 3));
  assert.equal(c.status, NVME_SC.WRITE_FAULT);
  assert.equal(c.status, 0x280);
  assertBytes(h.ctrl.mediaRead(1, 5 * PAGE, PAGE), old, "media after a write fault");
  assertBytes(read(h, 5n).data, old, "read after a write fault");
  assert.deepEqual(h.ctrl.faultsInjected, counts({ "write-fault": 1 }));
  // count 1: the rule has retired.
  const next = pattern(PAGE, 4);
  assert.equal(write(h, 5n, next).status, 0);
  assertBytes(h.ctrl.mediaRead(1, 5 * PAGE, PAGE), next, "media after the rule retired");
});

both("write-fault with a volatile write cache: neither cache nor media changes", {
  volatileWriteCache: true,
}, (h) => {
  const old = pattern(PAGE, 5);
  assert.equal(write(h, 7n, old).status, 0); // cached
  h.ctrl.addFault({ kind: "write-fault", slbaFirst: 6n, slbaLast: 8n, dnr: true });
  assert.equal(write(h, 7n, pattern(PAGE, 6)).status, 0x280 | DNR);
  assertBytes(read(h, 7n).data, old, "read through the cache");
  assert.equal(flush(h).status, 0);
  assertBytes(h.ctrl.mediaRead(1, 7 * PAGE, PAGE), old, "media after flush");
});

// ------------------------------------------------------------------- drop

both("drop: fetched and never completed; nothing moves; the next command completes", {}, (h) => {
  h.ctrl.addFault({ kind: "drop", opcode: NVME_CMD.WRITE, count: 1 });
  const buf = h.alloc(1);
  buf.write(0, pattern(PAGE, 7));
  const { got } = submitAndStep(h, 1, {
    opcode: NVME_CMD.WRITE,
    nsid: 1,
    prp1: buf.addr,
    slba: 3n,
    nlb0: 0,
  });
  assert.deepEqual(got, []);
  assertBytes(h.ctrl.mediaRead(1, 3 * PAGE, PAGE), new Uint8Array(PAGE), "media");
  assert.deepEqual(h.ctrl.faultsInjected, counts({ drop: 1 }));
  // The SQ head moved past it: the next command's CQE says so.
  const c = read(h, 3n).cqe;
  assert.equal(c.status, 0);
  assert.equal(c.sqHead, 2);
  // A reset discards it: the controller comes back and works.
  resetAndRestart(h);
  assert.equal(write(h, 3n, pattern(PAGE, 8)).status, 0);
});

both("drop on the admin queue: an Identify never completes", {}, (h) => {
  h.ctrl.addFault({ kind: "drop", admin: true, opcode: NVME_ADMIN.IDENTIFY });
  const buf = h.alloc(1);
  const { got } = submitAndStep(h, 0, {
    opcode: NVME_ADMIN.IDENTIFY,
    prp1: buf.addr,
    cdw10: 1,
  });
  assert.deepEqual(got, []);
  assertBytes(buf.read(0, PAGE), new Uint8Array(PAGE), "identify buffer");
  assert.deepEqual(h.ctrl.faultsInjected, counts({ drop: 1 }));
});

// -------------------------------------------------------------------- cfs

both("cfs: CSTS.CFS, nothing processed until CC.EN 1 -> 0 -> 1", {}, (h) => {
  h.ctrl.addFault({ kind: "cfs", opcode: NVME_CMD.READ, count: 1 });
  const buf = h.alloc(1);
  const first = submitAndStep(h, 1, { opcode: NVME_CMD.READ, nsid: 1, prp1: buf.addr, nlb0: 0 });
  assert.deepEqual(first.got, []);
  assert.equal(h.ctrl.readReg32(NVME_REG.CSTS), 3); // RDY | CFS
  const later = submitAndStep(h, 1, { opcode: NVME_CMD.FLUSH, nsid: 1 });
  assert.deepEqual(later.got, [], "a fatal controller processes nothing");
  assert.deepEqual(h.ctrl.faultsInjected, counts({ cfs: 1 }));
  resetAndRestart(h);
  assert.equal(h.ctrl.readReg32(NVME_REG.CSTS), 1);
  assert.equal(read(h, 0n).cqe.status, 0);
});

// ------------------------------------------------------------- admin-fail

both(
  "admin-fail: Internal Error (SCT 0, SC 0x06); Identify moves nothing, Create CQ creates nothing",
  {},
  (h) => {
    h.ctrl.addFault({ kind: "admin-fail", opcode: NVME_ADMIN.IDENTIFY, dnr: true, count: 1 });
    const buf = h.alloc(1);
    let c = h.run(0, { opcode: NVME_ADMIN.IDENTIFY, prp1: buf.addr, cdw10: 1 });
    assert.equal(c.status, NVME_SC.INTERNAL | DNR);
    assert.equal(c.status, 0x006 | DNR);
    assertBytes(buf.read(0, PAGE), new Uint8Array(PAGE), "identify buffer");
    c = h.run(0, { opcode: NVME_ADMIN.IDENTIFY, prp1: buf.addr, cdw10: 1 });
    assert.equal(c.status, 0, "count 1: the rule retired");
    h.ctrl.addFault({ kind: "admin-fail", opcode: NVME_ADMIN.CREATE_CQ });
    const cq = h.alloc(1);
    const create = {
      opcode: NVME_ADMIN.CREATE_CQ,
      prp1: cq.addr,
      cdw10: (15 << 16) | 2,
      cdw11: (2 << 16) | NVME_QUEUE_PHYS_CONTIG | NVME_CQ_IRQ_ENABLED,
    };
    assert.equal(h.run(0, create).status, NVME_SC.INTERNAL);
    h.ctrl.clearFaults();
    assert.equal(h.run(0, create).status, 0, "the failed Create CQ created no queue");
    assert.deepEqual(h.ctrl.faultsInjected, counts({ "admin-fail": 2 }));
  },
);

// ---------------------------------------------------------------- bad-cid

both("bad-cid: the command executes, its CQE carries command id XOR 0x8000", {}, (h) => {
  h.ctrl.addFault({ kind: "bad-cid", count: 1 });
  const data = pattern(PAGE, 9);
  const buf = h.alloc(1);
  buf.write(0, data);
  const { cid, got } = submitAndStep(h, 1, {
    opcode: NVME_CMD.WRITE,
    nsid: 1,
    prp1: buf.addr,
    slba: 12n,
    nlb0: 0,
  });
  assert.equal(got.length, 1);
  assert.equal(got[0].commandId, cid ^ 0x8000);
  assert.equal(got[0].status, 0);
  assertBytes(h.ctrl.mediaRead(1, 12 * PAGE, PAGE), data, "media");
  assert.deepEqual(h.ctrl.faultsInjected, counts({ "bad-cid": 1 }));
});

// --------------------------------------------------------- rule semantics

both("rules: invalid ones are refused with RangeError, at most 64 live", {}, (h) => {
  const bad: NvmeFaultRule[] = [
    { kind: "nope" as NvmeFaultKind },
    { kind: "read-error", admin: true },
    { kind: "read-error", opcode: NVME_CMD.WRITE },
    { kind: "write-fault", opcode: NVME_CMD.READ },
    { kind: "admin-fail", admin: false },
    { kind: "drop", admin: true, slbaFirst: 0n },
    { kind: "drop", slbaFirst: 5n, slbaLast: 4n },
    { kind: "drop", probability: 1.5 },
    { kind: "drop", probability: NaN },
    { kind: "drop", count: 0 },
    { kind: "drop", count: 1.5 },
    { kind: "drop", opcode: 256 },
    { kind: "drop", nsid: -1 },
    { kind: "drop", slbaLast: 1n << 64n },
  ];
  for (const r of bad) {
    assert.throws(
      () => h.ctrl.addFault(r),
      RangeError,
      JSON.stringify(r, (_, v) => typeof v === "bigint" ? String(v) : v),
    );
  }
  for (let i = 0; i < 64; i++) h.ctrl.addFault({ kind: "read-error", nsid: 9 });
  assert.throws(() => h.ctrl.addFault({ kind: "read-error" }), RangeError);
  h.ctrl.clearFaults();
  h.ctrl.addFault({ kind: "read-error" });
});

both(
  "rules: first match wins, filters by NSID and overlapping LBA range, Flush has no LBAs",
  {},
  (h) => {
    h.ctrl.addFault({ kind: "read-error", nsid: 2 }); // never this namespace
    h.ctrl.addFault({ kind: "bad-cid", slbaFirst: 100n, slbaLast: 200n });
    // A 2-block write at 99..100 overlaps; one at 98..99 does not.
    const two = pattern(2 * PAGE, 10);
    const buf = h.alloc(2);
    buf.write(0, two);
    const hit = submitAndStep(h, 1, {
      opcode: NVME_CMD.WRITE,
      nsid: 1,
      prp1: buf.addr,
      prp2: buf.addr + BigInt(PAGE),
      slba: 99n,
      nlb0: 1,
    });
    assert.equal(hit.got[0].commandId, hit.cid ^ 0x8000);
    assert.equal(write(h, 98n, two).status, 0);
    assert.equal(flush(h).status, 0, "a Flush has no LBA range: not hit");
    assert.equal(read(h, 201n).cqe.status, 0, "a read past the range is not hit");
    assert.deepEqual(h.ctrl.faultsInjected, counts({ "bad-cid": 1 }));
  },
);

both("rules: probability draws from the controller's seeded generator, count retires", {}, (h) => {
  h.ctrl.addFault({ kind: "read-error", probability: 0.5, count: 10 });
  const statuses: number[] = [];
  for (let i = 0; i < 40; i++) statuses.push(read(h, BigInt(i)).cqe.status);
  const failed = statuses.filter((s) => s === 0x281).length;
  assert.equal(failed, 10, "the rule retires after 10 firings");
  assert.equal(statuses.filter((s) => s === 0).length, 30);
  // The same seed (7 in both hosts) draws the same sequence on both controllers.
  assert.equal(statuses.map((s) => (s ? "x" : ".")).join(""), PROBABILITY_PATTERN);
  assert.deepEqual(h.ctrl.faultsInjected, counts({ "read-error": 10 }));
});

/** The failures of 40 reads under a p = 0.5, count 10 rule, seed 7 (the same on both controllers). */
const PROBABILITY_PATTERN = probabilityPattern();

function probabilityPattern(): string {
  using h = Host.ready();
  h.ctrl.addFault({ kind: "read-error", probability: 0.5, count: 10 });
  let out = "";
  for (let i = 0; i < 40; i++) out += read(h, BigInt(i)).cqe.status ? "x" : ".";
  return out;
}

// ----------------------------------------------------- volatile write cache

both("write cache: a Write completes into the cache, Read sees it, Flush persists it", {
  volatileWriteCache: true,
}, (h) => {
  const data = pattern(PAGE, 11);
  assert.equal(write(h, 20n, data).status, 0);
  assertBytes(h.ctrl.mediaRead(1, 20 * PAGE, PAGE), new Uint8Array(PAGE), "media before flush");
  assertBytes(read(h, 20n).data, data, "read through the cache");
  assert.equal(flush(h, NVME_NSID_ALL).status, 0);
  assertBytes(h.ctrl.mediaRead(1, 20 * PAGE, PAGE), data, "media after flush");
  assert.deepEqual(h.ctrl.powerCut(1), { writesLost: 0, writesKept: 0, blocksLost: 0 });
});

both("write cache: FUA writes reach the media at once, FUA reads destage", {
  volatileWriteCache: true,
}, (h) => {
  const a = pattern(PAGE, 12);
  const b = pattern(PAGE, 13);
  assert.equal(write(h, 30n, a).status, 0); // cached
  assert.equal(write(h, 30n, b, NVME_RW_FUA_CDW12).status, 0); // FUA: media, cache copy dropped
  assertBytes(h.ctrl.mediaRead(1, 30 * PAGE, PAGE), b, "media after a FUA write");
  assert.equal(flush(h).status, 0);
  assertBytes(h.ctrl.mediaRead(1, 30 * PAGE, PAGE), b, "the older cached copy never lands");
  const c = pattern(PAGE, 14);
  assert.equal(write(h, 31n, c).status, 0);
  const r = read(h, 31n, NVME_RW_FUA_CDW12);
  assert.equal(r.cqe.status, 0);
  assertBytes(r.data, c, "FUA read data");
  assertBytes(h.ctrl.mediaRead(1, 31 * PAGE, PAGE), c, "media after a FUA read");
});

both("write cache: the oldest blocks are destaged when it is full", {
  volatileWriteCache: true,
  writeCacheBytes: 4 * PAGE,
}, (h) => {
  const blocks = [0, 1, 2, 3, 4, 5].map((i) => pattern(PAGE, 20 + i));
  blocks.forEach((d, i) => assert.equal(write(h, BigInt(40 + i), d).status, 0));
  // Six blocks through a four-block cache: 40 and 41 reached the media, 42..45 did not.
  for (let i = 0; i < 6; i++) {
    const m = h.ctrl.mediaRead(1, (40 + i) * PAGE, PAGE);
    assertBytes(m, i < 2 ? blocks[i] : new Uint8Array(PAGE), `media of block ${40 + i}`);
  }
});

both(
  "power cut: flushed and FUA writes survive, a seeded unflushed one is lost, the controller is dead",
  {
    volatileWriteCache: true,
  },
  (h) => {
    const flushed = pattern(PAGE, 30);
    const fua = pattern(PAGE, 31);
    assert.equal(write(h, 50n, flushed).status, 0);
    assert.equal(flush(h).status, 0);
    assert.equal(write(h, 51n, fua, NVME_RW_FUA_CDW12).status, 0);
    const unflushed = [0, 1, 2, 3, 4, 5].map((i) => pattern(PAGE, 40 + i));
    unflushed.forEach((d, i) => assert.equal(write(h, BigInt(60 + i), d).status, 0));
    const cut = h.ctrl.powerCut(3);
    assert.deepEqual(cut, POWER_CUT_3, "the same writes lost on both controllers");
    assert.ok(cut.writesLost >= 1);
    assert.equal(cut.writesLost + cut.writesKept, 6);
    assert.equal(cut.blocksLost, cut.writesLost);
    assertBytes(h.ctrl.mediaRead(1, 50 * PAGE, PAGE), flushed, "flushed write");
    assertBytes(h.ctrl.mediaRead(1, 51 * PAGE, PAGE), fua, "FUA write");
    let lost = 0;
    unflushed.forEach((d, i) => {
      const m = h.ctrl.mediaRead(1, (60 + i) * PAGE, PAGE);
      if (m.every((x) => x === 0)) lost++;
      else assertBytes(m, d, `kept write ${60 + i}`);
    });
    assert.equal(lost, cut.writesLost);
    // Dead: CSTS reads 0 and stays 0, register writes are ignored.
    assert.equal(h.ctrl.readReg32(NVME_REG.CSTS), 0);
    h.ctrl.writeReg32(NVME_REG.CC, 0);
    h.ctrl.writeReg32(NVME_REG.CC, 0x00460001);
    assert.equal(h.ctrl.readReg32(NVME_REG.CSTS), 0);
    assert.deepEqual(h.ctrl.powerCut(3), { writesLost: 0, writesKept: 0, blocksLost: 0 });
  },
);

both("power cut without a write cache (write-through): nothing is lost", {}, (h) => {
  const data = [0, 1, 2].map((i) => pattern(PAGE, 50 + i));
  data.forEach((d, i) => assert.equal(write(h, BigInt(70 + i), d).status, 0));
  assert.deepEqual(h.ctrl.powerCut(3), { writesLost: 0, writesKept: 0, blocksLost: 0 });
  data.forEach((d, i) => assertBytes(h.ctrl.mediaRead(1, (70 + i) * PAGE, PAGE), d, "media"));
  assert.equal(h.ctrl.readReg32(NVME_REG.CSTS), 0);
});

/** The TS controller's answer to the power-cut case with seed 3 (the C one must give the same). */
const POWER_CUT_3 = powerCut3();

function powerCut3(): PowerCutReport {
  using h = Host.ready({ volatileWriteCache: true });
  assert.equal(write(h, 50n, pattern(PAGE, 30)).status, 0);
  assert.equal(flush(h).status, 0);
  assert.equal(write(h, 51n, pattern(PAGE, 31), NVME_RW_FUA_CDW12).status, 0);
  for (let i = 0; i < 6; i++) {
    assert.equal(write(h, BigInt(60 + i), pattern(PAGE, 40 + i)).status, 0);
  }
  return h.ctrl.powerCut(3);
}

// ------------------------------------------------------------------ abort

both(
  "abort: the driver's Abort of a dropped command completes, dword 0 bit 0 set (not aborted)",
  {},
  (h) => {
    h.ctrl.addFault({ kind: "drop", opcode: NVME_CMD.READ, count: 1 });
    const buf = h.alloc(1);
    const lost = submitAndStep(h, 1, { opcode: NVME_CMD.READ, nsid: 1, prp1: buf.addr, nlb0: 0 });
    assert.deepEqual(lost.got, []);
    const c = h.run(0, { opcode: NVME_ADMIN.ABORT_CMD, cdw10: ((lost.cid << 16) | 1) >>> 0 });
    assert.equal(c.status, 0);
    assert.equal(c.result & 1, 1);
    // Nothing else arrives: the dropped command stays lost until a reset.
    for (let i = 0; i < 5; i++) h.step();
    assert.equal(h.reap(1), null);
  },
);

Deno.test("drop: the TS controller's inFlight leaves swallowed commands out, and a fully held SQ's backlog", () => {
  using h = Host.ready({}, 2);
  h.ctrl.addFault({ kind: "drop", opcode: NVME_CMD.FLUSH });
  for (let i = 0; i < 3; i++) {
    h.push(1, { opcode: NVME_CMD.FLUSH, nsid: 1 });
    h.ring(1);
    h.step();
  }
  // A 2-entry SQ: two flushes swallowed hold both slots; the third can never be fetched.
  assert.equal(h.ctrl.droppedCommands, 2);
  assert.equal(h.ctrl.inFlight, 0);
  resetAndRestart(h);
  assert.equal(h.ctrl.inFlight, 0);
});
