/**
 * Lifecycle under fuzz (issue 10, point 5): premapped and ordinary I/O on
 * the simulated NVMe namespace while the fuzzer unmaps buffers
 * (IORING_REGISTER_UNMAP_BUFFERS), maps them again, unregisters and
 * re-registers the buffer table, updates single buffers, replaces or empties
 * the file slot the mapping belongs to, closes the descriptors, and tears the
 * ring down, all with I/O in flight (the sim device runs only when polled,
 * so an SQE submitted without waiting stays in flight until the fuzzer lets
 * the device move). Runs on all three premap variants.
 *
 * Every write's bytes and every read's expected bytes are kept in a shadow of
 * the media, so data is checked byte for byte at each completion. The
 * invariants, after every operation:
 *
 * - nothing is thrown out of the library, no CQE is lost or doubled (every
 *   SQE on a live ring gets exactly one CQE; I/O in flight at a teardown
 *   completes before the ring goes, into the dead ring, as the kernel does);
 * - `hardened`: every I/O completes in full with intact data, and no checking
 *   layer fires: no IOMMU fault, no byte moved outside a live mapping
 *   (`dmaDebugDeviceUnmappedBytes` 0), no KASAN-style report, no DMA-API
 *   debug report;
 * - `v2` / `v3` (the posted code): an I/O with no lifecycle event during its
 *   flight completes in full with intact data; one that raced an event may
 *   fail or move wrong bytes (the posted code's flaw), but then a checking
 *   layer must have reported something while it was in flight (IOMMU fault,
 *   access outside a live mapping, KASAN-style report, DMA-API debug report):
 *   the flaw is shown, never silent.
 *
 * Bounce mode runs on `hardened` only: the posted v2/v3 sync loops lose data
 * without any report for page-aligned buffers (README, "The three variants";
 * tested in tests/nvme/posted_bugs_test.ts and the soak), which this fuzzer
 * would flag on every run.
 *
 * @module
 */

import { Kernel, type PremapVariant } from "../../sim/kernel.ts";
import { attachNvme, type NvmeHost } from "../../sim/host.ts";
import { SimRing } from "../../sim/io_uring/io_uring.ts";
import { Rng } from "../../sim/random.ts";
import { doSysOpen, sysClose } from "../../sim/fs/namei.ts";
import type { Vma } from "../../sim/memory/mm.ts";
import type { IommuMode } from "../../sim/dma/types.ts";
import { encodeIovecs } from "../../sim/uapi/ring_api.ts";
import {
  encodeMapBuffers,
  encodeRsrcUpdate2,
  encodeSqe,
  IORING_OP,
  IORING_REGISTER,
  IOSQE,
  O,
  PARAMS,
} from "../../sim/uapi/io_uring.ts";
import { shrinkByChunks } from "./shrink.ts";

/** Registered buffers (64 KiB each, page aligned). */
const NR_BUFS = 4;
const BUF_BYTES = 64 * 1024;
/** The part of the namespace the fuzzer writes (the rest stays zero). */
const AREA_BYTES = 2 << 20;
const SECTOR = 512;

/** One lifecycle fuzzer operation. */
export type LcOp =
  | {
    k: "io";
    write: boolean;
    buf: number;
    off: number;
    len: number;
    pos: number;
    via: number;
    seed: number;
  }
  | { k: "poll"; n: number }
  | { k: "wait" }
  | { k: "unmap"; start: number; end: number }
  | { k: "map"; slot: number; start: number; end: number }
  | { k: "unregBufs" }
  | { k: "regBufs" }
  | { k: "updBuf"; idx: number }
  | { k: "updSlot"; slot: number; to: number }
  | { k: "close"; which: number }
  | { k: "reopen"; which: number }
  | { k: "teardown" };

/** Knobs of one run. */
export interface LcConfig {
  premap: PremapVariant;
  iommu: IommuMode;
}

/** What a run reports. */
export interface LcResult {
  seed: number;
  config: LcConfig;
  ops: number;
  ios: number;
  /** I/Os with a lifecycle event during their flight. */
  raced: number;
  /** I/Os that failed or moved wrong bytes (allowed on v2/v3 only when reported). */
  flawed: number;
  /** Checking-layer counters at the end. */
  iommuFaults: number;
  unmappedBytes: number;
  kasanReports: number;
  dmaDebugErrors: number;
  nvmeCommands: number;
  failure: { op: number; invariant: string; detail: string } | null;
}

/** The configuration a seed runs with: the three variants in turn, the IOMMU modes each allows. */
export function lcConfigFor(seed: number): LcConfig {
  const premap = (["v2", "v3", "hardened"] as const)[seed % 3];
  const modes: IommuMode[] = premap === "hardened"
    ? ["strict", "off", "lazy", "passthrough", "bounce"]
    : ["strict", "off", "lazy", "passthrough"];
  return { premap, iommu: modes[Math.floor(seed / 3) % modes.length] };
}

/** The operations of one run, from `seed` alone. */
export function lcGenerate(seed: number, n: number): LcOp[] {
  const rng = new Rng(seed ^ 0x11fe);
  const ops: LcOp[] = [];
  while (ops.length < n) {
    const r = rng.float();
    if (r < 0.5) {
      const len = 4096 * rng.range(1, 8);
      ops.push({
        k: "io",
        write: rng.chance(0.55),
        buf: rng.int(NR_BUFS),
        off: 4096 * rng.int((BUF_BYTES - len) / 4096 + 1),
        len,
        pos: 4096 * rng.int((AREA_BYTES - len) / 4096 + 1),
        via: rng.int(4), // 0, 1: fixed buffer on slot 0/1; 2: fixed buffer on the fd; 3: plain
        seed: rng.nextU32(),
      });
    } else if (r < 0.64) ops.push({ k: "poll", n: rng.range(1, 4) });
    else if (r < 0.7) ops.push({ k: "wait" });
    else if (r < 0.76) {
      const start = rng.int(NR_BUFS);
      ops.push({ k: "unmap", start, end: rng.range(start + 1, NR_BUFS + 1) });
    } else if (r < 0.86) {
      const start = rng.int(NR_BUFS);
      ops.push({
        k: "map",
        slot: rng.chance(0.8) ? 0 : 1,
        start,
        end: rng.range(start + 1, NR_BUFS + 1),
      });
    } else if (r < 0.885) ops.push({ k: "unregBufs" });
    else if (r < 0.91) ops.push({ k: "regBufs" });
    else if (r < 0.935) ops.push({ k: "updBuf", idx: rng.int(NR_BUFS) });
    else if (r < 0.96) ops.push({ k: "updSlot", slot: rng.int(2), to: rng.int(3) }); // A, B, empty
    else if (r < 0.975) ops.push({ k: "close", which: rng.int(2) });
    else if (r < 0.99) ops.push({ k: "reopen", which: rng.int(2) });
    else ops.push({ k: "teardown" });
  }
  return ops;
}

class Violation extends Error {
  constructor(readonly invariant: string, detail: string) {
    super(detail);
  }
}

interface InFlight {
  write: boolean;
  buf: number;
  off: number;
  len: number;
  pos: number;
  /** Bytes a write sends (a copy taken at submission). */
  data: Uint8Array | null;
  /** Checking-layer reports at submission. */
  reportsAt: number;
  raced: boolean;
}

class World implements Disposable {
  readonly k: Kernel;
  readonly host: NvmeHost;
  readonly cfg: LcConfig;
  readonly path: string;
  ring!: SimRing;
  readonly bufs: Vma[] = [];
  readonly aux: Vma;
  /** The two descriptors of the namespace (-1: closed). */
  readonly fds = [-1, -1];
  /** What each fixed slot holds: descriptor index 0/1, or -1. */
  readonly slots = [-1, -1];
  bufsRegistered = false;
  filesRegistered = false;
  readonly media = new Uint8Array(AREA_BYTES);
  /** Sectors whose media contents are known (a failed write leaves them unknown). */
  readonly known = new Uint8Array(AREA_BYTES / SECTOR).fill(1);
  readonly inflight = new Map<bigint, InFlight>();
  readonly busyBuf = new Set<string>();
  #ud = 1n;
  ios = 0;
  raced = 0;
  flawed = 0;

  constructor(seed: number, cfg: LcConfig) {
    this.cfg = cfg;
    this.k = new Kernel({ seed, timing: false, premap: cfg.premap });
    this.host = attachNvme(this.k, {
      iommu: cfg.iommu,
      namespaces: [{ lbaSize: SECTOR, sizeBytes: 16n << 20n }],
    });
    this.path = this.host.namespaces[0].path;
    for (let i = 0; i < NR_BUFS; i++) this.bufs.push(this.k.mm.mmap(BUF_BYTES));
    this.aux = this.k.mm.mmap(4096);
    for (const w of [0, 1]) this.reopen(w);
    this.newRing();
  }

  /** Checking-layer reports so far. */
  reports(): number {
    const c = this.k.stats.counters;
    return c.iommuFaults + c.dmaDebugDeviceUnmappedBytes + c.kasanReports + c.dmaDebugErrors;
  }

  reopen(which: number): void {
    if (this.fds[which] >= 0) sysClose(this.k, this.fds[which]);
    this.fds[which] = doSysOpen(this.k, this.path, O.RDWR | O.DIRECT);
    if (this.fds[which] < 0) throw new Violation("open", `open ${this.path}: ${this.fds[which]}`);
  }

  newRing(): void {
    const p = new Uint8Array(PARAMS.SIZE);
    const r = SimRing.setup(this.k, 32, p);
    if (typeof r === "number") throw new Violation("setup", `ring setup: ${r}`);
    this.ring = r;
    this.slots[0] = this.slots[1] = -1;
    this.bufsRegistered = false;
    this.filesRegistered = false;
    const fds = [0, 1].filter((w) => this.fds[w] >= 0);
    if (fds.length === 2) {
      const arg = new Uint8Array(8);
      const v = new DataView(arg.buffer);
      v.setInt32(0, this.fds[0], true);
      v.setInt32(4, this.fds[1], true);
      this.expect(r.register(IORING_REGISTER.REGISTER_FILES, arg, 2), 0, "register files");
      this.slots[0] = 0;
      this.slots[1] = 1;
      this.filesRegistered = true;
    }
    this.registerBuffers();
  }

  registerBuffers(): void {
    if (this.bufsRegistered) return;
    const arg = encodeIovecs(this.bufs.map((b) => ({ addr: b.start, len: BUF_BYTES })));
    this.expect(
      this.ring.register(IORING_REGISTER.REGISTER_BUFFERS, arg, NR_BUFS),
      0,
      "register buffers",
    );
    this.bufsRegistered = true;
  }

  expect(got: number, want: number, what: string): void {
    if (got !== want) throw new Violation("register", `${what}: ${got}, expected ${want}`);
  }

  /** A lifecycle event: everything in flight raced it. */
  event(): void {
    for (const f of this.inflight.values()) f.raced = true;
  }

  run(op: LcOp): void {
    switch (op.k) {
      case "io":
        return this.io(op);
      case "poll":
        for (let i = 0; i < op.n; i++) this.k.poll();
        return this.reap();
      case "wait":
        return this.drain();
      case "unmap":
        this.event();
        this.ring.register(
          IORING_REGISTER.REGISTER_UNMAP_BUFFERS,
          encodeMapBuffers(0, op.start, op.end),
          1,
        );
        return;
      case "map":
        // Mapping is no hazard to I/O in flight; errors (-EBUSY, -EBADF...) are the uAPI's.
        this.ring.register(
          IORING_REGISTER.REGISTER_MAP_BUFFERS,
          encodeMapBuffers(op.slot, op.start, op.end),
          1,
        );
        return;
      case "unregBufs":
        this.event();
        if (this.bufsRegistered) {
          this.expect(
            this.ring.register(IORING_REGISTER.UNREGISTER_BUFFERS, null, 0),
            0,
            "unregister",
          );
        }
        this.bufsRegistered = false;
        return;
      case "regBufs":
        return this.registerBuffers();
      case "updBuf": {
        if (!this.bufsRegistered) return;
        this.event();
        const iov = encodeIovecs([{ addr: this.bufs[op.idx].start, len: BUF_BYTES }]);
        this.aux.bytes.set(iov);
        const arg = encodeRsrcUpdate2(op.idx, this.aux.start, 1);
        this.expect(
          this.ring.register(IORING_REGISTER.REGISTER_BUFFERS_UPDATE, arg, 32),
          1,
          "update",
        );
        return;
      }
      case "updSlot": {
        if (!this.filesRegistered) return;
        const fd = op.to === 2 ? -1 : this.fds[op.to];
        if (op.to !== 2 && fd < 0) return;
        this.event();
        const arg = new Uint8Array(16);
        const v = new DataView(arg.buffer);
        v.setUint32(0, op.slot, true);
        new DataView(this.aux.bytes.buffer, this.aux.bytes.byteOffset).setInt32(0, fd, true);
        v.setBigUint64(8, this.aux.start, true);
        this.expect(
          this.ring.register(IORING_REGISTER.REGISTER_FILES_UPDATE, arg, 1),
          1,
          "slot update",
        );
        this.slots[op.slot] = op.to === 2 ? -1 : op.to;
        return;
      }
      case "close":
        if (this.fds[op.which] < 0) return;
        this.event();
        sysClose(this.k, this.fds[op.which]);
        this.fds[op.which] = -1;
        return;
      case "reopen":
        if (this.fds[op.which] >= 0) return;
        return this.reopen(op.which);
      case "teardown":
        return this.teardown();
    }
  }

  io(op: Extract<LcOp, { k: "io" }>): void {
    const bkey = (b: number, o: number) => `${b}:${o}`;
    for (let o = op.off; o < op.off + op.len; o += 4096) {
      if (this.busyBuf.has(bkey(op.buf, o))) return;
    }
    for (const f of this.inflight.values()) {
      if (op.pos < f.pos + f.len && f.pos < op.pos + op.len) return; // LBAs busy
    }
    const b = this.bufs[op.buf];
    let via = op.via;
    if (via <= 1 && this.slots[via] < 0) via = 2;
    if (via === 2 && !this.bufsRegistered) via = 3;
    const fixedBuf = via <= 2 && this.bufsRegistered;
    const fd = via <= 1
      ? via
      : this.fds[op.seed & 1] >= 0
      ? this.fds[op.seed & 1]
      : this.fds[1 - (op.seed & 1)];
    if (fd < 0) return;
    let data: Uint8Array | null = null;
    if (op.write) {
      let x = op.seed || 1;
      for (let i = 0; i < op.len; i++) {
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
        b.bytes[op.off + i] = x;
      }
      data = b.bytes.slice(op.off, op.off + op.len);
    }
    const ud = this.#ud++;
    const opcode = op.write
      ? (fixedBuf ? IORING_OP.WRITE_FIXED : IORING_OP.WRITE)
      : (fixedBuf ? IORING_OP.READ_FIXED : IORING_OP.READ);
    const sqe = encodeSqe({
      opcode,
      flags: via <= 1 ? IOSQE.FIXED_FILE : 0,
      fd,
      addr: b.start + BigInt(op.off),
      len: op.len,
      off: BigInt(op.pos),
      bufIndex: op.buf,
      userData: ud,
    });
    if (!this.ring.pushSqe(sqe)) return;
    const sub = this.ring.submit(0);
    if (sub !== 1) throw new Violation("submit", `submit returned ${sub}`);
    for (let o = op.off; o < op.off + op.len; o += 4096) this.busyBuf.add(bkey(op.buf, o));
    this.inflight.set(ud, {
      write: op.write,
      buf: op.buf,
      off: op.off,
      len: op.len,
      pos: op.pos,
      data,
      reportsAt: this.reports(),
      raced: false,
    });
    this.ios++;
    this.reap(); // a request can fail at issue
  }

  /** Check one finished I/O; `res` null: it finished into a torn-down ring (no CQE). */
  finish(ud: bigint, f: InFlight, res: number | null): void {
    this.inflight.delete(ud);
    for (let o = f.off; o < f.off + f.len; o += 4096) this.busyBuf.delete(`${f.buf}:${o}`);
    if (f.raced) this.raced++;
    const b = this.bufs[f.buf];
    let bad = "";
    const sectors = (fn: (s: number) => void) => {
      for (let s = f.pos / SECTOR; s < (f.pos + f.len) / SECTOR; s++) fn(s);
    };
    const onMedia = this.host.controller!.mediaRead(1, f.pos, f.len);
    if (f.write) {
      const landed = onMedia.every((x, i) => x === f.data![i]);
      if (landed && (res === f.len || res === null)) {
        this.media.set(f.data!, f.pos);
        sectors((s) => (this.known[s] = 1));
      } else if (res === f.len) {
        // Completed in full, but other bytes reached the media: they are unknown now.
        sectors((s) => (this.known[s] = 0));
        bad = `write ${ud} completed but the media differs`;
      } else {
        sectors((s) => (this.known[s] = 0));
        if (res !== null) bad = `write ${ud} failed: ${res}`;
        else bad = `write ${ud} (ring torn down) did not land`;
      }
    } else if (res === f.len || res === null) {
      const got = b.bytes.subarray(f.off, f.off + f.len);
      for (let i = 0; i < f.len; i += SECTOR) {
        const s = (f.pos + i) / SECTOR;
        if (!this.known[s]) continue;
        for (let j = i; j < i + SECTOR; j++) {
          if (got[j] !== this.media[f.pos + j]) {
            if (res !== null || this.cfg.premap === "hardened") {
              bad = `read ${ud} byte ${j} is ${got[j]}, media ${this.media[f.pos + j]}`;
            }
            break;
          }
        }
        if (bad) break;
      }
    } else {
      bad = `read ${ud} failed: ${res}`;
    }
    if (!bad) return;
    this.flawed++;
    const reported = this.reports() > f.reportsAt;
    const detail = `${bad} (${f.raced ? "raced a lifecycle event" : "no lifecycle event"}, ` +
      `${reported ? "" : "no "}checker report yet)`;
    if (this.cfg.premap === "hardened") throw new Violation("hardened I/O", detail);
    // The posted code: a flaw must be shown by a checking layer. The report may come from
    // the I/O that raced (a stale IOVA reused by a new mapping moves another I/O's bytes;
    // the racing I/O's completion then trips KASAN), so it may come later in the run.
    if (!reported) this.unreported.push({ detail, reportsAt: f.reportsAt });
  }

  /** Flawed I/Os on v2/v3 with no report yet: each needs one before the run ends. */
  readonly unreported: { detail: string; reportsAt: number }[] = [];

  reap(): void {
    for (const c of this.ring.reap()) {
      const f = this.inflight.get(c.userData);
      if (!f) throw new Violation("unknown CQE", `user_data ${c.userData} res ${c.res}`);
      this.finish(c.userData, f, c.res);
    }
  }

  drain(): void {
    for (let i = 0; i < 64 && this.inflight.size; i++) {
      this.ring.submit(1);
      this.reap();
    }
    if (this.inflight.size || this.ring.inflight) {
      throw new Violation("lost CQE", `${this.inflight.size} I/Os never completed`);
    }
  }

  teardown(): void {
    this.event();
    this.reap();
    const pending = [...this.inflight.entries()];
    this.ring[Symbol.dispose]();
    if (this.ring.inflight !== 0) {
      throw new Violation("teardown", `${this.ring.inflight} in flight`);
    }
    // The ring waited for its I/O: it completed into the dead ring.
    for (const [ud, f] of pending) this.finish(ud, f, null);
    this.newRing();
  }

  /** The invariants that hold after every operation. */
  check(): void {
    const c = this.k.stats.counters;
    if (this.cfg.premap === "hardened" && this.reports()) {
      throw new Violation(
        "hardened checkers",
        `${c.iommuFaults} IOMMU faults, ${c.dmaDebugDeviceUnmappedBytes} unmapped bytes, ` +
          `${c.kasanReports} KASAN reports, ${c.dmaDebugErrors} DMA-API debug reports`,
      );
    }
  }

  /** Drain, then compare every known byte of the media with the shadow. */
  finishRun(): void {
    this.drain();
    for (const u of this.unreported) {
      if (this.reports() <= u.reportsAt) throw new Violation("silent flaw", u.detail);
    }
    const got = this.host.controller!.mediaRead(1, 0, AREA_BYTES);
    for (let s = 0; s < AREA_BYTES / SECTOR; s++) {
      if (!this.known[s]) continue;
      for (let j = s * SECTOR; j < (s + 1) * SECTOR; j++) {
        if (got[j] !== this.media[j]) {
          throw new Violation("media", `byte ${j} is ${got[j]}, the shadow says ${this.media[j]}`);
        }
      }
    }
    this.ring[Symbol.dispose]();
    for (const w of [0, 1]) if (this.fds[w] >= 0) sysClose(this.k, this.fds[w]);
    const pins = this.k.stats.counters;
    if (pins.pagesPinned !== pins.pagesUnpinned) {
      throw new Violation("pins", `${pins.pagesPinned} pinned, ${pins.pagesUnpinned} unpinned`);
    }
  }

  [Symbol.dispose](): void {
    try {
      this.ring?.[Symbol.dispose]();
      this.host[Symbol.dispose]();
    } catch {
      // A broken world is reported by the invariant that broke it.
    }
  }
}

/** Run `ops` on a fresh host. */
export function lcExecute(seed: number, ops: readonly LcOp[], cfg: LcConfig): LcResult {
  const res: LcResult = {
    seed,
    config: cfg,
    ops: 0,
    ios: 0,
    raced: 0,
    flawed: 0,
    iommuFaults: 0,
    unmappedBytes: 0,
    kasanReports: 0,
    dmaDebugErrors: 0,
    nvmeCommands: 0,
    failure: null,
  };
  let w: World | undefined;
  let i = -1;
  try {
    w = new World(seed, cfg);
    for (i = 0; i < ops.length; i++) {
      w.run(ops[i]);
      w.check();
      res.ops++;
    }
    i = ops.length;
    w.finishRun();
    w.check();
  } catch (e) {
    const invariant = e instanceof Violation ? e.invariant : "exception";
    const detail = e instanceof Error
      ? `${e.message}${e instanceof Violation ? "" : `\n${e.stack}`}`
      : String(e);
    res.failure = { op: i, invariant, detail };
  } finally {
    if (w) {
      const c = w.k.stats.counters;
      res.ios = w.ios;
      res.raced = w.raced;
      res.flawed = w.flawed;
      res.iommuFaults = c.iommuFaults;
      res.unmappedBytes = c.dmaDebugDeviceUnmappedBytes;
      res.kasanReports = c.kasanReports;
      res.dmaDebugErrors = c.dmaDebugErrors;
      res.nvmeCommands = c.nvmeCommands;
      w[Symbol.dispose]();
    }
  }
  return res;
}

/** Shrink a failing run (chunks dropped while the same invariant still breaks). */
export function lcMinimize(
  seed: number,
  ops: LcOp[],
  cfg: LcConfig,
  invariant: string,
  maxRuns = 200,
): LcOp[] {
  return shrinkByChunks(
    ops,
    (cand) => lcExecute(seed, cand, cfg).failure?.invariant === invariant,
    maxRuns,
  );
}
