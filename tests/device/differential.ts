/**
 * Differential device test engine: the TypeScript controller (sim/device/)
 * and the C controller (libnvme_emu.so, inline mode) fed the same seeded
 * stream of commands through host memory at the same pfns. After every step
 * both sides' CQ memory, interrupt vectors and registers must be equal;
 * periodically every host frame and the media too.
 *
 * The harness is the host driver: it writes SQEs, PRP lists and SGL segments
 * into both memories, rings doorbells on both, steps both (TS `poll(budget)`,
 * C `process(budget)`), reaps from the (equal) CQs, and keeps queues, AERs,
 * resets and the IOMMU table moving.
 *
 * @module
 */

import { NvmeController } from "../../sim/device/controller.ts";
import { DeviceDma } from "../../sim/device/dma.ts";
import { nvmeMapDptr } from "../../sim/device/dptr.ts";
import {
  decodeCqe,
  decodeNvmeCommand,
  encodeNvmeCommand,
  NVME_ADMIN,
  NVME_CMD,
  NVME_CQE_SIZE,
  NVME_SQE_SIZE,
  nvmeStatusString,
} from "../../sim/device/nvme_spec.ts";
import { NVME_REG } from "../../sim/device/port.ts";
import {
  NVME_FAULT_BAD_CID_XOR,
  NVME_FAULT_KINDS,
  type NvmeFaultKind,
  type NvmeFaultRule,
} from "../../sim/device/faults.ts";
import type { PowerCutReport } from "../../sim/device/write_cache.ts";
import { doorbellOffset, encodeAqa, encodeCc } from "../../sim/device/regs.ts";
import { Rng } from "../../sim/random.ts";
import { allocBuffer, type NativeBuffer } from "../../ffi/libc.ts";
import { NvmeEmu, type NvmeEmuVariant } from "../../ffi/nvme_emu.ts";
import {
  type AddrSpace,
  ByteTableTranslator,
  FrameMem,
  FramePort,
  genAdmin,
  type GenCmd,
  genCreateCq,
  genCreateSq,
  genIo,
  type HostLayout,
  makeLayout,
  pa,
  PAGE,
  PTE_READ,
  PTE_WRITE,
  REMAP_PAGES,
  RUN_PAGES,
  type StreamConfig,
  streamConfig,
  TableBuilder,
} from "./cmd_stream.ts";

type IommuMode = "none" | "identity" | "translate";

/** Counters both sides keep, compared at checkpoints. */
export interface SideCounters {
  dmaReads: number;
  dmaWrites: number;
  invalidDoorbells: number;
  droppedEvents: number;
  dmaFaults: number;
  iotlbHits: number;
  iotlbMisses: number;
  iotlbEvictions: number;
  /** Faults injected, by kind. */
  faults: Record<NvmeFaultKind, number>;
  /** Write commands completed into the volatile write cache. */
  cachedWrites: number;
  /** Cached blocks written to the media. */
  blocksDestaged: number;
}

/** One device under test, with its own copy of host memory. */
export interface DevSide extends Disposable {
  readonly name: string;
  readonly mem: FrameMem;
  /** Vectors raised by the last step, in handler order. */
  vectors: number[];
  readReg32(off: number): number;
  writeReg32(off: number, v: number): void;
  step(budget: number): number;
  mediaRead(nsid: number, pos: number, len: number): Uint8Array;
  iommu(mode: IommuMode, root: bigint): void;
  invalidate(iovaPfn: number, npages: number): void;
  counters(): SideCounters;
  addFault(rule: NvmeFaultRule): void;
  clearFaults(): void;
  powerCut(seed: number): PowerCutReport;
}

class TsSide implements DevSide {
  readonly name: string;
  readonly mem = new FrameMem();
  vectors: number[] = [];
  readonly #tr: ByteTableTranslator;
  readonly #port: FramePort;
  readonly #ctrl: NvmeController;

  constructor(name: string, layout: HostLayout, cfg: StreamConfig, seed: number) {
    this.name = name;
    for (const [pfn, n] of layout.runs) {
      const backing = new Uint8Array(n * PAGE);
      for (let i = 0; i < n; i++) {
        this.mem.pages.set(pfn + i, backing.subarray(i * PAGE, (i + 1) * PAGE));
      }
    }
    this.#tr = new ByteTableTranslator(this.mem, cfg.iotlbEntries);
    this.#port = new FramePort(this.mem, this.#tr);
    const watch = DEBUG.watchPfn ?? NaN;
    const wp = this.mem.pages.get(watch);
    if (wp || watch === 0) {
      const byPage = new Map<Uint8Array, number>();
      for (const [k, v] of this.mem.pages) byPage.set(v, k);
      this.#port.watch = (page, off, n, addr, pos) => {
        if (page === wp || watch === 0) {
          console.log(
            `TS write pfn ${byPage.get(page)} +${off} len ${n} (access 0x${
              addr.toString(16)
            } +${pos})`,
          );
        }
      };
    }
    this.#ctrl = new NvmeController(this.#port, {
      seed,
      namespaces: cfg.namespaces,
      maxQueues: cfg.maxQueues,
      mqes: cfg.mqes,
      mdts: cfg.mdts,
      sgls: cfg.sgls,
      volatileWriteCache: cfg.vwc,
      writeCacheBytes: cfg.writeCacheBytes,
    });
    for (let v = 0; v <= cfg.maxQueues; v++) {
      this.#ctrl.setIrqHandler(v, () => this.vectors.push(v));
    }
  }
  addFault(rule: NvmeFaultRule): void {
    this.#ctrl.addFault(rule);
  }
  clearFaults(): void {
    this.#ctrl.clearFaults();
  }
  powerCut(seed: number): PowerCutReport {
    return this.#ctrl.powerCut(seed);
  }
  readReg32(off: number): number {
    return this.#ctrl.readReg32(off) >>> 0;
  }
  writeReg32(off: number, v: number): void {
    this.#ctrl.writeReg32(off, v);
  }
  step(budget: number): number {
    return this.#ctrl.poll(budget);
  }
  mediaRead(nsid: number, pos: number, len: number): Uint8Array {
    return this.#ctrl.mediaRead(nsid, pos, len);
  }
  iommu(mode: IommuMode, root: bigint): void {
    this.#tr.attach(mode, root);
  }
  invalidate(iovaPfn: number, npages: number): void {
    this.#tr.invalidate(iovaPfn, npages);
  }
  iotlbHas(iovaPfn: number): boolean {
    return this.#tr.mode === "translate" && this.#tr.iotlb.has(iovaPfn);
  }
  counters(): SideCounters {
    return {
      dmaReads: this.#port.reads,
      dmaWrites: this.#port.writes,
      invalidDoorbells: this.#ctrl.invalidDoorbellWrites,
      droppedEvents: this.#ctrl.droppedEvents,
      dmaFaults: this.#port.faults,
      iotlbHits: this.#tr.iotlb.hits,
      iotlbMisses: this.#tr.iotlb.misses,
      iotlbEvictions: this.#tr.iotlb.evictions,
      faults: this.#ctrl.faultsInjected,
      cachedWrites: this.#ctrl.writeCache.cachedWrites,
      blocksDestaged: this.#ctrl.writeCache.blocksDestaged,
    };
  }
  [Symbol.dispose](): void {}
}

class CSide implements DevSide {
  readonly name: string;
  readonly mem = new FrameMem();
  vectors: number[] = [];
  readonly emu: NvmeEmu;
  readonly #buf: NativeBuffer;

  readonly #files: string[] = [];

  constructor(
    variant: NvmeEmuVariant,
    layout: HostLayout,
    cfg: StreamConfig,
    seed: number,
    fileMedia: boolean,
  ) {
    this.name = `C(${variant}${fileMedia ? ", file media" : ""})`;
    const total = layout.runs.reduce((n, [, k]) => n + k, 0);
    const namespaces = cfg.namespaces.map((ns, i) => {
      if (!fileMedia) return ns;
      const path = Deno.makeTempFileSync({ prefix: `devdiff-ns${i + 1}-` });
      this.#files.push(path);
      // Direct I/O into host pages where aligned, or always bounced, by seed.
      return { ...ns, mediaPath: path, noDirect: ((seed >>> i) & 1) === 1 };
    });
    this.#buf = allocBuffer(total * PAGE);
    this.emu = NvmeEmu.create({
      namespaces,
      maxQueues: cfg.maxQueues,
      mqes: cfg.mqes,
      mdts: cfg.mdts,
      sgls: cfg.sgls,
      volatileWriteCache: cfg.vwc,
      writeCacheBytes: cfg.writeCacheBytes,
      mode: "inline",
      seed,
      iotlbEntries: cfg.iotlbEntries,
    }, { variant });
    let off = 0;
    for (const [pfn, n] of layout.runs) {
      const p = Deno.UnsafePointer.offset(this.#buf.ptr, off) as Deno.PointerObject;
      this.emu.frameMap(pfn, n, p);
      for (let i = 0; i < n; i++) {
        this.mem.pages.set(pfn + i, this.#buf.bytes.subarray(off + i * PAGE, off + (i + 1) * PAGE));
      }
      off += n * PAGE;
    }
    for (let v = 0; v <= cfg.maxQueues; v++) this.emu.setIrqHandler(v, () => this.vectors.push(v));
  }
  readReg32(off: number): number {
    return this.emu.readReg32(off);
  }
  writeReg32(off: number, v: number): void {
    this.emu.writeReg32(off, v);
  }
  step(budget: number): number {
    return this.emu.process(budget);
  }
  mediaRead(nsid: number, pos: number, len: number): Uint8Array {
    return this.emu.mediaRead(nsid, pos, len);
  }
  iommu(mode: IommuMode, root: bigint): void {
    this.emu.iommuAttach(mode, root);
  }
  invalidate(iovaPfn: number, npages: number): void {
    const seq = this.emu.invPost(iovaPfn, npages);
    if (!this.emu.invWait(seq, 1_000_000_000n) || this.emu.invDone() < seq) {
      throw new Error(`C invalidation ${seq} not acknowledged`);
    }
  }
  counters(): SideCounters {
    const s = this.emu.stats();
    return {
      dmaReads: s.dmaReads,
      dmaWrites: s.dmaWrites,
      invalidDoorbells: s.invalidDoorbells,
      droppedEvents: s.droppedEvents,
      dmaFaults: s.dmaFaults,
      iotlbHits: s.iotlbHits,
      iotlbMisses: s.iotlbMisses,
      iotlbEvictions: s.iotlbEvictions,
      faults: this.emu.faultsInjected,
      cachedWrites: s.cachedWrites,
      blocksDestaged: s.blocksDestaged,
    };
  }
  addFault(rule: NvmeFaultRule): void {
    this.emu.addFault(rule);
  }
  clearFaults(): void {
    this.emu.clearFaults();
  }
  powerCut(seed: number): PowerCutReport {
    return this.emu.powerCut(seed);
  }
  [Symbol.dispose](): void {
    this.emu[Symbol.dispose]();
    this.#buf[Symbol.dispose]();
    for (const f of this.#files) Deno.removeSync(f);
  }
}

/** A difference between the two sides (or a harness invariant broken). */
export class DiffMismatch extends Error {
  /** Build with the full report as the message. */
  constructor(report: string) {
    super(report);
    this.name = "DiffMismatch";
  }
}

/** Options of one differential run. */
export interface DiffOptions {
  /** Seed of everything: layout, configuration, stream. */
  seed: number;
  /** Commands (SQEs) to submit. */
  cmds: number;
  /** Side B: "plain"/"asan" C library, or "ts" (a second TS controller, to test the harness). */
  variant: NvmeEmuVariant | "ts";
  /** Compare every frame and the media every this many steps (default 400). */
  fullCheckEvery?: number;
  /** Compare the DMA, IOTLB and event counters after every step (default: report only). */
  strictCounters?: boolean;
  /** The C side's namespaces are temporary files (its io_uring media path), not memory. */
  fileMedia?: boolean;
}

/** What a run did. */
export interface DiffSummary {
  seed: number;
  cmds: number;
  steps: number;
  /** Completions by status text. */
  statuses: Record<string, number>;
  /** Commands by kind. */
  kinds: Record<string, number>;
  resets: number;
  modeSwitches: number;
  invalidations: number;
  fullChecks: number;
  /** IOTLB entries made stale (PTE cleared while cached) and then used. */
  staleEpisodes: number;
  staleUses: number;
  /** Reaps that found a CQ full (completions held), and CQ phase wraps seen. */
  cqFull: number;
  cqWraps: number;
  counters: SideCounters;
  /** Counter differences (reported; fatal only with strictCounters). */
  counterDiffs: string[];
  /** Fault rules added (to both sides), and clears. */
  faultRules: number;
  faultClears: number;
  /** Completions that arrived with a bad command id (bad-cid faults seen by the host). */
  badCidCqes: number;
  /** Resets the host did because a command would never complete (drop, bad-cid). */
  timeoutResets: number;
  /** The power cut at the end of the run, as both sides reported it. */
  powerCut: PowerCutReport | null;
}

interface Pending {
  cid: number;
  sqid: number;
  label: string;
  sqe: Uint8Array;
  lists: number[];
  writes: [bigint, Uint8Array][];
  step: number;
  status?: number;
  done?: (status: number, result: number) => void;
}

interface HSq {
  id: number;
  base: bigint;
  size: number;
  cqid: number;
  tail: number;
  head: number;
  dirty: boolean;
  pending: Map<number, Pending>;
  nextCid: number;
}

interface HCq {
  id: number;
  base: bigint;
  size: number;
  head: number;
  acked: number;
  phase: 0 | 1;
}

const TRACE_LINES = 48;

function envNum(name: string): number | undefined {
  const v = Deno.env.get(name);
  return v === undefined ? undefined : Number(v);
}

/**
 * Debugging aids, read once: DEVDIFF_WATCH_PFN (log the TS device's writes to
 * that pfn, 0 for all, and each step), DEVDIFF_SNAP_PFN (say which side's step
 * changed that pfn), DEVDIFF_FIND (on a frame mismatch, search A's frames and
 * both media for B's new bytes), DEVDIFF_LABELS (status counts per command kind).
 */
const DEBUG = {
  watchPfn: envNum("DEVDIFF_WATCH_PFN"),
  snapPfn: envNum("DEVDIFF_SNAP_PFN"),
  find: Deno.env.get("DEVDIFF_FIND") !== undefined,
  labels: Deno.env.get("DEVDIFF_LABELS") !== undefined,
};
const hex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");

function firstDiff(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

/** The host driver and comparator for one seed. */
class Harness {
  readonly rng: Rng;
  readonly cfg: StreamConfig;
  readonly layout: HostLayout;
  readonly a: TsSide;
  readonly b: DevSide;
  readonly opts: DiffOptions;
  readonly trace: string[] = [];
  /** The most recent completed commands, for reports. */
  readonly completed: Pending[] = [];
  readonly sum: DiffSummary;
  readonly sqs = new Map<number, HSq>();
  readonly cqs = new Map<number, HCq>();
  readonly busyQ = new Set<number>();
  readonly backlog: (() => void)[] = [];
  /** IOMMU restorations, run at the next step whatever happens (resets included). */
  readonly restore: (() => void)[] = [];
  readonly freeLists: number[];
  readonly table: TableBuilder;
  /** Remap window truth: physical pfn and prot of each IOVA page (prot 0: absent). */
  readonly remap: { pfn: number; prot: bigint }[] = [];
  mode: IommuMode = "none";
  labelStats: Record<string, number> | null = DEBUG.labels ? {} : null;
  step = 0;
  submitted = 0;
  enabled = false;
  aers = 0;
  wantQueues: number;
  space: AddrSpace;
  /** Live fault rules (both sides hold the same). */
  rules = 0;
  /** Drops and bad command ids injected that the host has not yet timed out. */
  faultsSeen = 0;
  /** Step at which the host gives up on a command that will never complete (resets). */
  timeoutAt: number | undefined;

  constructor(opts: DiffOptions) {
    this.opts = opts;
    this.rng = new Rng(opts.seed);
    this.cfg = streamConfig(this.rng);
    this.layout = makeLayout(this.rng, this.cfg.maxQueues);
    this.wantQueues = this.rng.range(1, this.cfg.maxQueues);
    const devSeed = this.rng.nextU32();
    this.a = new TsSide("TS", this.layout, this.cfg, devSeed);
    this.b = opts.variant === "ts"
      ? new TsSide("TS2", this.layout, this.cfg, devSeed)
      : new CSide(opts.variant, this.layout, this.cfg, devSeed, opts.fileMedia ?? false);
    this.freeLists = this.layout.lists.slice();
    this.sum = {
      seed: opts.seed,
      cmds: 0,
      steps: 0,
      statuses: {},
      kinds: {},
      resets: 0,
      modeSwitches: 0,
      invalidations: 0,
      fullChecks: 0,
      staleEpisodes: 0,
      staleUses: 0,
      cqFull: 0,
      cqWraps: 0,
      counters: this.a.counters(),
      counterDiffs: [],
      faultRules: 0,
      faultClears: 0,
      badCidCqes: 0,
      timeoutResets: 0,
      powerCut: null,
    };
    // Identical initial contents: random data pages, zero elsewhere.
    for (const run of this.layout.dataRuns) {
      const b = this.rng.fill(new Uint8Array(RUN_PAGES * PAGE));
      this.write(pa(run), b);
    }
    this.table = new TableBuilder(
      this.layout.tables,
      (p, b) => this.write(p, b),
      (p, n) => this.a.mem.read(p, n),
    );
    for (const [pfn, n] of this.layout.runs) {
      if (this.layout.tables.includes(pfn)) continue;
      for (let i = 0; i < n; i++) this.table.set(pfn + i, pfn + i, PTE_READ | PTE_WRITE);
    }
    for (let i = 0; i < REMAP_PAGES; i++) {
      const pfn = this.rng.pick(this.layout.dataRuns) + this.rng.int(RUN_PAGES);
      const x = this.rng.float();
      const prot = x < 0.72 ? 3n : x < 0.84 ? PTE_READ : x < 0.94 ? PTE_WRITE : 0n;
      this.remap.push({ pfn, prot });
      this.table.set(this.layout.remapBase + i, pfn, prot);
    }
    this.space = {
      rng: this.rng,
      layout: this.layout,
      mode: "none",
      takeList: () =>
        this.freeLists.length > 0
          ? this.freeLists.splice(this.rng.int(this.freeLists.length), 1)[0]
          : undefined,
      risky: false,
      prefer: undefined,
      preferUses: 0,
      remapUsable: (i: number) => this.remap[i].prot === 3n,
    };
  }

  // ------------------------------------------------------------ plumbing

  write(p: bigint, b: Uint8Array): void {
    this.a.mem.write(p, b);
    this.b.mem.write(p, b);
  }

  reg(off: number, v: number): void {
    this.log(`  reg 0x${off.toString(16)} <- 0x${(v >>> 0).toString(16)}`);
    this.a.writeReg32(off, v);
    this.b.writeReg32(off, v);
  }

  reg64(off: number, v: bigint): void {
    this.reg(off, Number(v & 0xffff_ffffn));
    this.reg(off + 4, Number(v >> 32n));
  }

  log(s: string): void {
    this.trace.push(`[${this.step}] ${s}`);
    if (this.trace.length > TRACE_LINES) this.trace.shift();
  }

  fail(what: string, detail: string): never {
    const rep = [
      `DIFFERENTIAL MISMATCH (seed ${this.opts.seed}, step ${this.step}, command ${this.submitted}): ${what}`,
      detail,
      `config: ${JSON.stringify(this.cfg, (_, v) => typeof v === "bigint" ? String(v) : v)}`,
      `iommu mode: ${this.mode}`,
      `replay: DEVDIFF_SEED=${this.opts.seed} DEVDIFF_CMDS=${this.opts.cmds} deno test -A tests/device/differential_test.ts`,
      `   or: deno run -A tests/device/differential_main.ts --seed=${this.opts.seed} --cmds=${this.opts.cmds} --variant=${this.opts.variant}`,
      "trace (most recent last):",
      ...this.trace,
    ].join("\n");
    throw new DiffMismatch(rep);
  }

  eq(what: string, x: unknown, y: unknown): void {
    if (x !== y) this.fail(what, `${this.a.name}: ${String(x)}\n${this.b.name}: ${String(y)}`);
  }

  pendingByCid(sqid: number, cid: number): Pending | undefined {
    return this.sqs.get(sqid)?.pending.get(cid);
  }

  compareBytes(
    what: string,
    p: bigint,
    x: Uint8Array | null,
    y: Uint8Array | null,
    unit = 0,
  ): void {
    if (x === null || y === null) {
      if (x !== y) this.fail(what, "one side cannot read the range");
      return;
    }
    const i = firstDiff(x, y);
    if (i < 0) return;
    let last = i;
    let count = 0;
    for (let j = i; j < Math.min(x.length, y.length); j++) {
      if (x[j] !== y[j]) {
        last = j;
        count++;
      }
    }
    let detail = `first difference at byte ${i} (address 0x${(p + BigInt(i)).toString(16)}), ` +
      `last at byte ${last}, ${count} bytes differ`;
    if (unit === NVME_CQE_SIZE) {
      const at = i - (i % 16);
      const ca = decodeCqe(x, at);
      const cb = decodeCqe(y, at);
      const pend = this.pendingByCid(ca.sqId, ca.commandId) ??
        this.pendingByCid(cb.sqId, cb.commandId);
      detail += `\n${this.a.name} CQE: ${hex(x.subarray(at, at + 16))} status ${
        nvmeStatusString(ca.status)
      } sq ${ca.sqId} cid ${ca.commandId} phase ${ca.phase}`;
      detail += `\n${this.b.name} CQE: ${hex(y.subarray(at, at + 16))} status ${
        nvmeStatusString(cb.status)
      } sq ${cb.sqId} cid ${cb.commandId} phase ${cb.phase}`;
      if (pend) detail += `\ncommand: ${pend.label}\nSQE: ${hex(pend.sqe)}`;
    } else {
      detail += `\n${this.a.name}: ${hex(x.subarray(i, i + 32))}\n${this.b.name}: ${
        hex(y.subarray(i, i + 32))
      }`;
      detail += `\n${this.describeRecent(p + BigInt(i))}`;
    }
    this.fail(what, detail);
  }

  describeCmd(p: Pending): string {
    const st = p.status === undefined ? "pending" : nvmeStatusString(p.status);
    const lines = [
      `  sq ${p.sqid} cid ${p.cid} (step ${p.step}) ${p.label}: ${st}`,
      `    SQE ${hex(p.sqe)}`,
    ];
    for (const [at, b] of p.writes) lines.push(`    at 0x${at.toString(16)}: ${hex(b)}`);
    return lines.join("\n");
  }

  /** Recent and outstanding commands whose data pointer covers bus address `addr` (walked now). */
  describeRecent(addr: bigint): string {
    const pend = [...this.sqs.values()].flatMap((q) => [...q.pending.values()]);
    const tr = new ByteTableTranslator(this.a.mem, 1 << 16);
    tr.attach(this.mode, this.table.root);
    const dma = new DeviceDma(new FramePort(this.a.mem, tr));
    const hits: string[] = [];
    for (const p of [...this.completed, ...pend]) {
      const cmd = decodeNvmeCommand(p.sqe);
      if (cmd.opcode !== NVME_CMD.READ && cmd.opcode !== NVME_CMD.WRITE) continue;
      const ns = this.cfg.namespaces[cmd.nsid - 1];
      if (!ns) continue;
      const len = ((cmd.cdw12 & 0xffff) + 1) * ns.lbaSize;
      const segs = nvmeMapDptr(dma, cmd, len, cmd.opcode === NVME_CMD.WRITE, {
        pageSize: PAGE,
        sgls: this.cfg.sgls,
      });
      if (typeof segs === "number") continue;
      let pos = 0;
      const faults: string[] = [];
      for (const sg of segs) {
        if (sg.bitBucket) continue;
        for (let o = 0; o < sg.len;) {
          const a = sg.addr + BigInt(o);
          const t = tr.translatePage(a, cmd.opcode === NVME_CMD.READ);
          if (typeof t !== "bigint") faults.push(`0x${a.toString(16)} ${t.reason}`);
          else if (!this.a.mem.pages.has(Number(t >> 12n))) {
            faults.push(`0x${a.toString(16)} no frame`);
          }
          o += PAGE - Number(a & 0xfffn);
        }
      }
      const segText = segs.map((x) =>
        `0x${x.addr.toString(16)}+${x.len}${x.bitBucket ? " bit bucket" : ""}`
      ).join(", ");
      for (const sg of segs) {
        // Physical addresses of the segment's pages, through the current translation.
        for (let o = 0; o < sg.len;) {
          const a = sg.addr + BigInt(o);
          const n = Math.min(PAGE - Number(a & 0xfffn), sg.len - o);
          const t = tr.translatePage(a, false);
          const phys = typeof t === "bigint" ? t + (a & 0xfffn) : -1n;
          if (phys <= addr && addr < phys + BigInt(n)) {
            hits.push(
              `${this.describeCmd(p)}\n    covers it at transfer byte ${
                pos + o + Number(addr - phys)
              }` +
                `${sg.bitBucket ? " (bit bucket)" : ""}\n    segments now: ${segText}` +
                `\n    faulting pages now: ${faults.join(", ") || "none"}`,
            );
          }
          o += n;
        }
        pos += sg.len;
      }
    }
    return [
      `recent/outstanding commands whose data covers 0x${
        addr.toString(16)
      } (walked now, TS memory):`,
      ...(hits.length ? [...new Set(hits)] : ["  none"]),
    ].join("\n");
  }

  // -------------------------------------------------------------- checks

  checkStep(pa_: number, pb: number): void {
    this.eq("completions posted by the step", pa_, pb);
    this.eq("interrupt vectors raised", this.a.vectors.join(","), this.b.vectors.join(","));
    this.eq("CSTS", this.a.readReg32(NVME_REG.CSTS), this.b.readReg32(NVME_REG.CSTS));
    this.eq("CC", this.a.readReg32(NVME_REG.CC), this.b.readReg32(NVME_REG.CC));
    if (this.opts.strictCounters) this.checkCounters();
    for (const cq of this.cqs.values()) {
      const n = cq.size * NVME_CQE_SIZE;
      this.compareBytes(
        `CQ ${cq.id} memory`,
        cq.base,
        this.a.mem.read(cq.base, n),
        this.b.mem.read(cq.base, n),
        NVME_CQE_SIZE,
      );
    }
  }

  fullCheck(): void {
    this.sum.fullChecks++;
    if (this.opts.strictCounters) this.checkCounters();
    const bad: string[] = [];
    for (const [pfn, n] of this.layout.runs) {
      for (let i = 0; i < n; i++) {
        const x = this.a.mem.pages.get(pfn + i)!;
        const y = this.b.mem.pages.get(pfn + i)!;
        const j = firstDiff(x, y);
        if (j >= 0) {
          let k = x.length - 1;
          while (x[k] === y[k]) k--;
          bad.push(`pfn ${pfn + i} bytes ${j}..${k}`);
        }
      }
    }
    if (bad.length) this.log(`frames differing: ${bad.slice(0, 12).join("; ")}`);
    if (bad.length && DEBUG.find) {
      // Where do the B side's new bytes come from? Search A's frames and media for them.
      const [pfnS, range] = bad[0].replace("pfn ", "").split(" bytes ");
      const from = Number(range.split("..")[0]);
      const needle = this.b.mem.pages.get(Number(pfnS))!.slice(from, from + 24);
      const hexN = hex(needle);
      for (const [pfn, page] of this.a.mem.pages) {
        const h = hex(page);
        let at = h.indexOf(hexN);
        while (at >= 0) {
          if (at % 2 === 0) this.log(`  found in ${this.a.name} pfn ${pfn} at ${at / 2}`);
          at = h.indexOf(hexN, at + 1);
        }
      }
      this.cfg.namespaces.forEach((ns, i) => {
        const h = hex(this.a.mediaRead(i + 1, 0, Number(ns.sizeBytes)));
        const at = h.indexOf(hexN);
        if (at >= 0) this.log(`  found in ${this.a.name} media ns ${i + 1} at ${at / 2}`);
        const hb = hex(this.b.mediaRead(i + 1, 0, Number(ns.sizeBytes)));
        const bt = hb.indexOf(hexN);
        if (bt >= 0) this.log(`  found in ${this.b.name} media ns ${i + 1} at ${bt / 2}`);
      });
    }
    for (const [pfn, n] of this.layout.runs) {
      const p = pa(pfn);
      this.compareBytes(
        `host frames ${pfn}+${n}`,
        p,
        this.a.mem.read(p, n * PAGE),
        this.b.mem.read(p, n * PAGE),
      );
    }
    this.cfg.namespaces.forEach((ns, i) => {
      const size = Number(ns.sizeBytes);
      const chunk = 256 * 1024;
      for (let pos = 0; pos < size; pos += chunk) {
        const n = Math.min(chunk, size - pos);
        this.compareBytes(
          `media of namespace ${i + 1} at ${pos}`,
          BigInt(pos),
          this.a.mediaRead(i + 1, pos, n),
          this.b.mediaRead(i + 1, pos, n),
        );
      }
    });
    for (const off of [0, 4, 8, 0x0c, 0x10, 0x14, 0x1c, 0x20, 0x24, 0x28, 0x2c, 0x30, 0x34]) {
      this.eq(`register 0x${off.toString(16)}`, this.a.readReg32(off), this.b.readReg32(off));
    }
    this.checkCounters();
  }

  checkCounters(): void {
    const x = this.a.counters();
    const y = this.b.counters();
    const flat = (c: SideCounters) => {
      const { faults, ...rest } = c;
      const out: Record<string, number> = { ...rest };
      for (const k of NVME_FAULT_KINDS) out[`faults.${k}`] = faults[k];
      return out;
    };
    const fx = flat(x);
    const fy = flat(y);
    for (const k of Object.keys(fx)) {
      if (fx[k] === fy[k]) continue;
      const msg = `counter ${k}: ${this.a.name} ${fx[k]}, ${this.b.name} ${
        fy[k]
      } (step ${this.step})`;
      if (this.opts.strictCounters) this.fail(`counter ${k}`, msg);
      if (!this.sum.counterDiffs.some((d) => d.startsWith(`counter ${k}:`))) {
        this.sum.counterDiffs.push(msg);
      }
    }
    this.sum.counters = x;
  }

  // --------------------------------------------------------- host driver

  room(sq: HSq): number {
    return sq.size - 1 - ((sq.tail - sq.head + sq.size) % sq.size);
  }

  nextCid(sq: HSq): number {
    for (;;) {
      const c = sq.nextCid;
      sq.nextCid = (sq.nextCid + 1) & 0xffff;
      if (!sq.pending.has(c)) return c;
    }
  }

  submit(sq: HSq, g: GenCmd, kind: string, done?: Pending["done"]): void {
    for (const [p, b] of g.writes) this.write(p, b);
    const cid = new DataView(g.sqe.buffer, g.sqe.byteOffset).getUint16(2, true);
    this.write(sq.base + BigInt(sq.tail * NVME_SQE_SIZE), g.sqe);
    sq.tail = (sq.tail + 1) % sq.size;
    sq.dirty = true;
    sq.pending.set(cid, {
      cid,
      sqid: sq.id,
      label: g.label,
      sqe: g.sqe,
      lists: g.lists,
      writes: g.writes,
      step: this.step,
      done,
    });
    this.submitted++;
    this.sum.kinds[kind] = (this.sum.kinds[kind] ?? 0) + 1;
    this.log(`sq ${sq.id} cid ${cid}: ${g.label}`);
  }

  adminSqe(sqe: Uint8Array, label: string, done?: Pending["done"]): boolean {
    const sq = this.sqs.get(0);
    if (!sq || this.room(sq) < 1) return false;
    new DataView(sqe.buffer).setUint16(2, this.nextCid(sq), true);
    this.submit(sq, { sqe, lists: [], label, writes: [] }, label.split(" ")[0], done);
    return true;
  }

  freeQid(): number | undefined {
    const free: number[] = [];
    for (let q = 1; q <= this.cfg.maxQueues; q++) {
      if (!this.cqs.has(q) && !this.sqs.has(q) && !this.busyQ.has(q)) free.push(q);
    }
    return free.length ? this.rng.pick(free) : undefined;
  }

  zeroCq(qid: number): void {
    this.write(pa(this.layout.ioCq[qid]), new Uint8Array(PAGE));
  }

  /** Create CQ q then SQ q on it (or on another CQ). */
  createPair(): void {
    const q = this.freeQid();
    if (q === undefined) return;
    const r = this.rng;
    const cqSize = r.pick([2, 3, 4, 8, 16, 64, 256].filter((n) => n <= this.cfg.mqes));
    const sqSize = r.pick([2, 4, 8, 16, 32, 64].filter((n) => n <= this.cfg.mqes));
    const vector = r.chance(0.2) ? r.int(this.cfg.maxQueues + 1) : q;
    const ien = r.chance(0.9);
    const cqBase = pa(this.layout.ioCq[q]);
    this.zeroCq(q);
    this.busyQ.add(q);
    const ok = this.adminSqe(
      genCreateCq(0, q, cqBase, cqSize, vector, ien),
      `create-cq ${q} size ${cqSize} vector ${vector} ien ${ien}`,
      (st) => {
        if (st !== 0) {
          this.busyQ.delete(q);
          return;
        }
        this.cqs.set(q, { id: q, base: cqBase, size: cqSize, head: 0, acked: 0, phase: 1 });
        const others = [...this.cqs.keys()].filter((c) => c !== 0);
        const cqid = r.chance(0.75) ? q : r.pick(others);
        this.backlog.push(() => {
          const sqBase = pa(this.layout.ioSq[q]);
          const sent = this.adminSqe(
            genCreateSq(0, q, sqBase, sqSize, cqid),
            `create-sq ${q} size ${sqSize} cq ${cqid}`,
            (st2) => {
              this.busyQ.delete(q);
              if (st2 !== 0 || !this.cqs.has(cqid)) return;
              this.sqs.set(q, {
                id: q,
                base: sqBase,
                size: sqSize,
                cqid,
                tail: 0,
                head: 0,
                dirty: false,
                pending: new Map(),
                nextCid: r.int(0x10000),
              });
            },
          );
          if (!sent) this.busyQ.delete(q);
        });
      },
    );
    if (!ok) this.busyQ.delete(q);
  }

  /** Delete an idle I/O SQ, then its CQ when nothing else uses it. */
  deletePair(): void {
    const idle = [...this.sqs.values()].filter((s) =>
      s.id !== 0 && s.pending.size === 0 && !s.dirty && !this.busyQ.has(s.id)
    );
    if (idle.length === 0) return;
    const sq = this.rng.pick(idle);
    this.busyQ.add(sq.id);
    const ok = this.adminSqe(
      encodeNvmeCommand({ opcode: NVME_ADMIN.DELETE_SQ, commandId: 0, cdw10: sq.id }),
      `delete-sq ${sq.id}`,
      (st) => {
        this.busyQ.delete(sq.id);
        if (st !== 0) return;
        this.sqs.delete(sq.id);
        const cqid = sq.cqid;
        const users = [...this.sqs.values()].filter((s) => s.cqid === cqid);
        if (users.length > 0 || this.busyQ.has(cqid) || this.rng.chance(0.15)) return;
        this.backlog.push(() => {
          this.busyQ.add(cqid);
          const sent = this.adminSqe(
            encodeNvmeCommand({ opcode: NVME_ADMIN.DELETE_CQ, commandId: 0, cdw10: cqid }),
            `delete-cq ${cqid}`,
            (st2) => {
              this.busyQ.delete(cqid);
              if (st2 === 0) this.cqs.delete(cqid);
            },
          );
          if (!sent) this.busyQ.delete(cqid);
        });
      },
    );
    if (!ok) this.busyQ.delete(sq.id);
  }

  /** Queue commands with one field wrong (each fails; the device decides how). */
  queueError(): void {
    const r = this.rng;
    const max = this.cfg.maxQueues;
    const free = this.freeQid();
    const cqIds = [...this.cqs.keys()].filter((q) => q !== 0 && !this.busyQ.has(q));
    const sqIds = [...this.sqs.keys()].filter((q) => q !== 0 && !this.busyQ.has(q));
    const base = (q: number) => pa(this.layout.ioCq[q]);
    const cases: [string, Uint8Array][] = [
      ["create-cq qid 0", genCreateCq(0, 0, base(1), 4, 1, true)],
      ["create-cq qid > max", genCreateCq(0, max + 1 + r.int(3), base(1), 4, 1, true)],
      ["delete-sq 0", encodeNvmeCommand({ opcode: NVME_ADMIN.DELETE_SQ, commandId: 0, cdw10: 0 })],
      ["delete-cq 0", encodeNvmeCommand({ opcode: NVME_ADMIN.DELETE_CQ, commandId: 0, cdw10: 0 })],
      [
        "delete-sq > max",
        encodeNvmeCommand({ opcode: NVME_ADMIN.DELETE_SQ, commandId: 0, cdw10: max + 1 }),
      ],
      ["create-sq cq 0", genCreateSq(0, free ?? 1, pa(this.layout.ioSq[free ?? 1]), 4, 0)],
      [
        "create-sq cq > max",
        genCreateSq(0, free ?? 1, pa(this.layout.ioSq[free ?? 1]), 4, max + 1),
      ],
    ];
    if (cqIds.length) {
      const c = r.pick(cqIds);
      cases.push([`create-cq ${c} exists`, genCreateCq(0, c, base(c), 4, 1, true)]);
      // An SQ being deleted (busy) may be gone before this command runs: not "with sq".
      if ([...this.sqs.values()].some((s) => s.cqid === c && !this.busyQ.has(s.id))) {
        cases.push([
          `delete-cq ${c} with sq`,
          encodeNvmeCommand({ opcode: NVME_ADMIN.DELETE_CQ, commandId: 0, cdw10: c }),
        ]);
      }
      if (free !== undefined) {
        const sb = pa(this.layout.ioSq[free]);
        cases.push([`create-sq ${free} size 1`, genCreateSq(0, free, sb, 1, c)]);
        cases.push([
          `create-sq ${free} size > mqes`,
          genCreateSq(0, free, sb, this.cfg.mqes + 1 + r.int(100), c),
        ]);
        cases.push([
          `create-sq ${free} misaligned`,
          genCreateSq(0, free, sb + BigInt(r.range(1, 1023) * 4), 4, c),
        ]);
        cases.push([`create-sq ${free} pc 0`, genCreateSq(0, free, sb, 4, c, false)]);
      }
    }
    if (sqIds.length) {
      const s = r.pick(sqIds);
      const c = this.sqs.get(s)!.cqid;
      cases.push([`create-sq ${s} exists`, genCreateSq(0, s, pa(this.layout.ioSq[s]), 4, c)]);
    }
    if (free !== undefined) {
      const cb = base(free);
      cases.push([`create-cq ${free} size 1`, genCreateCq(0, free, cb, 1, free, true)]);
      cases.push([
        `create-cq ${free} size > mqes`,
        genCreateCq(0, free, cb, this.cfg.mqes + 1 + r.int(50), free, true),
      ]);
      cases.push([
        `create-cq ${free} misaligned`,
        genCreateCq(0, free, cb + BigInt(r.range(1, 255) * 16), 4, free, true),
      ]);
      cases.push([
        `create-cq ${free} vector ${max + 1}+`,
        genCreateCq(0, free, cb, 4, max + 1 + r.int(5), true),
      ]);
      const pc0 = genCreateCq(0, free, cb, 4, free, true);
      pc0[44] &= ~1;
      cases.push([`create-cq ${free} pc 0`, pc0]);
      cases.push([
        `delete-sq ${free} absent`,
        encodeNvmeCommand({ opcode: NVME_ADMIN.DELETE_SQ, commandId: 0, cdw10: free }),
      ]);
      cases.push([
        `delete-cq ${free} absent`,
        encodeNvmeCommand({ opcode: NVME_ADMIN.DELETE_CQ, commandId: 0, cdw10: free }),
      ]);
    }
    const [label, sqe] = r.pick(cases);
    // A case that unexpectedly succeeds on both sides would leave a queue the host does not
    // track: lock every qid until it completes, and fail loudly if it did succeed.
    const all = Array.from({ length: max }, (_, i) => i + 1).filter((q) => !this.busyQ.has(q));
    for (const q of all) this.busyQ.add(q);
    const ok = this.adminSqe(sqe, `qerr ${label}`, (st) => {
      for (const q of all) this.busyQ.delete(q);
      if (st === 0) this.fail("harness", `queue error case "${label}" succeeded on both sides`);
    });
    if (!ok) { for (const q of all) this.busyQ.delete(q); }
  }

  /** CC.EN = 0: both controllers drop everything; so does the host. */
  reset(reason: string): void {
    this.log(`reset (${reason})`);
    this.sum.resets++;
    this.reg(NVME_REG.CC, 0);
    this.enabled = false;
    for (const sq of this.sqs.values()) {
      for (const p of sq.pending.values()) this.freeLists.push(...p.lists);
    }
    this.sqs.clear();
    this.cqs.clear();
    this.busyQ.clear();
    this.backlog.length = 0;
    this.aers = 0;
    this.timeoutAt = undefined;
    if (this.rules > 0 && this.rng.chance(0.5)) this.clearFaults();
  }

  // ---------------------------------------------------------------- faults

  /** A random fault rule for this configuration (the same on both sides). */
  randomRule(): NvmeFaultRule {
    const r = this.rng;
    const kind = r.pick<NvmeFaultKind>([
      "read-error",
      "read-error",
      "write-fault",
      "write-fault",
      "admin-fail",
      "bad-cid",
      "bad-cid",
      "drop",
      "cfs",
    ]);
    const rule: NvmeFaultRule = { kind };
    const rare = kind === "drop" || kind === "cfs";
    if ((rare || kind === "bad-cid") && r.chance(0.2)) rule.admin = true;
    const admin = kind === "admin-fail" || rule.admin === true;
    if (admin) {
      if (r.chance(0.6)) {
        rule.opcode = r.pick([
          NVME_ADMIN.IDENTIFY,
          NVME_ADMIN.CREATE_CQ,
          NVME_ADMIN.CREATE_SQ,
          NVME_ADMIN.DELETE_SQ,
          NVME_ADMIN.SET_FEATURES,
          NVME_ADMIN.GET_FEATURES,
          NVME_ADMIN.ASYNC_EVENT,
        ]);
      }
    } else {
      const nsIdx = r.int(this.cfg.namespaces.length);
      if (r.chance(0.5)) rule.nsid = r.chance(0.9) ? nsIdx + 1 : r.pick([0, 3, 0xffff_ffff]);
      if (r.chance(0.5)) {
        const ns = this.cfg.namespaces[nsIdx];
        const total = Number(ns.sizeBytes / BigInt(ns.lbaSize));
        const first = r.int(total);
        rule.slbaFirst = BigInt(first);
        rule.slbaLast = BigInt(first + r.int(Math.max(1, total >> r.range(1, 6))));
      }
      if (!(kind === "read-error" || kind === "write-fault") && r.chance(0.3)) {
        rule.opcode = r.pick([NVME_CMD.FLUSH, NVME_CMD.WRITE, NVME_CMD.READ]);
      }
    }
    if (r.chance(0.85)) {
      rule.probability = rare ? r.pick([0.005, 0.02, 0.05]) : r.pick([0.02, 0.1, 0.3, 0.7, 1]);
    }
    if (r.chance(0.6) || (rare && rule.probability === undefined)) rule.count = r.range(1, 5);
    if (r.chance(0.5)) rule.dnr = true;
    return rule;
  }

  addFault(): void {
    if (this.rules >= 8) this.clearFaults();
    const rule = this.randomRule();
    this.log(
      `fault rule ${
        JSON.stringify(rule, (_, v) => typeof v === "bigint" ? `${v}n` : v)
      } (both sides)`,
    );
    this.a.addFault(rule);
    this.b.addFault(rule);
    this.rules++;
    this.sum.faultRules++;
  }

  clearFaults(): void {
    this.log("clear fault rules");
    this.a.clearFaults();
    this.b.clearFaults();
    this.rules = 0;
    this.sum.faultClears++;
  }

  /** A drop or bad-cid injected since the last look: the host's timeout will fire. */
  watchFaults(): void {
    const f = this.a.counters().faults;
    const n = f.drop + f["bad-cid"];
    if (n > this.faultsSeen && this.timeoutAt === undefined) {
      this.timeoutAt = this.step + this.rng.range(1, 20);
      this.log(`a command will never complete: the host times out at step ${this.timeoutAt}`);
    }
    this.faultsSeen = n;
  }

  enable(): void {
    const r = this.rng;
    if (r.chance(0.15)) {
      // A bad configuration: CSTS.CFS, then the host resets.
      const bad = r.int(5);
      this.reg(NVME_REG.AQA, bad === 0 ? encodeAqa(1, 4) : encodeAqa(8, 8));
      this.reg64(NVME_REG.ASQ, pa(this.layout.adminSq) + (bad === 1 ? 0x40n : 0n));
      this.reg64(NVME_REG.ACQ, pa(this.layout.adminCq));
      const cc = encodeCc({
        en: true,
        css: bad === 2 ? r.range(1, 7) : 0,
        mps: bad === 3 ? r.range(5, 15) : 0,
        shn: 0,
        iosqes: bad === 4 ? r.pick([4, 5, 7]) : 6,
        iocqes: 4,
      });
      this.reg(NVME_REG.CC, cc);
      this.checkStep(0, 0);
      // Doorbells of a controller that is not ready: ignored, counted, no event.
      this.reg(doorbellOffset(r.int(2), r.chance(0.5)), r.int(4));
      this.reg(NVME_REG.CC, 0);
      this.reg(doorbellOffset(0, false), 1);
    }
    const asq = r.pick([8, 16, 32, 64]);
    const acq = r.pick([4, 8, 16, 64, 256]);
    this.write(pa(this.layout.adminCq), new Uint8Array(PAGE));
    this.reg(NVME_REG.AQA, encodeAqa(asq, acq));
    this.reg64(NVME_REG.ASQ, pa(this.layout.adminSq));
    this.reg64(NVME_REG.ACQ, pa(this.layout.adminCq));
    this.reg(NVME_REG.CC, encodeCc({ en: true, css: 0, mps: 0, shn: 0, iosqes: 6, iocqes: 4 }));
    this.eq("CSTS after enable", this.a.readReg32(NVME_REG.CSTS), this.b.readReg32(NVME_REG.CSTS));
    if ((this.a.readReg32(NVME_REG.CSTS) & 3) !== 1) {
      this.fail("harness", "controller did not become ready");
    }
    this.enabled = true;
    this.sqs.set(0, {
      id: 0,
      base: pa(this.layout.adminSq),
      size: asq,
      cqid: 0,
      tail: 0,
      head: 0,
      dirty: false,
      pending: new Map(),
      nextCid: r.int(0x10000),
    });
    this.cqs.set(0, {
      id: 0,
      base: pa(this.layout.adminCq),
      size: acq,
      head: 0,
      acked: 0,
      phase: 1,
    });
    this.wantQueues = r.range(1, this.cfg.maxQueues);
    if (r.chance(0.6)) {
      // Number of Queues before any I/O queue exists (5.27.1.5): the one time it succeeds.
      const nsqr = r.pick([0, 1, this.cfg.maxQueues - 1, 63, 0xfffe]);
      const ncqr = r.pick([0, 1, this.cfg.maxQueues - 1, 63, 0xfffe]);
      this.adminSqe(
        encodeNvmeCommand({
          opcode: NVME_ADMIN.SET_FEATURES,
          commandId: 0,
          cdw10: 7,
          cdw11: ((ncqr << 16) | nsqr) >>> 0,
        }),
        `set-features fid 7 ${nsqr}/${ncqr} (before queues)`,
      );
    }
  }

  aer(): void {
    const sq = this.sqs.get(0)!;
    if (this.room(sq) < 2) return;
    this.aers++;
    this.adminSqe(
      encodeNvmeCommand({ opcode: NVME_ADMIN.ASYNC_EVENT, commandId: 0 }),
      "aer",
      (st) => {
        if (st === 0) this.aers--;
        else this.aers--; // over the limit: completed at once
      },
    );
  }

  badDoorbell(): void {
    const r = this.rng;
    const max = this.cfg.maxQueues;
    const k = r.int(6);
    const absent = Array.from({ length: max }, (_, i) => i + 1).filter((q) =>
      !this.sqs.has(q) && !this.cqs.has(q) && !this.busyQ.has(q)
    );
    let off: number;
    let v = r.int(4);
    if (k === 0) off = doorbellOffset(r.int(max + 1), r.chance(0.5)) + r.range(1, 3);
    else if (k === 1) off = doorbellOffset(max + 1 + r.int(100), r.chance(0.5));
    else if (k === 2 && absent.length) off = doorbellOffset(r.pick(absent), r.chance(0.5));
    else if (k === 3) {
      const sq = r.pick([...this.sqs.values()]);
      off = doorbellOffset(sq.id, false);
      v = sq.size + r.int(100);
    } else if (k === 4) {
      const cq = r.pick([...this.cqs.values()]);
      off = doorbellOffset(cq.id, true);
      v = cq.size + r.int(3);
    } else {
      off = 0x40 + 4 * r.int(0x3f0); // reserved registers: ignored
      v = r.nextU32();
    }
    this.log(`bad doorbell 0x${off.toString(16)} = ${v}`);
    this.reg(off, v);
  }

  iommuOp(): void {
    const r = this.rng;
    const i = r.int(REMAP_PAGES);
    const iovaPfn = this.layout.remapBase + i;
    const e = this.remap[i];
    const k = r.int(7);
    if (k === 6) {
      // Stale IOTLB entry: clear the PTE of a page the IOTLB holds, keep using it for a
      // few steps (both sides must still translate through the cached entry), then
      // invalidate it (both must fault).
      const cached = Array.from({ length: 16 }, () => r.int(REMAP_PAGES))
        .find((j) => this.remap[j].prot === 3n && this.a.iotlbHas(this.layout.remapBase + j));
      if (cached === undefined) return;
      const pfn = this.layout.remapBase + cached;
      this.remap[cached].prot = 0n;
      this.table.set(pfn, this.remap[cached].pfn, 0n);
      this.space.prefer = pa(pfn);
      this.sum.staleEpisodes++;
      this.log(`stale episode: pte of cached iova pfn ${pfn} cleared, no invalidation`);
      const steps = r.range(1, 4);
      const at = this.step + steps;
      const end = () => {
        if (this.step < at) {
          this.restore.push(end);
          return;
        }
        this.a.invalidate(pfn, 1);
        this.b.invalidate(pfn, 1);
        this.log(`stale episode: invalidate iova pfn ${pfn}`);
        const until = this.step + 2;
        const stop = () => {
          if (this.step < until) this.restore.push(stop);
          else this.space.prefer = undefined;
        };
        this.restore.push(stop);
      };
      this.restore.push(end);
      return;
    }
    if (k === 0) {
      e.prot = 0n; // clear without invalidation: cached translations stay in use
      this.table.set(iovaPfn, e.pfn, 0n);
      this.log(`pte clear iova pfn ${iovaPfn} (no invalidation)`);
    } else if (k === 1) {
      e.pfn = r.pick(this.layout.dataRuns) + r.int(RUN_PAGES);
      e.prot = r.pick([3n, 3n, PTE_READ, PTE_WRITE]);
      this.table.set(iovaPfn, e.pfn, e.prot);
      this.log(`pte remap iova pfn ${iovaPfn} -> ${e.pfn} prot ${e.prot} (no invalidation)`);
    } else if (k <= 3) {
      const n = r.pick([1, 1, 2, 8, 64]);
      this.a.invalidate(iovaPfn, n);
      this.b.invalidate(iovaPfn, n);
      this.sum.invalidations++;
      this.log(`invalidate iova pfn ${iovaPfn} + ${n}`);
    } else if (k === 4) {
      this.a.invalidate(0, 0);
      this.b.invalidate(0, 0);
      this.sum.invalidations++;
      this.log("invalidate all");
    } else {
      // An identity-mapped frame loses its mapping for a while (then comes back, invalidated).
      const run = r.pick(this.layout.dataRuns) + r.int(RUN_PAGES);
      this.table.set(run, run, r.pick([0n, PTE_READ, PTE_WRITE]));
      this.restore.push(() => {
        this.table.set(run, run, 3n);
        this.a.invalidate(run, 1);
        this.b.invalidate(run, 1);
      });
      this.log(`identity pte of ${run} restricted until the next step`);
    }
  }

  switchMode(): void {
    const m = this.rng.pick(["none", "identity", "translate", "translate"] as IommuMode[]);
    this.mode = m;
    this.space.mode = m;
    this.sum.modeSwitches++;
    this.log(`iommu attach ${m}`);
    this.a.iommu(m, this.table.root);
    this.b.iommu(m, this.table.root);
  }

  misc(): void {
    const r = this.rng;
    const x = r.float();
    if (x < 0.12) {
      const off = r.pick([
        0,
        4,
        8,
        0xc,
        0x10,
        0x14,
        0x18,
        0x1c,
        0x20,
        0x24,
        0x28,
        0x2c,
        0x30,
        0x34,
        0x38,
        0x3c,
        0x1000,
        0x1004,
        0x1008,
        0x100c,
        0x2,
        0x15,
        0xe00,
        0xfffc,
      ]);
      this.eq(`register 0x${off.toString(16)} read`, this.a.readReg32(off), this.b.readReg32(off));
    } else if (x < 0.17) {
      this.reg(r.pick([NVME_REG.INTMS, NVME_REG.INTMC]), r.nextU32());
    } else if (x < 0.2) {
      this.reg(r.pick([0, 4, 8, NVME_REG.CSTS, NVME_REG.NSSR, 0x38, 0x3c, 0x50]), r.nextU32());
    } else if (x < 0.34) {
      this.badDoorbell();
    } else if (x < 0.44) {
      if (this.aers < 4) this.aer();
      else if (r.chance(0.2)) { for (let i = r.range(1, 3); i > 0; i--) this.aer(); // over AERL
       }
    } else if (x < 0.5) {
      const run = r.pick(this.layout.dataRuns) + r.int(RUN_PAGES);
      this.write(pa(run), r.fill(new Uint8Array(PAGE)));
      this.log(`scribble pfn ${run}`);
    } else if (x < 0.66) {
      this.iommuOp();
    } else if (x < 0.675) {
      this.switchMode();
    } else if (x < 0.685) {
      this.reset("random");
    } else if (x < 0.695) {
      // Shutdown notification and back (CSTS.SHST follows CC.SHN).
      const cc = this.a.readReg32(NVME_REG.CC);
      this.reg(NVME_REG.CC, (cc & ~(3 << 14)) | (r.range(1, 2) << 14));
      this.eq("CSTS after SHN", this.a.readReg32(NVME_REG.CSTS), this.b.readReg32(NVME_REG.CSTS));
      this.reg(NVME_REG.CC, cc);
    } else if (x < 0.8) {
      this.queueError();
    } else if (x < 0.9) {
      this.deletePair();
    } else if (x < 0.9025) {
      this.fatalEpisode();
    } else if (x < 0.935) {
      this.addFault();
    } else if (x < 0.94) {
      if (this.rules > 0) this.clearFaults();
    } else {
      this.createPair();
    }
  }

  /** A CQ whose memory the device cannot write: the post fails, CSTS.CFS. */
  fatalEpisode(): void {
    const q = this.freeQid();
    if (q === undefined) return;
    const hole = pa(this.rng.pick(this.layout.holes));
    this.busyQ.add(q);
    this.adminSqe(genCreateCq(0, q, hole, 4, q, true), `create-cq ${q} at a hole (fatal episode)`);
    const flush = encodeNvmeCommand({ opcode: NVME_CMD.FLUSH, commandId: 1, nsid: 1 });
    this.write(pa(this.layout.ioSq[q]), flush);
    this.adminSqe(
      genCreateSq(0, q, pa(this.layout.ioSq[q]), 4, q),
      `create-sq ${q} on it`,
      (st) => {
        if (st === 0) this.backlog.push(() => this.reg(doorbellOffset(q, false), 1));
      },
    );
  }

  // ---------------------------------------------------------------- steps

  submitSome(): void {
    const r = this.rng;
    const k = r.pick([0, 1, 1, 2, 3, 4, 6]);
    const ioSqs = [...this.sqs.values()].filter((s) => s.id !== 0 && !this.busyQ.has(s.id));
    for (let i = 0; i < k; i++) {
      const admin = ioSqs.length === 0 || r.chance(0.12);
      const sq = admin ? this.sqs.get(0)! : r.pick(ioSqs);
      if (this.room(sq) < (admin ? 2 : 1)) continue;
      const cid = this.nextCid(sq);
      const g = admin ? genAdmin(this.space, this.cfg, cid) : genIo(this.space, this.cfg, cid);
      this.submit(sq, g, g.label.split(" ")[0]);
    }
  }

  ringDoorbells(): void {
    for (const sq of this.sqs.values()) {
      if (!sq.dirty || this.rng.chance(0.08)) continue;
      sq.dirty = false;
      this.reg(doorbellOffset(sq.id, false), sq.tail);
    }
  }

  reap(): void {
    const r = this.rng;
    for (const cq of [...this.cqs.values()]) {
      // CQ full (3.3.1.2): entries posted and not yet released by the head doorbell.
      let visible = 0;
      let h = cq.head;
      let ph = cq.phase;
      while (visible < cq.size) {
        const raw = this.a.mem.read(cq.base + BigInt(h * NVME_CQE_SIZE) + 14n, 2);
        if (!raw || (raw[0] & 1) !== ph) break;
        visible++;
        if (++h === cq.size) {
          h = 0;
          ph = ph === 1 ? 0 : 1;
        }
      }
      if ((cq.head - cq.acked + cq.size) % cq.size + visible >= cq.size - 1) this.sum.cqFull++;
      const limit = r.chance(0.7) ? Infinity : r.chance(0.5) ? r.int(3) : 0;
      let n = 0;
      while (n < limit) {
        const raw = this.a.mem.read(cq.base + BigInt(cq.head * NVME_CQE_SIZE), NVME_CQE_SIZE);
        if (!raw) break;
        const c = decodeCqe(raw);
        if (c.phase !== cq.phase) break;
        n++;
        cq.head++;
        if (cq.head === cq.size) {
          cq.head = 0;
          cq.phase = cq.phase === 1 ? 0 : 1;
          this.sum.cqWraps++;
        }
        const sq = this.sqs.get(c.sqId);
        if (
          sq && !sq.pending.has(c.commandId) &&
          sq.pending.has(c.commandId ^ NVME_FAULT_BAD_CID_XOR) &&
          this.a.counters().faults["bad-cid"] > 0
        ) {
          // A completion with a command id no command has (a bad-cid fault): the host
          // cannot match it, and the command it stood for never completes (until reset).
          this.sum.badCidCqes++;
          sq.head = c.sqHead;
          this.log(`  cqe sq ${c.sqId} with unknown cid ${c.commandId} (bad-cid): ignored`);
          continue;
        }
        const p = sq?.pending.get(c.commandId);
        if (!sq || !p) {
          this.fail(
            "harness",
            `CQE for unknown command sq ${c.sqId} cid ${c.commandId} on CQ ${cq.id}: ${hex(raw)}`,
          );
        }
        sq.pending.delete(c.commandId);
        p.status = c.status;
        this.completed.push(p);
        if (this.completed.length > 24) this.completed.shift();
        sq.head = c.sqHead;
        this.freeLists.push(...p.lists);
        const key = nvmeStatusString(c.status);
        this.sum.statuses[key] = (this.sum.statuses[key] ?? 0) + 1;
        this.log(
          `  cqe sq ${c.sqId} cid ${c.commandId}: ${key}${
            c.result ? ` result 0x${c.result.toString(16)}` : ""
          }`,
        );
        if (this.labelStats) {
          const lk = `${p.label.replace(/[0-9a-fx]+\b/g, "#")} -> ${key}`;
          this.labelStats[lk] = (this.labelStats[lk] ?? 0) + 1;
        }
        p.done?.(c.status, c.result);
        if (!this.enabled) return; // a callback reset the controller
      }
      if (n > 0 && r.chance(0.9)) {
        cq.acked = cq.head;
        this.reg(doorbellOffset(cq.id, true), cq.head);
        if (limit === Infinity && r.chance(0.02)) {
          // Consume an entry not yet posted: Invalid Doorbell Write Value.
          this.reg(doorbellOffset(cq.id, true), (cq.head + 1) % cq.size);
        }
      } else if (n === 0 && cq.acked !== cq.head && r.chance(0.5)) {
        cq.acked = cq.head;
        this.reg(doorbellOffset(cq.id, true), cq.head);
      }
    }
  }

  doStep(budget: number): void {
    this.step++;
    this.a.vectors = [];
    this.b.vectors = [];
    if (DEBUG.watchPfn !== undefined) console.log(`STEP ${this.step}`);
    const snap = DEBUG.snapPfn ?? NaN;
    const pa0 = this.a.mem.pages.get(snap)?.slice();
    const pb0 = this.b.mem.pages.get(snap)?.slice();
    const x = this.a.step(budget);
    const pa1 = this.a.mem.pages.get(snap)?.slice();
    const y = this.b.step(budget);
    const pb1 = this.b.mem.pages.get(snap)?.slice();
    if (pa0 && pb0 && pa1 && pb1) {
      const da = firstDiff(pa0, pa1);
      const db = firstDiff(pb0, pb1);
      const dab = firstDiff(pa1, pb0);
      if (da >= 0 || db >= 0) {
        console.log(
          `step ${this.step}: pfn ${snap} changed: ${this.a.name} at ${da}, ${this.b.name} at ${db}; ${this.b.name}'s step changed A's copy: ${dab}`,
        );
      }
    }
    this.checkStep(x, y);
    if (x > 0) {
      this.log(`  step budget ${budget}: ${x} posted, vectors ${this.a.vectors.join(",")}`);
    }
  }

  pendingIo(): number {
    let n = 0;
    for (const sq of this.sqs.values()) n += sq.pending.size;
    return n - this.aers;
  }

  run(): DiffSummary {
    const r = this.rng;
    const every = this.opts.fullCheckEvery ?? 400;
    this.switchMode();
    while (this.submitted < this.opts.cmds) {
      if (!this.enabled) this.enable();
      for (const f of this.restore.splice(0)) f();
      const back = this.backlog.splice(0);
      for (const f of back) f();
      if (!this.enabled) continue;
      if (this.sqs.size - 1 + this.busyQ.size < this.wantQueues && r.chance(0.5)) this.createPair();
      if (r.chance(0.3)) this.misc();
      if (!this.enabled) continue;
      this.submitSome();
      this.ringDoorbells();
      this.doStep(r.pick([1, 1, 2, 3, 4, 8, 16, 64]));
      if ((this.a.readReg32(NVME_REG.CSTS) & 2) !== 0) {
        this.reset("CSTS.CFS");
        continue;
      }
      this.reap();
      this.watchFaults();
      if (this.timeoutAt !== undefined && this.step >= this.timeoutAt) {
        this.sum.timeoutResets++;
        this.reset("timeout: a dropped command or a lost completion");
        continue;
      }
      if (this.step % every === 0) this.fullCheck();
    }
    // Drain: ring everything, step until only AERs are left.
    for (let i = 0; i < 200 && this.enabled && this.pendingIo() > 0; i++) {
      for (const f of this.backlog.splice(0)) f();
      for (const sq of this.sqs.values()) sq.dirty = true;
      this.ringDoorbells();
      this.doStep(64);
      if ((this.a.readReg32(NVME_REG.CSTS) & 2) !== 0) break;
      this.reap();
      this.watchFaults();
      if (this.timeoutAt !== undefined) {
        this.sum.timeoutResets++;
        this.reset("timeout (drain)");
        break;
      }
    }
    this.fullCheck();
    {
      // Power fails with whatever the cache holds (nothing when write-through): both must
      // lose the same writes.
      const seed = r.nextU32();
      const x = this.a.powerCut(seed);
      const y = this.b.powerCut(seed);
      this.log(`power cut (seed ${seed}): ${JSON.stringify(x)}`);
      this.eq("power cut report", JSON.stringify(x), JSON.stringify(y));
      this.sum.powerCut = x;
      this.eq("CSTS after the power cut", this.a.readReg32(NVME_REG.CSTS), 0);
      this.eq("CSTS after the power cut (B)", this.b.readReg32(NVME_REG.CSTS), 0);
      // Dead: a doorbell and a step do nothing.
      this.reg(doorbellOffset(0, false), 1);
      this.doStep(64);
      this.fullCheck();
    }
    if (this.labelStats) console.log(formatCounts(this.labelStats));
    this.sum.staleUses = this.space.preferUses;
    this.sum.cmds = this.submitted;
    this.sum.steps = this.step;
    return this.sum;
  }
}

/** Run one seed; throws {@link DiffMismatch} with a report on the first difference. */
export function runDifferential(opts: DiffOptions): DiffSummary {
  const h = new Harness(opts);
  try {
    return h.run();
  } finally {
    h.a[Symbol.dispose]();
    h.b[Symbol.dispose]();
  }
}

/** Add one summary's status counts into a total. */
export function addCounts(total: Record<string, number>, add: Record<string, number>): void {
  for (const [k, v] of Object.entries(add)) total[k] = (total[k] ?? 0) + v;
}

/** One line per status, largest first. */
export function formatCounts(counts: Record<string, number>): string {
  return Object.entries(counts).sort((x, y) => y[1] - x[1]).map(([k, v]) =>
    `${String(v).padStart(8)}  ${k}`
  ).join("\n");
}
