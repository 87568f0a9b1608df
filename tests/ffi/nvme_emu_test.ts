/** The libnvme_emu binding: struct layout, config encoding, errors, registers, one command each way. */
import assert from "node:assert/strict";
import { allocBuffer, type NativeBuffer } from "../../ffi/libc.ts";
import { LiveRing, liveRingUnavailable } from "../../ffi/liburing.ts";
import {
  encodeNvmeEmuConfig,
  NVME_EMU_LAYOUT,
  NVME_EMU_STAT_FIELDS,
  NvmeEmu,
  type NvmeEmuConfig,
  nvmeEmuLayout,
  nvmeEmuUnavailable,
} from "../../ffi/nvme_emu.ts";
import { buildIdCtrl } from "../../sim/device/identify.ts";
import {
  decodeCqe,
  encodeNvmeCommand,
  NVME_ADMIN,
  NVME_SC,
  NVME_STATUS_DNR,
} from "../../sim/device/nvme_spec.ts";
import { NVME_REG } from "../../sim/device/port.ts";
import { doorbellOffset, encodeAqa, encodeCap, encodeCc } from "../../sim/device/regs.ts";
import { Errno, ErrnoError } from "../../sim/uapi/errno.ts";

const WHY = nvmeEmuUnavailable("plain");
if (WHY !== null) console.log(`SKIP libnvme_emu binding tests: ${WHY}`);
const ignore = WHY !== null;

const CFG: NvmeEmuConfig = {
  namespaces: [{ lbaSize: 4096, sizeBytes: 1n << 20n }, { lbaSize: 512, sizeBytes: 1n << 19n }],
  maxQueues: 4,
  mqes: 64,
  mdts: 5,
};

Deno.test("encodeNvmeEmuConfig: the header's offsets and defaults", () => {
  const b = encodeNvmeEmuConfig({
    namespaces: [{ lbaSize: 512, sizeBytes: 4096n, mediaPath: "/tmp/x", noDirect: true }],
    maxQueues: 3,
    mqes: 17,
    mdts: 6,
    sgls: false,
    volatileWriteCache: true,
    mode: "thread",
    idlePollNs: 1234n,
    seed: 0x1_0000_0001n,
    iotlbEntries: 9,
  });
  const v = new DataView(b.buffer);
  const L = NVME_EMU_LAYOUT.config;
  assert.equal(b.length, 4664);
  assert.deepEqual(
    [L.abi, L.nrNamespaces, L.maxQueues, L.mqes, L.mdts, L.sgls, L.vwc, L.mode].map((o) =>
      v.getUint32(o, true)
    ),
    [2, 1, 3, 17, 6, 0, 1, 1],
  );
  assert.equal(v.getUint32(L.vwcCacheKib, true), 0); // the default capacity
  assert.equal(v.getBigUint64(L.idlePollNs, true), 1234n);
  assert.equal(v.getBigUint64(L.seed, true), 0x1_0000_0001n);
  assert.equal(v.getUint32(L.iotlbEntries, true), 9);
  assert.equal(v.getUint32(L.ns + 0, true), 512);
  assert.equal(v.getUint32(L.ns + 4, true), 1); // NVME_EMU_NS_NO_DIRECT
  assert.equal(v.getBigUint64(L.ns + 8, true), 4096n);
  assert.equal(new TextDecoder().decode(b.subarray(L.ns + 16, L.ns + 22)), "/tmp/x");
  assert.equal(b[L.ns + 22], 0);
  const d = new DataView(
    encodeNvmeEmuConfig({ namespaces: [{ lbaSize: 4096, sizeBytes: 8192 }] }).buffer,
  );
  assert.deepEqual([8, 12, 16, 20, 24, 28, 48].map((o) => d.getUint32(o, true)), [
    8,
    1024,
    5,
    1,
    0,
    0,
    128,
  ]);
  assert.throws(() => encodeNvmeEmuConfig({ namespaces: [] }), RangeError);
  assert.throws(
    () =>
      encodeNvmeEmuConfig({
        namespaces: [{ lbaSize: 512, sizeBytes: 512, mediaPath: "x".repeat(272) }],
      }),
    RangeError,
  );
  assert.throws(
    () => encodeNvmeEmuConfig({ namespaces: [{ lbaSize: 512, sizeBytes: -1n }] }),
    RangeError,
  );
});

Deno.test("nvmeEmuUnavailable('asan') refuses without the ASan runtime preloaded (no abort)", () => {
  const preload = Deno.env.get("LD_PRELOAD") ?? "";
  if (/libasan/.test(preload)) return;
  const why = nvmeEmuUnavailable("asan");
  assert.ok(why !== null);
  assert.match(why, /LD_PRELOAD|not built|FFI/);
});

Deno.test({
  name: "nvme_emu_layout() matches the binding's offsets",
  ignore,
  fn: () => {
    assert.deepEqual(nvmeEmuLayout(), [
      BigInt(NVME_EMU_LAYOUT.config.SIZE),
      BigInt(NVME_EMU_LAYOUT.config.ns),
      BigInt(NVME_EMU_LAYOUT.ns.SIZE),
      BigInt(NVME_EMU_LAYOUT.ns.mediaPath),
      BigInt(NVME_EMU_LAYOUT.stats.SIZE),
      BigInt(NVME_EMU_LAYOUT.config.iotlbEntries),
      BigInt(NVME_EMU_LAYOUT.fault.SIZE),
      BigInt(NVME_EMU_LAYOUT.fault.probability),
      BigInt(NVME_EMU_LAYOUT.fault.count),
    ]);
    assert.equal(NVME_EMU_STAT_FIELDS.length * 8, NVME_EMU_LAYOUT.stats.SIZE);
  },
});

Deno.test({
  name: "nvme_emu_create: bad configurations are -EINVAL, a bad media path its errno",
  ignore,
  fn: () => {
    const bad: NvmeEmuConfig[] = [
      { ...CFG, mqes: 1 },
      { ...CFG, mdts: 13 },
      { ...CFG, maxQueues: 0 },
      { ...CFG, maxQueues: 1025 },
      { ...CFG, iotlbEntries: 0 },
      { ...CFG, namespaces: [{ lbaSize: 1024 as 512, sizeBytes: 1n << 20n }] },
      { ...CFG, namespaces: [{ lbaSize: 4096, sizeBytes: 4095n }] },
    ];
    for (const cfg of bad) {
      assert.throws(() => NvmeEmu.create(cfg), (e: unknown) => {
        assert.ok(e instanceof ErrnoError, String(e));
        assert.equal(
          e.errno,
          Errno.EINVAL,
          JSON.stringify(cfg, (_, v) => typeof v === "bigint" ? `${v}` : v),
        );
        assert.match(e.message, /nvme_emu_create: EINVAL \(22\)/);
        return true;
      });
    }
    assert.throws(
      () =>
        NvmeEmu.create({
          ...CFG,
          namespaces: [{ lbaSize: 4096, sizeBytes: 4096n, mediaPath: "/nonexistent-dir/m" }],
        }),
      (e: unknown) => e instanceof ErrnoError && e.code === "ENOENT",
    );
    assert.equal(NvmeEmu.ledger(), 0);
  },
});

Deno.test({
  name:
    "registers: CAP, VS, CSTS as the TypeScript controller reports them; 64-bit access low half first",
  ignore,
  fn: () => {
    using emu = NvmeEmu.create(CFG);
    const cap = encodeCap({ mqes: 63, cqr: true, to: 15, dstrd: 0, css: 1, mpsmin: 0, mpsmax: 4 });
    assert.equal(emu.readReg64(NVME_REG.CAP), cap);
    assert.equal(emu.readReg32(NVME_REG.VS), 0x0001_0400);
    assert.equal(emu.readReg32(NVME_REG.CSTS), 0);
    emu.writeReg64(NVME_REG.ASQ, 0x1234_5000_6000n);
    assert.equal(emu.readReg64(NVME_REG.ASQ), 0x1234_5000_6000n);
    assert.equal(emu.msixVectors, 5);
    assert.throws(() => emu.setIrqHandler(5, () => {}), RangeError);
  },
});

/** A tiny host: frames at pfn 0x40000.. over one native buffer, admin queues, one command. */
class MiniHost implements Disposable {
  readonly emu: NvmeEmu;
  readonly buf: NativeBuffer;
  readonly pfn = 0x40000;
  readonly irqs: number[] = [];
  sqTail = 0;

  constructor(cfg: NvmeEmuConfig = CFG) {
    this.emu = NvmeEmu.create(cfg);
    this.buf = allocBuffer(8 * 4096);
    this.emu.frameMap(this.pfn, 8, this.buf.ptr);
    for (let v = 0; v < this.emu.msixVectors; v++) {
      this.emu.setIrqHandler(v, () => this.irqs.push(v));
    }
    this.emu.writeReg32(NVME_REG.AQA, encodeAqa(4, 4));
    this.emu.writeReg64(NVME_REG.ASQ, this.pa(0));
    this.emu.writeReg64(NVME_REG.ACQ, this.pa(1));
    this.emu.writeReg32(
      NVME_REG.CC,
      encodeCc({ en: true, css: 0, mps: 0, shn: 0, iosqes: 6, iocqes: 4 }),
    );
  }
  pa(page: number, off = 0): bigint {
    return BigInt(this.pfn + page) * 4096n + BigInt(off);
  }
  admin(init: Parameters<typeof encodeNvmeCommand>[0]) {
    this.buf.bytes.set(encodeNvmeCommand(init), this.sqTail * 64);
    this.sqTail = (this.sqTail + 1) % 4;
    this.emu.writeReg32(doorbellOffset(0, false), this.sqTail);
    const posted = this.emu.process(8);
    return { posted, cqe: decodeCqe(this.buf.bytes, 4096 + 16 * ((this.sqTail + 3) % 4)) };
  }
  [Symbol.dispose](): void {
    this.emu[Symbol.dispose]();
    this.buf[Symbol.dispose]();
  }
}

Deno.test({
  name:
    "inline mode: Identify Controller through the frame table, vector 0 raised, same bytes as the TS controller",
  ignore,
  fn: () => {
    {
      using h = new MiniHost();
      assert.equal(h.emu.readReg32(NVME_REG.CSTS), 1);
      const { posted, cqe } = h.admin({
        opcode: NVME_ADMIN.IDENTIFY,
        commandId: 9,
        prp1: h.pa(2),
        cdw10: 1,
      });
      assert.equal(posted, 1);
      assert.equal(cqe.status, 0);
      assert.equal(cqe.commandId, 9);
      assert.equal(cqe.phase, 1);
      assert.deepEqual(h.irqs, [0]);
      const want = buildIdCtrl({ mdts: 5, nn: 2, sgls: true, ver: 0x10400, aerl: 3, vwc: false });
      assert.deepEqual(h.buf.bytes.slice(2 * 4096, 3 * 4096), want);
      const s = h.emu.stats();
      assert.equal(s.commands, 1);
      assert.equal(s.adminCommands, 1);
      assert.equal(h.emu.outstanding(), 0);
      // A PRP outside the registered frames: Data Transfer Error, fault recorded.
      const r = h.admin({
        opcode: NVME_ADMIN.IDENTIFY,
        commandId: 10,
        prp1: 0x7_0000_0000n,
        cdw10: 1,
      });
      assert.equal(r.cqe.status, NVME_SC.DATA_XFER_ERROR);
      assert.deepEqual(h.emu.lastFault(), { reason: "bad-address", addr: 0x7_0000_0000n });
      assert.ok(h.emu.stats().dmaFaults >= 1);
      const u = h.admin({ opcode: 0xc1, commandId: 11 });
      assert.equal(u.cqe.status, NVME_SC.INVALID_OPCODE | NVME_STATUS_DNR);
    }
    assert.equal(NvmeEmu.ledger(), 0);
  },
});

Deno.test({
  name: "frame table, IOMMU, invalidations, media views: errors as ErrnoError",
  ignore,
  fn: () => {
    using h = new MiniHost();
    const e = h.emu;
    const errno = (f: () => unknown, code: string) =>
      assert.throws(f, (x: unknown) => x instanceof ErrnoError && x.code === code);
    errno(() => e.frameMap(h.pfn + 3, 1, h.buf.ptr), "EEXIST");
    errno(() => e.frameUnmap(h.pfn + 100, 1), "ENOENT");
    errno(
      () => e.frameMap(0x90000, 1, Deno.UnsafePointer.offset(h.buf.ptr, 8) as Deno.PointerObject),
      "EINVAL",
    );
    errno(() => e.irqRing(-1, 0n), "EINVAL"); // inline mode
    e.frameUnmap(h.pfn + 7, 1);
    e.frameMap(h.pfn + 7, 1, Deno.UnsafePointer.offset(h.buf.ptr, 7 * 4096) as Deno.PointerObject);
    e.iommuAttach("identity");
    e.iommuAttach("translate", h.pa(6));
    e.iommuAttach("none");
    const s1 = e.invPost(5, 1);
    const s2 = e.invPost(0, 0);
    assert.equal(s2, s1 + 1n);
    assert.ok(e.invDone() >= s2);
    assert.equal(e.invWait(s2, 1_000_000n), true);
    const data = new Uint8Array(1024).map((_, i) => i * 7);
    e.mediaWrite(2, 3000, data);
    assert.deepEqual(e.mediaRead(2, 3000, 1024), data);
    assert.deepEqual(e.mediaRead(1, 0, 16), new Uint8Array(16));
    errno(() => e.mediaRead(3, 0, 16), "EINVAL");
    errno(() => e.mediaRead(2, (1 << 19) - 8, 16), "EINVAL");
  },
});

Deno.test({
  name: "thread mode: the device thread completes a command, waitInterrupt + deliverInterrupts",
  ignore,
  fn: () => {
    const emu = NvmeEmu.create({ ...CFG, mode: "thread", idlePollNs: 20_000 });
    const buf = allocBuffer(4 * 4096);
    try {
      const pfn = 0x50000;
      emu.frameMap(pfn, 4, buf.ptr);
      const irqs: number[] = [];
      emu.setIrqHandler(0, () => irqs.push(0));
      assert.throws(
        () => emu.process(1),
        (x: unknown) => x instanceof ErrnoError && x.code === "EINVAL",
      );
      emu.writeReg32(NVME_REG.AQA, encodeAqa(4, 4));
      emu.writeReg64(NVME_REG.ASQ, BigInt(pfn) * 4096n);
      emu.writeReg64(NVME_REG.ACQ, BigInt(pfn + 1) * 4096n);
      emu.writeReg32(
        NVME_REG.CC,
        encodeCc({ en: true, css: 0, mps: 0, shn: 0, iosqes: 6, iocqes: 4 }),
      );
      for (let i = 0; i < 1000 && (emu.readReg32(NVME_REG.CSTS) & 1) === 0; i++) {
        emu.waitInterrupt(1_000_000n);
      }
      assert.equal(emu.readReg32(NVME_REG.CSTS) & 1, 1);
      buf.bytes.set(
        encodeNvmeCommand({
          opcode: NVME_ADMIN.IDENTIFY,
          commandId: 3,
          prp1: BigInt(pfn + 2) * 4096n,
          cdw10: 1,
        }),
        0,
      );
      emu.writeReg32(doorbellOffset(0, false), 1);
      let pending = 0;
      for (let i = 0; i < 200 && pending === 0; i++) pending = emu.waitInterrupt(10_000_000n);
      assert.ok(pending >= 1, "an interrupt within 2 s");
      assert.deepEqual(emu.deliverInterrupts(), [0]);
      assert.deepEqual(irqs, [0]);
      const cqe = decodeCqe(buf.bytes, 4096);
      assert.equal(cqe.commandId, 3);
      assert.equal(cqe.status, 0);
    } finally {
      emu[Symbol.dispose]();
      buf[Symbol.dispose]();
    }
    assert.equal(NvmeEmu.ledger(), 0);
  },
});

Deno.test({
  name:
    "access trace: an Identify is traced as SQE read, data write, CQE write; bad use is an errno",
  ignore,
  fn: () => {
    const emu = NvmeEmu.create(CFG);
    const buf = allocBuffer(4 * 4096);
    try {
      const pfn = 0x50000;
      emu.frameMap(pfn, 4, buf.ptr);
      const errno = (f: () => void) => {
        try {
          f();
        } catch (e) {
          return e instanceof ErrnoError ? e.code : String(e);
        }
        return "ok";
      };
      assert.equal(errno(() => emu.traceEnable(100)), "EINVAL"); // not a power of two
      assert.equal(errno(() => emu.traceEnable(8)), "EINVAL"); // too small
      assert.equal(emu.tracePending(), false);
      assert.deepEqual(emu.traceTake(), []);
      emu.traceEnable(16);
      assert.equal(errno(() => emu.traceEnable(16)), "EBUSY");
      emu.writeReg32(NVME_REG.AQA, encodeAqa(4, 4));
      emu.writeReg64(NVME_REG.ASQ, BigInt(pfn) * 4096n);
      emu.writeReg64(NVME_REG.ACQ, BigInt(pfn + 1) * 4096n);
      emu.writeReg32(
        NVME_REG.CC,
        encodeCc({ en: true, css: 0, mps: 0, shn: 0, iosqes: 6, iocqes: 4 }),
      );
      emu.process(1);
      assert.equal(emu.readReg32(NVME_REG.CSTS) & 1, 1);
      const id = BigInt(pfn + 2) * 4096n;
      // A refused access is not traced: PRP1 outside the registered frames.
      for (const [cid, prp1] of [[3, id], [4, 0x7000_0000n]] as const) {
        buf.bytes.set(
          encodeNvmeCommand({ opcode: NVME_ADMIN.IDENTIFY, commandId: cid, prp1, cdw10: 1 }),
          (cid - 3) * 64,
        );
      }
      emu.writeReg32(doorbellOffset(0, false), 2);
      emu.process(8);
      const asq = BigInt(pfn) * 4096n, acq = BigInt(pfn + 1) * 4096n;
      assert.equal(emu.tracePending(), true);
      assert.deepEqual(emu.traceTake(), [
        { addr: asq, len: 64, write: false },
        { addr: id, len: 4096, write: true },
        { addr: asq + 64n, len: 64, write: false },
        { addr: acq, len: 16, write: true },
        { addr: acq + 16n, len: 16, write: true },
      ]);
      assert.equal(emu.tracePending(), false);
      assert.equal(emu.traceDropped(), 0);
      // The next slot holds zeros (opcode 0, Delete I/O SQ, refused): its SQE read and its
      // CQE write, no data access.
      emu.writeReg32(doorbellOffset(0, false), 3);
      emu.process(8);
      assert.deepEqual(emu.traceTake(), [
        { addr: asq + 128n, len: 64, write: false },
        { addr: acq + 32n, len: 16, write: true },
      ]);
    } finally {
      emu[Symbol.dispose]();
      buf[Symbol.dispose]();
    }
    assert.equal(NvmeEmu.ledger(), 0);
  },
});

const ringWhy = WHY ?? liveRingUnavailable();
Deno.test({
  name: "thread mode: irqRing delivers each vector as a MSG_RING CQE in a live ring",
  ignore: ringWhy !== null,
  fn: () => {
    const r = LiveRing.create(8);
    if (!("ring" in r)) throw new Error(`io_uring_setup: ${r.res}`);
    using ring = r.ring;
    const emu = NvmeEmu.create({ ...CFG, mode: "thread", idlePollNs: 20_000 });
    const buf = allocBuffer(4 * 4096);
    try {
      const pfn = 0x60000;
      emu.frameMap(pfn, 4, buf.ptr);
      emu.irqRing(ring.fd, 0x1000n);
      emu.writeReg32(NVME_REG.AQA, encodeAqa(4, 4));
      emu.writeReg64(NVME_REG.ASQ, BigInt(pfn) * 4096n);
      emu.writeReg64(NVME_REG.ACQ, BigInt(pfn + 1) * 4096n);
      emu.writeReg32(
        NVME_REG.CC,
        encodeCc({ en: true, css: 0, mps: 0, shn: 0, iosqes: 6, iocqes: 4 }),
      );
      for (let i = 0; i < 1000 && (emu.readReg32(NVME_REG.CSTS) & 1) === 0; i++) {
        emu.waitInterrupt(1_000_000n);
      }
      buf.bytes.set(
        encodeNvmeCommand({
          opcode: NVME_ADMIN.IDENTIFY,
          commandId: 4,
          prp1: BigInt(pfn + 2) * 4096n,
          cdw10: 1,
        }),
        0,
      );
      emu.writeReg32(doorbellOffset(0, false), 1);
      assert.equal(ring.waitCqes(1, 2_000_000_000), 0);
      const cqes = ring.reap();
      assert.equal(cqes.length, 1);
      assert.equal(cqes[0].userData, 0x1000n); // base + vector 0
      assert.equal(cqes[0].res, 0);
      assert.deepEqual(emu.deliverInterrupts(), [0]);
      assert.equal(decodeCqe(buf.bytes, 4096).commandId, 4);
      assert.ok(emu.stats().irqMessages >= 1);
      emu.irqRing(-1, 0n);
    } finally {
      emu[Symbol.dispose]();
      buf[Symbol.dispose]();
    }
    assert.equal(NvmeEmu.ledger(), 0);
  },
});
