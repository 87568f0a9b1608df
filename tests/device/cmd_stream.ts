/**
 * The host side of the differential device test: page frames at the same
 * pfns on two devices, the IOMMU page table in those frames (the byte layout
 * of ffi/native/nvme_emu.h), a translator that walks those bytes for the
 * TypeScript controller, and the seeded generator of commands (valid and
 * malformed) with their PRP lists and SGL segments.
 *
 * @module
 */

import type { BusTranslator } from "../../sim/dma/bus.ts";
import { IOMMU_READ, IOMMU_WRITE } from "../../sim/dma/io_pgtable.ts";
import { Iotlb } from "../../sim/dma/iotlb.ts";
import type { DeviceDmaPort, DmaFault } from "../../sim/dma/types.ts";
import {
  encodeNvmeCommand,
  encodeSglDescriptor,
  NVME_ADMIN,
  NVME_CMD,
  NVME_CQ_IRQ_ENABLED,
  NVME_NSID_ALL,
  NVME_QUEUE_PHYS_CONTIG,
  NVME_RW_FUA_CDW12,
  NVME_SGL_TYPE,
} from "../../sim/device/nvme_spec.ts";
import type { Rng } from "../../sim/random.ts";

/** 4 KiB. */
export const PAGE = 4096;
const PAGE_N = BigInt(PAGE);
/** Pages in one contiguous data run. */
export const RUN_PAGES = 8;
/** Bytes of one contiguous data run. */
export const RUN_BYTES = RUN_PAGES * PAGE;
/** IOVA pages in the remapped window of the translate domain. */
export const REMAP_PAGES = 256;
const IOVA_LIMIT = 1n << 48n;

/** Frames of one side: pfn -> 4 KiB view. */
export class FrameMem {
  /** The frames. */
  readonly pages = new Map<number, Uint8Array>();

  /** Read `len` bytes at physical `pa`; null if any byte is outside the frames. */
  read(pa: bigint, len: number): Uint8Array | null {
    const out = new Uint8Array(len);
    let done = 0;
    while (done < len) {
      const a = pa + BigInt(done);
      const p = this.pages.get(Number(a / PAGE_N));
      if (!p) return null;
      const off = Number(a % PAGE_N);
      const n = Math.min(PAGE - off, len - done);
      out.set(p.subarray(off, off + n), done);
      done += n;
    }
    return out;
  }

  /** Write at physical `pa`; throws if a byte is outside the frames (host writes are exact). */
  write(pa: bigint, data: Uint8Array): void {
    let done = 0;
    while (done < data.length) {
      const a = pa + BigInt(done);
      const p = this.pages.get(Number(a / PAGE_N));
      if (!p) throw new Error(`host write outside the frames at 0x${a.toString(16)}`);
      const off = Number(a % PAGE_N);
      const n = Math.min(PAGE - off, data.length - done);
      p.set(data.subarray(done, done + n), off);
      done += n;
    }
  }
}

/** Where every frame of the run lives, chosen from the seed. */
export interface HostLayout {
  /** Every pfn both sides register, in runs: [first pfn, npages]. */
  runs: [number, number][];
  adminSq: number;
  adminCq: number;
  /** Per I/O qid 1..maxQueues: SQ page and CQ page pfns. */
  ioSq: number[];
  ioCq: number[];
  /** PRP list / SGL segment pages. */
  lists: number[];
  /** Contiguous data runs (first pfn of each, RUN_PAGES long). */
  dataRuns: number[];
  /** IOMMU table pages (root first). */
  tables: number[];
  /** Pfns inside the window that no frame backs. */
  holes: number[];
  /** First IOVA pfn of the remapped window. */
  remapBase: number;
}

/** Choose frames at scattered pfns in a window (same pfns on both sides). */
export function makeLayout(rng: Rng, maxQueues: number): HostLayout {
  const window = 1 << 13;
  const base = rng.range(1 << 16, (1 << 27) - window - 1);
  const used = new Set<number>();
  const runs: [number, number][] = [];
  const take = (n: number): number => {
    for (;;) {
      const s = base + rng.int(window - n - 1);
      let ok = true;
      for (let i = -1; i <= n; i++) if (used.has(s + i)) ok = false; // a guard page each side
      if (!ok) continue;
      for (let i = 0; i < n; i++) used.add(s + i);
      runs.push([s, n]);
      return s;
    }
  };
  const adminSq = take(1);
  const adminCq = take(1);
  const ioSq = [0];
  const ioCq = [0];
  for (let q = 1; q <= maxQueues; q++) {
    ioSq.push(take(1));
    ioCq.push(take(1));
  }
  const lists = Array.from({ length: 96 }, () => take(1));
  const dataRuns = Array.from({ length: 24 }, () => take(RUN_PAGES));
  const tables = Array.from({ length: 48 }, () => take(1));
  const holes: number[] = [];
  while (holes.length < 16) {
    const p = base + rng.int(window);
    if (!used.has(p)) holes.push(p);
  }
  const remapBase = rng.range(1 << 30, 2 ** 35 - REMAP_PAGES - 1);
  return { runs, adminSq, adminCq, ioSq, ioCq, lists, dataRuns, tables, holes, remapBase };
}

/** Physical address of a pfn. */
export function pa(pfn: number, off = 0): bigint {
  return BigInt(pfn) * PAGE_N + BigInt(off);
}

// ------------------------------------------------------------------ IOMMU

/** PTE bits of the shared table layout. */
export const PTE_READ = 1n;
/** Write permission. */
export const PTE_WRITE = 2n;
const PTE_ADDR_MASK = ((1n << 52n) - 1n) & ~0xfffn;

/**
 * Builds the 4-level table in the frames of both sides through `write` (the
 * host's write to both memories), allocating table pages from `layout.tables`.
 */
export class TableBuilder {
  readonly #write: (pa: bigint, b: Uint8Array) => void;
  readonly #read: (pa: bigint, len: number) => Uint8Array | null;
  readonly #free: number[];
  /** Physical address of the root table page. */
  readonly root: bigint;

  /** A table with an empty root. */
  constructor(
    tables: number[],
    write: (pa: bigint, b: Uint8Array) => void,
    read: (pa: bigint, len: number) => Uint8Array | null,
  ) {
    this.#free = tables.slice(1);
    this.root = pa(tables[0]);
    this.#write = write;
    this.#read = read;
  }

  #entry(at: bigint): bigint {
    const b = this.#read(at, 8);
    if (!b) throw new Error("table read outside the frames");
    return new DataView(b.buffer).getBigUint64(0, true);
  }

  #put(at: bigint, v: bigint): void {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, v, true);
    this.#write(at, b);
  }

  /** Address of the leaf entry for `iovaPfn`, creating intermediate tables. */
  leafAddr(iovaPfn: number): bigint {
    let t = this.root;
    const iova = BigInt(iovaPfn) << 12n;
    for (let level = 4; level > 1; level--) {
      const idx = (iova >> BigInt(12 + 9 * (level - 1))) & 511n;
      const at = t + idx * 8n;
      const e = this.#entry(at);
      if ((e & 3n) === 0n) {
        const pfn = this.#free.shift();
        if (pfn === undefined) throw new Error("out of IOMMU table pages");
        this.#put(at, pa(pfn) | 3n);
        t = pa(pfn);
      } else t = e & PTE_ADDR_MASK;
    }
    return t + ((iova >> 12n) & 511n) * 8n;
  }

  /** Set the leaf for `iovaPfn` to physical pfn `pfn` with `prot` (PTE_READ|PTE_WRITE; 0 clears). */
  set(iovaPfn: number, pfn: number, prot: bigint): void {
    this.#put(this.leafAddr(iovaPfn), prot === 0n ? 0n : pa(pfn) | prot);
  }
}

/**
 * The TypeScript side's IOMMU for the differential test: walks the table
 * bytes in the frames (same layout as the C device) through an LRU IOTLB.
 */
export class ByteTableTranslator implements BusTranslator {
  /** "none"/"identity": bus = phys; "translate": the table at {@link root}. */
  mode: "none" | "identity" | "translate" = "none";
  /** Root table physical address. */
  root = 0n;
  /** The IOTLB (same capacity as the C device's). */
  iotlb: Iotlb;
  readonly #mem: FrameMem;
  readonly #capacity: number;

  /** A translator over `mem` with an IOTLB of `capacity` entries. */
  constructor(mem: FrameMem, capacity: number) {
    this.#mem = mem;
    this.#capacity = capacity;
    this.iotlb = new Iotlb(capacity);
  }

  /** nvme_emu_iommu_attach(): select the mode, flush the IOTLB. */
  attach(mode: "none" | "identity" | "translate", root: bigint): void {
    this.mode = mode;
    this.root = root;
    const old = this.iotlb;
    this.iotlb = new Iotlb(this.#capacity);
    this.iotlb.hits = old.hits;
    this.iotlb.misses = old.misses;
    this.iotlb.evictions = old.evictions;
  }

  /** Invalidate `npages` from `iovaPfn`, or everything for 0. */
  invalidate(iovaPfn: number, npages: number): void {
    if (npages === 0) this.iotlb.flushAll();
    else this.iotlb.invalidateRange(iovaPfn, npages);
  }

  #walk(iova: bigint): { pfn: number; prot: number } | undefined {
    let t = this.root;
    for (let level = 4; level >= 1; level--) {
      const idx = (iova >> BigInt(12 + 9 * (level - 1))) & 511n;
      const b = this.#mem.read(t + idx * 8n, 8);
      if (!b) return undefined;
      const e = new DataView(b.buffer).getBigUint64(0, true);
      if ((e & 3n) === 0n) return undefined;
      if (level === 1) {
        return { pfn: Number((e & PTE_ADDR_MASK) >> 12n), prot: Number(e & 3n) };
      }
      t = e & PTE_ADDR_MASK;
    }
    return undefined;
  }

  /** Iommu.translatePage() over the byte table. */
  translatePage(addr: bigint, write: boolean): bigint | DmaFault {
    const page = addr & ~0xfffn;
    if (this.mode !== "translate") return page;
    if (page >= IOVA_LIMIT) return { addr, reason: "unmapped" };
    const iovaPfn = Number(page >> 12n);
    let pte = this.iotlb.lookup(iovaPfn);
    if (pte === undefined) {
      pte = this.#walk(page);
      if (pte === undefined) return { addr, reason: "unmapped" };
      this.iotlb.fill(iovaPfn, pte);
    }
    if ((pte.prot & (write ? IOMMU_WRITE : IOMMU_READ)) === 0) {
      return { addr, reason: "permission" };
    }
    return BigInt(pte.pfn) << 12n;
  }
}

/** createDevicePort() over a {@link FrameMem}: translate, check every frame, then copy. */
export class FramePort implements DeviceDmaPort {
  /** Faults returned. */
  faults = 0;
  readonly #mem: FrameMem;
  readonly #tr: BusTranslator;

  /** A port over `mem` through `tr`. */
  constructor(mem: FrameMem, tr: BusTranslator) {
    this.#mem = mem;
    this.#tr = tr;
  }

  #resolve(addr: bigint, len: number, write: boolean): [Uint8Array, number, number][] | DmaFault {
    if (addr < 0n || addr + BigInt(len) > 1n << 64n) {
      this.faults++;
      return { addr, reason: "bad-address" };
    }
    const out: [Uint8Array, number, number][] = [];
    let done = 0;
    while (done < len) {
      const a = addr + BigInt(done);
      const off = Number(a & 0xfffn);
      const n = Math.min(PAGE - off, len - done);
      const t = this.#tr.translatePage(a, write);
      if (typeof t !== "bigint") {
        this.faults++;
        return t;
      }
      const p = this.#mem.pages.get(Number(t >> 12n));
      if (!p) {
        this.faults++;
        return { addr: a, reason: "bad-address" };
      }
      out.push([p, off, n]);
      done += n;
    }
    return out;
  }

  /** Device reads and writes (accesses, faulted ones included). */
  reads = 0;
  writes = 0;

  /** DeviceDmaPort.read */
  read(addr: bigint, len: number): Uint8Array | DmaFault {
    this.reads++;
    const r = this.#resolve(addr, len, false);
    if (!Array.isArray(r)) return r;
    const out = new Uint8Array(len);
    let pos = 0;
    for (const [p, off, n] of r) {
      out.set(p.subarray(off, off + n), pos);
      pos += n;
    }
    return out;
  }

  /** DeviceDmaPort.readInto */
  readInto(addr: bigint, dst: Uint8Array): DmaFault | null {
    const r = this.read(addr, dst.length);
    if (!(r instanceof Uint8Array)) return r;
    dst.set(r);
    return null;
  }

  /** Debug hook: called for each page piece the device writes. */
  watch: ((page: Uint8Array, off: number, n: number, addr: bigint, pos: number) => void) | null =
    null;

  /** DeviceDmaPort.writeWith */
  writeWith(
    addr: bigint,
    len: number,
    fill: (dst: Uint8Array, pos: number) => void,
  ): DmaFault | null {
    const data = new Uint8Array(len);
    fill(data, 0);
    return this.write(addr, data);
  }

  /** DeviceDmaPort.write */
  write(addr: bigint, data: Uint8Array): DmaFault | null {
    this.writes++;
    const r = this.#resolve(addr, data.length, true);
    if (!Array.isArray(r)) return r;
    let pos = 0;
    for (const [p, off, n] of r) {
      this.watch?.(p, off, n, addr, pos);
      p.set(data.subarray(pos, pos + n), off);
      pos += n;
    }
    return null;
  }
}

// -------------------------------------------------------------- generator

/** The controller configuration a seed picks (same on both sides). */
export interface StreamConfig {
  maxQueues: number;
  mqes: number;
  mdts: number;
  sgls: boolean;
  vwc: boolean;
  /** Volatile write cache capacity (bytes; undefined: the default 4 MiB). */
  writeCacheBytes: number | undefined;
  iotlbEntries: number;
  namespaces: { lbaSize: 512 | 4096; sizeBytes: bigint }[];
}

/** A seed's controller configuration: mostly SGLs on, small IOTLB so it evicts. */
export function streamConfig(rng: Rng): StreamConfig {
  return {
    maxQueues: rng.pick([3, 4, 6]),
    mqes: rng.pick([64, 64, 33, 16]),
    mdts: rng.pick([4, 5, 5, 6]),
    sgls: rng.chance(0.85),
    vwc: rng.chance(0.5),
    writeCacheBytes: rng.pick([16384, 65536, 1 << 20, undefined]),
    iotlbEntries: rng.pick([8, 16, 32, 64]),
    namespaces: [
      { lbaSize: 512, sizeBytes: 1n << 20n },
      { lbaSize: 4096, sizeBytes: 2n << 20n },
    ],
  };
}

/** Host-side knowledge the generator needs to address memory. */
export interface AddrSpace {
  rng: Rng;
  layout: HostLayout;
  mode: "none" | "identity" | "translate";
  /** Take a list page (pfn), or undefined when none is free. */
  takeList(): number | undefined;
  /** Whether the current command may point at unreachable or restricted memory. */
  risky: boolean;
  /** Whether remapped IOVA page `i` is mapped read/write in the table. */
  remapUsable(i: number): boolean;
  /** A page to use often for a while (an IOVA whose PTE was cleared while cached). */
  prefer: bigint | undefined;
  /** Data pointers that used {@link prefer}. */
  preferUses: number;
}

/**
 * A page-aligned address for data. A risky command (`s.risky`) may get a
 * hole, an address beyond the frame table, or any page of the remapped
 * window (absent or read/write-only entries); a plain one gets pages the
 * device can reach (in translate mode, remapped pages with both permissions).
 */
export function dataPage(s: AddrSpace): bigint {
  const r = s.rng;
  if (s.prefer !== undefined && r.chance(0.4)) {
    s.preferUses++;
    return s.prefer;
  }
  const x = r.float();
  if (s.risky) {
    if (x < 0.06) return pa(r.pick(s.layout.holes));
    if (x < 0.08) return r.pick([0x7_0000_0000n, 1n << 50n, 0xffff_ffff_ffff_f000n]);
    if (x < 0.3) return pa(s.layout.remapBase + r.int(REMAP_PAGES));
  }
  if (s.mode === "translate" && x < 0.4) {
    const i = r.int(REMAP_PAGES);
    if (s.remapUsable(i)) return pa(s.layout.remapBase + i);
  }
  return pa(r.pick(s.layout.dataRuns) + r.int(RUN_PAGES));
}

/** Start of a contiguous `len`-byte data region (len <= RUN_BYTES). */
export function dataRegion(s: AddrSpace, len: number): bigint {
  const r = s.rng;
  const align = r.pick([512, 512, 4, 1, 4096]);
  const x = r.float();
  if (s.risky && x < 0.06) return pa(r.pick(s.layout.holes)) + BigInt(r.int(PAGE));
  if ((s.mode === "translate" && x < 0.3) || (s.risky && x < 0.1)) {
    const span = REMAP_PAGES * PAGE - len;
    const off = Math.floor(r.int(span + 1) / align) * align;
    let usable = true;
    for (let p = Math.floor(off / PAGE); p <= Math.floor((off + len - 1) / PAGE); p++) {
      if (!s.remapUsable(p)) usable = false;
    }
    if (usable || s.risky) return pa(s.layout.remapBase) + BigInt(off);
  }
  const off = Math.floor(r.int(RUN_BYTES - len + 1) / align) * align;
  return pa(r.pick(s.layout.dataRuns)) + BigInt(off);
}

/** One command the generator built: its SQE, list pages it uses, and a label. */
export interface GenCmd {
  sqe: Uint8Array;
  lists: number[];
  label: string;
  /** Host memory writes the command needs before its doorbell (lists, segments). */
  writes: [bigint, Uint8Array][];
}

function u64s(vals: bigint[]): Uint8Array {
  const b = new Uint8Array(vals.length * 8);
  const v = new DataView(b.buffer);
  vals.forEach((x, i) => v.setBigUint64(i * 8, BigInt.asUintN(64, x), true));
  return b;
}

interface Dptr {
  prp1: bigint;
  prp2: bigint;
  psdt: number;
  label: string;
}

/** PRP1/PRP2/list for `len` bytes; malformed variants by chance. */
function buildPrp(s: AddrSpace, g: GenCmd, len: number, bad: boolean): Dptr {
  const r = s.rng;
  let off = r.pick([0, 0, 0, 512, 1024, 3584, r.int(1024) * 4]);
  const badKind = bad ? r.int(6) : -1;
  if (badKind === 0) off |= r.range(1, 3); // PRP1 not dword aligned
  const prp1 = dataPage(s) + BigInt(off);
  const n = Math.ceil(((off & ~3) + len) / PAGE);
  if (n === 1) {
    return { prp1, prp2: r.chance(0.5) ? 0n : BigInt(r.nextU32()), psdt: 0, label: "prp1" };
  }
  if (n === 2) {
    let prp2 = dataPage(s);
    if (badKind === 1) prp2 += BigInt(r.range(1, 1023) * 4);
    return { prp1, prp2, psdt: 0, label: "prp2" };
  }
  const entries = Array.from({ length: n - 1 }, () => dataPage(s));
  if (badKind === 2) entries[r.int(entries.length)] += BigInt(r.range(1, 1023) * 4);
  if (badKind === 5) {
    // PRP2 points into a data page: whatever is there is the list.
    return { prp1, prp2: dataPage(s) + BigInt(r.int(512) * 8), psdt: 0, label: "prp-garbage-list" };
  }
  let first = s.takeList();
  if (first === undefined) return { prp1, prp2: 0n, psdt: 0, label: "prp-nolist" };
  g.lists.push(first);
  let start = r.pick([0, 0, 0, 8 * r.int(512), PAGE - 8 * r.range(1, 3)]);
  if (badKind === 3) start |= r.range(1, 3); // list pointer not dword aligned
  const prp2 = pa(first, start);
  let at = pa(first, start & ~3);
  let cap = (PAGE - (start & ~3)) / 8;
  let i = 0;
  let chained = 0;
  while (i < entries.length) {
    const remaining = entries.length - i;
    if (remaining <= cap) {
      g.writes.push([at, u64s(entries.slice(i))]);
      break;
    }
    const next = s.takeList();
    if (next === undefined) {
      g.writes.push([at, u64s(entries.slice(i, i + cap))]); // runs off into a stale page
      break;
    }
    g.lists.push(next);
    let chain = pa(next);
    if (badKind === 4) chain += BigInt(r.range(1, 511) * 8);
    g.writes.push([at, u64s([...entries.slice(i, i + cap - 1), chain])]);
    i += cap - 1;
    chained++;
    first = next;
    at = pa(next);
    cap = PAGE / 8;
  }
  return { prp1, prp2, psdt: 0, label: chained > 0 ? `prp-list+${chained}chain` : "prp-list" };
}

function sglDesc(addr: bigint, length: number, type: number, subtype = 0): Uint8Array {
  const b = new Uint8Array(16);
  encodeSglDescriptor({ addr, length, type, subtype }, b);
  return b;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** An SGL for `len` bytes: one descriptor in the command, or segments in list pages. */
function buildSgl(s: AddrSpace, g: GenCmd, len: number, isWrite: boolean, bad: boolean): Dptr {
  const r = s.rng;
  const psdt = bad && r.chance(0.08) ? 3 : r.pick([1, 2]);
  const badKind = bad ? r.int(16) : -1;
  const cmdDesc = (d: Uint8Array, label: string): Dptr => {
    const v = new DataView(d.buffer);
    return { prp1: v.getBigUint64(0, true), prp2: v.getBigUint64(8, true), psdt, label };
  };
  if (len <= RUN_BYTES && r.chance(0.3) && badKind < 0) {
    return cmdDesc(sglDesc(dataRegion(s, len), len, NVME_SGL_TYPE.DATA_BLOCK), "sgl-data");
  }
  if (!isWrite && r.chance(0.04)) {
    return cmdDesc(sglDesc(0n, len, NVME_SGL_TYPE.BIT_BUCKET), "sgl-bitbucket");
  }
  switch (badKind) {
    case 0:
      return cmdDesc(sglDesc(dataRegion(s, 512), len, r.pick([4, 5, 6, 9, 15])), "sgl-bad-type");
    case 1:
      return cmdDesc(sglDesc(dataRegion(s, 512), len, 0, r.range(1, 15)), "sgl-bad-subtype");
    case 2:
      return cmdDesc(sglDesc(0n, len, NVME_SGL_TYPE.BIT_BUCKET), "sgl-bitbucket-w?");
    case 3:
      return cmdDesc(sglDesc(dataRegion(s, 512), r.int(len), 0), "sgl-data-short");
    case 4:
      return cmdDesc(
        sglDesc((1n << 64n) - BigInt(r.range(1, 4096)), len, 0),
        "sgl-data-overflow",
      );
    case 5:
      return cmdDesc(sglDesc(pa(r.pick(s.layout.holes)), 64 * 1024, 2), "sgl-seg-4096-desc");
    case 6:
      return cmdDesc(sglDesc(pa(r.pick(s.layout.holes)), 32, 2), "sgl-seg-hole");
  }
  // Segmented: split len into pieces of at most RUN_BYTES.
  const pieces: number[] = [];
  let rem = len;
  const nPieces = Math.min(r.range(1, 6), Math.max(1, Math.ceil(len / 512)));
  for (let i = 0; i < nPieces - 1 && rem > 1; i++) {
    const p = Math.min(RUN_BYTES, r.range(1, Math.max(1, Math.floor(rem / 2))));
    pieces.push(p);
    rem -= p;
  }
  while (rem > 0) {
    const p = Math.min(rem, RUN_BYTES);
    pieces.push(p);
    rem -= p;
  }
  let descs: Uint8Array[] = pieces.map((p) => {
    if (!isWrite && r.chance(0.1)) return sglDesc(0n, p, NVME_SGL_TYPE.BIT_BUCKET);
    return sglDesc(dataRegion(s, p), p, NVME_SGL_TYPE.DATA_BLOCK);
  });
  if (r.chance(0.1)) descs.splice(r.int(descs.length + 1), 0, sglDesc(0n, 0, 0)); // zero-length
  let label = `sgl-seg${descs.length}`;
  switch (badKind) {
    case 7: {
      const i = r.int(descs.length);
      descs[i] = sglDesc(0x1000n, 512, r.pick([4, 5, 7, 8, 14]));
      label = "sgl-list-bad-type";
      break;
    }
    case 8: {
      const i = r.int(descs.length);
      const v = new DataView(descs[i].buffer);
      descs[i][15] = (descs[i][15] & 0xf0) | r.range(1, 15);
      label = `sgl-list-subtype${descs[i][15] & 15}-len${v.getUint32(8, true)}`;
      break;
    }
    case 9:
      descs.push(sglDesc(dataRegion(s, 512), 512, 0));
      label = "sgl-too-long";
      break;
    case 10:
      if (descs.length > 1) descs.pop();
      else descs[0] = sglDesc(dataRegion(s, 512), Math.max(0, len - r.range(1, 512)), 0);
      label = "sgl-too-short";
      break;
    case 11:
      if (isWrite) {
        descs[r.int(descs.length)] = sglDesc(0n, pieces[0], NVME_SGL_TYPE.BIT_BUCKET);
        label = "sgl-write-bitbucket";
      }
      break;
    case 12:
      descs.splice(Math.max(0, descs.length - 1), 0, sglDesc(0x2000n, 32, NVME_SGL_TYPE.SEGMENT));
      label = "sgl-segment-not-last";
      break;
    case 13:
      descs = descs.map((d) => {
        d[12] = r.int(256);
        d[13] = r.int(256);
        d[14] = r.int(256);
        return d;
      });
      label = "sgl-reserved-bytes";
      break;
  }
  // Distribute into 1..3 segments, each in its own list page.
  const nSegs = Math.min(descs.length, r.range(1, 3));
  const pages: number[] = [];
  for (let i = 0; i < nSegs; i++) {
    const p = s.takeList();
    if (p === undefined) break;
    pages.push(p);
    g.lists.push(p);
  }
  if (pages.length === 0) {
    return cmdDesc(sglDesc(dataRegion(s, 512), 512, 0), "sgl-nolist");
  }
  const per = Math.ceil(descs.length / pages.length);
  const chunks: Uint8Array[][] = [];
  for (let i = 0; i < pages.length; i++) chunks.push(descs.slice(i * per, (i + 1) * per));
  while (chunks.length > 1 && chunks[chunks.length - 1].length === 0) chunks.pop();
  const offs = chunks.map((c) => r.chance(0.8) ? 0 : 16 * r.int((PAGE - 16 * (c.length + 1)) / 16));
  const segPtr = (i: number): Uint8Array => {
    const isLast = i === chunks.length - 1;
    let type: number = isLast && r.chance(0.85)
      ? NVME_SGL_TYPE.LAST_SEGMENT
      : NVME_SGL_TYPE.SEGMENT;
    let length = (chunks[i].length + (isLast ? 0 : 1)) * 16;
    let subtype = 0;
    if (badKind === 14 && r.chance(0.5)) {
      const k = r.int(3);
      if (k === 0) length = r.pick([0, 8, 24, length + 4]);
      else if (k === 1) subtype = r.range(1, 15);
      else if (i < chunks.length - 1) type = NVME_SGL_TYPE.LAST_SEGMENT; // last segment chains
    }
    return sglDesc(pa(pages[i], offs[i]), length, type, subtype);
  };
  for (let i = 0; i < chunks.length; i++) {
    const body = i < chunks.length - 1 ? [...chunks[i], segPtr(i + 1)] : chunks[i];
    g.writes.push([pa(pages[i], offs[i]), concat(body)]);
  }
  if (badKind === 15) {
    // A segment that chains to itself: bounded by the walk's segment limit.
    const loop = sglDesc(pa(pages[0], offs[0]), 32, NVME_SGL_TYPE.SEGMENT);
    g.writes.push([pa(pages[0], offs[0]), concat([sglDesc(0n, 0, 0), loop])]);
    return cmdDesc(sglDesc(pa(pages[0], offs[0]), 32, NVME_SGL_TYPE.SEGMENT), "sgl-loop");
  }
  // The SGL segments may straddle a list page's end: read as two pages.
  return cmdDesc(segPtr(0), label);
}

/** A Read or Write (or Flush, or an unknown I/O opcode), valid or malformed. */
export function genIo(s: AddrSpace, cfg: StreamConfig, cid: number): GenCmd {
  const r = s.rng;
  const g: GenCmd = { sqe: new Uint8Array(0), lists: [], label: "", writes: [] };
  const bad = r.chance(0.3);
  s.risky = r.chance(0.12);
  const x = r.float();
  const nsCount = cfg.namespaces.length;
  let nsid = 1 + r.int(nsCount);
  if (bad && r.chance(0.12)) nsid = r.pick([0, nsCount + 1, NVME_NSID_ALL, 0x8000_0000]);
  let flags = 0;
  if (bad && r.chance(0.06)) flags |= r.range(1, 3); // fused
  if (x < 0.06) {
    if (r.chance(0.3)) nsid = NVME_NSID_ALL;
    g.label = `flush nsid ${nsid}`;
    g.sqe = encodeNvmeCommand({ opcode: NVME_CMD.FLUSH, commandId: cid, nsid, flags });
    return g;
  }
  if (x < 0.09) {
    const opcode = r.pick([0x04, 0x05, 0x08, 0x09, 0x0d, 0x11, 0x7f, 0x80, 0x81, 0xff]);
    g.label = `io-opcode 0x${opcode.toString(16)}`;
    g.sqe = encodeNvmeCommand({ opcode, commandId: cid, nsid, flags, cdw12: r.int(8) });
    return g;
  }
  const isWrite = r.chance(0.5);
  const ns = cfg.namespaces[(nsid - 1) % nsCount] ?? cfg.namespaces[0];
  const lba = ns.lbaSize;
  const nlbTotal = Number(ns.sizeBytes / BigInt(lba));
  const maxLen = (1 << cfg.mdts) * PAGE;
  let nlb = r.chance(0.5) ? r.range(1, Math.max(1, (4 * PAGE) / lba)) : r.range(1, maxLen / lba);
  if (bad && r.chance(0.08)) nlb = maxLen / lba + r.range(1, 64); // over MDTS
  let slba = BigInt(r.int(Math.max(1, nlbTotal - nlb + 1)));
  if (bad && r.chance(0.08)) {
    slba = r.pick([
      BigInt(nlbTotal - nlb + r.range(1, 8)),
      BigInt(nlbTotal),
      1n << 63n,
      (1n << 64n) - 1n,
    ]);
  }
  const len = Math.min(nlb * lba, maxLen + 8 * PAGE);
  const useSgl = cfg.sgls ? r.chance(0.45) : r.chance(0.05);
  const d = useSgl ? buildSgl(s, g, len, isWrite, bad) : buildPrp(s, g, len, bad);
  g.label = `${isWrite ? "write" : "read"} ns${nsid} slba ${slba} nlb ${nlb} ${d.label}`;
  g.sqe = encodeNvmeCommand({
    opcode: isWrite ? NVME_CMD.WRITE : NVME_CMD.READ,
    commandId: cid,
    nsid,
    flags,
    psdt: d.psdt,
    prp1: d.prp1,
    prp2: d.prp2,
    slba,
    nlb0: nlb - 1,
    cdw12: r.chance(0.2) ? NVME_RW_FUA_CDW12 : 0,
    mptr: r.chance(0.1) ? BigInt(r.nextU32()) : 0n,
  });
  if (new DataView(g.sqe.buffer).getUint32(48, true) & NVME_RW_FUA_CDW12) g.label += " fua";
  return g;
}

/** Identify, Get/Set Features, unknown admin opcodes (queue commands are built by the host). */
export function genAdmin(s: AddrSpace, cfg: StreamConfig, cid: number): GenCmd {
  const r = s.rng;
  const g: GenCmd = { sqe: new Uint8Array(0), lists: [], label: "", writes: [] };
  let flags = 0;
  s.risky = r.chance(0.1);
  if (r.chance(0.04)) flags |= r.range(1, 3);
  if (r.chance(0.04)) flags |= r.range(1, 3) << 6; // PSDT on an admin command
  const x = r.float();
  if (x < 0.55) {
    const cns = r.pick([0, 0, 0, 1, 1, 1, 2, 2, 3, 0xff]);
    const nsid = r.pick([0, 1, 2, cfg.namespaces.length + 1, NVME_NSID_ALL, 0xffff_fffe]);
    const d = buildPrp(s, g, 4096, r.chance(0.15));
    g.label = `identify cns ${cns} nsid 0x${nsid.toString(16)} ${d.label}`;
    g.sqe = encodeNvmeCommand({
      opcode: NVME_ADMIN.IDENTIFY,
      commandId: cid,
      nsid,
      flags,
      prp1: d.prp1,
      prp2: d.prp2,
      cdw10: cns | (r.chance(0.1) ? r.nextU32() & 0xffff_0000 : 0),
    });
    return g;
  }
  if (x < 0.7) {
    const fid = r.pick([7, 7, 7, 1, 2, 0x80, 0]);
    const sel = r.pick([0, 0, 1, 2, 3, 4, 7]);
    g.label = `get-features fid ${fid} sel ${sel}`;
    g.sqe = encodeNvmeCommand({
      opcode: NVME_ADMIN.GET_FEATURES,
      commandId: cid,
      flags,
      cdw10: fid | (sel << 8),
    });
    return g;
  }
  if (x < 0.85) {
    const fid = r.pick([7, 7, 7, 4, 0x0b]);
    const save = r.chance(0.15) ? 1 << 31 : 0;
    const nsqr = r.pick([0, 3, 7, 0xffff, r.int(0x10000)]);
    const ncqr = r.pick([0, 3, 7, 0xffff, r.int(0x10000)]);
    g.label = `set-features fid ${fid}${save ? " save" : ""} ${nsqr}/${ncqr}`;
    g.sqe = encodeNvmeCommand({
      opcode: NVME_ADMIN.SET_FEATURES,
      commandId: cid,
      flags,
      cdw10: (fid | save) >>> 0,
      cdw11: ((ncqr << 16) | nsqr) >>> 0,
    });
    return g;
  }
  const opcode = r.pick([0x02, 0x08, 0x03, 0x0d, 0x10, 0x80, 0xc0, 0xff]);
  if (opcode === NVME_ADMIN.ABORT_CMD) {
    // Abort of any SQID/CID: never found (commands execute when fetched), dword 0 bit 0 set.
    const cdw10 = r.nextU32();
    g.label = `abort sq ${cdw10 & 0xffff} cid ${cdw10 >>> 16}`;
    g.sqe = encodeNvmeCommand({ opcode, commandId: cid, flags, cdw10 });
    return g;
  }
  g.label = `admin-opcode 0x${opcode.toString(16)}`;
  g.sqe = encodeNvmeCommand({ opcode, commandId: cid, flags, nsid: r.int(3) });
  return g;
}

/** Create I/O CQ (possibly malformed in one field). */
export function genCreateCq(
  cid: number,
  qid: number,
  base: bigint,
  size: number,
  vector: number,
  ien: boolean,
): Uint8Array {
  return encodeNvmeCommand({
    opcode: NVME_ADMIN.CREATE_CQ,
    commandId: cid,
    prp1: base,
    cdw10: (((size - 1) << 16) | (qid & 0xffff)) >>> 0,
    cdw11: ((vector << 16) | NVME_QUEUE_PHYS_CONTIG | (ien ? NVME_CQ_IRQ_ENABLED : 0)) >>> 0,
  });
}

/** Create I/O SQ. */
export function genCreateSq(
  cid: number,
  qid: number,
  base: bigint,
  size: number,
  cqid: number,
  pc = true,
): Uint8Array {
  return encodeNvmeCommand({
    opcode: NVME_ADMIN.CREATE_SQ,
    commandId: cid,
    prp1: base,
    cdw10: (((size - 1) << 16) | (qid & 0xffff)) >>> 0,
    cdw11: ((cqid << 16) | (pc ? NVME_QUEUE_PHYS_CONTIG : 0) | (1 << 1)) >>> 0,
  });
}
