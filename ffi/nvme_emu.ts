/**
 * The real backend's emulated NVMe controller, `libnvme_emu.so` (built from
 * `ffi/native/nvme_emu.c` by `deno task build`), through Deno FFI. The ABI is
 * `ffi/native/nvme_emu.h`; this module encodes its structs at the offsets the
 * header gives (checked against `nvme_emu_layout()` by a test).
 *
 * {@link NvmeEmu} implements the driver seam {@link NvmeControllerPort}
 * (BAR0 registers, doorbells, MSI-X handlers) and adds what the host side of
 * the emulation needs: the frame table (pfn -> process memory), the IOMMU
 * attachment and invalidations, explicit stepping of an inline-mode device
 * ({@link NvmeEmu.process}), interrupt delivery, counters and media views.
 *
 * @example
 * ```ts
 * import { NvmeEmu, nvmeEmuUnavailable } from "./nvme_emu.ts";
 * if (nvmeEmuUnavailable() === null) {
 *   using emu = NvmeEmu.create({ namespaces: [{ lbaSize: 4096, sizeBytes: 1n << 20n }] });
 *   console.log(emu.readReg32(0x08).toString(16)); // "10400" (VS 1.4)
 * }
 * ```
 *
 * @module
 */

import { NVME_REG, type NvmeControllerPort } from "../sim/device/port.ts";
import {
  emptyFaultCounts,
  NVME_FAULT_KINDS,
  type NvmeFaultKind,
  type NvmeFaultRule,
  validateFaultRule,
} from "../sim/device/faults.ts";
import type { PowerCutReport } from "../sim/device/write_cache.ts";
import { Errno, ErrnoError } from "../sim/uapi/errno.ts";

/** NVME_EMU_ABI: the header version this binding encodes. */
export const NVME_EMU_ABI = 2;
/** NVME_EMU_MAX_NS: namespaces per controller. */
export const NVME_EMU_MAX_NS = 16;
/** NVME_EMU_MAX_PFN: largest pfn + 1 the frame table holds. */
export const NVME_EMU_MAX_PFN = 2 ** 28;
/** Bytes of `media_path` in `struct nvme_emu_ns_config` (NUL included). */
export const NVME_EMU_MEDIA_PATH_BYTES = 272;

/** Offsets and sizes of the header's structs (x86_64), checked by `nvme_emu_layout()`. */
export const NVME_EMU_LAYOUT = {
  config: {
    SIZE: 56 + NVME_EMU_MAX_NS * 288,
    abi: 0,
    nrNamespaces: 4,
    maxQueues: 8,
    mqes: 12,
    mdts: 16,
    sgls: 20,
    vwc: 24,
    mode: 28,
    idlePollNs: 32,
    seed: 40,
    iotlbEntries: 48,
    vwcCacheKib: 52,
    ns: 56,
  },
  ns: { SIZE: 288, lbaSize: 0, flags: 4, sizeBytes: 8, mediaPath: 16 },
  stats: { SIZE: 38 * 8 },
  fault: {
    SIZE: 48,
    kind: 0,
    flags: 4,
    nsid: 8,
    opcode: 12,
    slbaFirst: 16,
    slbaLast: 24,
    probability: 32,
    count: 40,
    reserved: 44,
  },
} as const;

/** Fields of `struct nvme_emu_stats`, in order (each a u64). */
export const NVME_EMU_STAT_FIELDS = [
  "commands",
  "adminCommands",
  "reads",
  "writes",
  "flushes",
  "errors",
  "bytesRead",
  "bytesWritten",
  "dmaReads",
  "dmaWrites",
  "dmaFaults",
  "iotlbHits",
  "iotlbMisses",
  "iotlbEvictions",
  "invalidations",
  "mediaDirect",
  "mediaBounced",
  "doorbells",
  "invalidDoorbells",
  "droppedEvents",
  "irqs",
  "irqMessages",
  "sleeps",
  "wakeups",
  "busyNs",
  "pollLoops",
  "iommuFaults",
  "injectReadErrors",
  "injectWriteFaults",
  "injectDrops",
  "injectCfs",
  "injectAdminFails",
  "injectBadCids",
  "cachedWrites",
  "blocksDestaged",
  "writesLost",
  "writesKept",
  "blocksLost",
] as const;

/** The stats field counting each injected fault kind. */
const INJECT_STAT: Record<NvmeFaultKind, typeof NVME_EMU_STAT_FIELDS[number]> = {
  "read-error": "injectReadErrors",
  "write-fault": "injectWriteFaults",
  drop: "injectDrops",
  cfs: "injectCfs",
  "admin-fail": "injectAdminFails",
  "bad-cid": "injectBadCids",
};

/** nvme_emu_fault.flags (NVME_EMU_INJECT_F_*). */
const INJECT_F = { NSID: 1, LBA: 2, OPCODE: 4, ADMIN: 8, DNR: 16 } as const;

/** `struct nvme_emu_stats`, decoded (counters as numbers: exact below 2^53). */
export type NvmeEmuStats = Record<typeof NVME_EMU_STAT_FIELDS[number], number>;

/** NVME_EMU_NS_NO_DIRECT: never open the media file O_DIRECT. */
export const NVME_EMU_NS_NO_DIRECT = 1;

/** One namespace of an emulated controller. */
export interface NvmeEmuNamespace {
  /** Logical block size. */
  lbaSize: 512 | 4096;
  /** Capacity in bytes, a multiple of lbaSize (at most 2^50). */
  sizeBytes: bigint | number;
  /** Media file (opened O_RDWR|O_CREAT, extended to sizeBytes); absent: sparse process memory. */
  mediaPath?: string;
  /** Always go through the device's bounce buffer (no O_DIRECT on the media file). */
  noDirect?: boolean;
}

/** Controller configuration (`struct nvme_emu_config`). */
export interface NvmeEmuConfig {
  /** Namespaces, NSID 1.. in order (1..16). */
  namespaces: NvmeEmuNamespace[];
  /** I/O queue pairs, 1..1024 (default 8); MSI-X vectors = maxQueues + 1. */
  maxQueues?: number;
  /** CAP.MQES + 1, 2..65536 (default 1024). */
  mqes?: number;
  /** log2 of the max transfer in 4 KiB pages, 1..12 (default 5). */
  mdts?: number;
  /** Advertise and accept SGLs (default true). */
  sgls?: boolean;
  /**
   * A volatile write cache (default false): Identify VWC set, writes complete
   * into the cache until Flush, FUA, eviction or shutdown (as the TypeScript
   * controller's `volatileWriteCache`).
   */
  volatileWriteCache?: boolean;
  /** Capacity of the volatile write cache in bytes, a multiple of 1024 (default 4 MiB). */
  writeCacheBytes?: number;
  /** "inline": the caller steps the device with {@link NvmeEmu.process}; "thread": a device thread. */
  mode?: "inline" | "thread";
  /** Thread mode: poll this long after the last work before sleeping (default 50 µs). */
  idlePollNs?: bigint | number;
  /** Seed of every random choice the device makes (default 0). */
  seed?: bigint | number;
  /** IOTLB capacity, 1..65536 (default 128). */
  iotlbEntries?: number;
}

/** Which build of the library: plain, or AddressSanitizer + UBSan. */
export type NvmeEmuVariant = "plain" | "asan";

/** IOMMU configuration of the device's bus (NVME_EMU_IOMMU_*). */
export type NvmeEmuIommuMode = "none" | "identity" | "translate";

/** One traced device access that reached host memory (struct nvme_emu_access). */
export interface NvmeEmuAccess {
  /** Bus address. */
  addr: bigint;
  /** Bytes. */
  len: number;
  /** Whether the device wrote host memory (else it read). */
  write: boolean;
}

/** A DMA fault the device saw (nvme_emu_last_fault). */
export interface NvmeEmuFault {
  /** NVME_EMU_FAULT_*: none, no translation, no permission, outside the registered frames. */
  reason: "none" | "unmapped" | "permission" | "bad-address";
  /** The bus or physical address at fault. */
  addr: bigint;
}

const IOMMU_MODE: Record<NvmeEmuIommuMode, number> = { none: 0, identity: 1, translate: 2 };
const FAULT_REASONS = ["none", "unmapped", "permission", "bad-address"] as const;
const LAYOUT_VALUES = 9;

/** The library's symbols (all synchronous; the blocking waits are bounded by their timeouts). */
export const NVME_EMU_SYMBOLS = {
  nvme_emu_create: { parameters: ["buffer", "buffer"], result: "pointer" },
  nvme_emu_destroy: { parameters: ["pointer"], result: "void" },
  nvme_emu_frame_map: { parameters: ["pointer", "u64", "u64", "pointer"], result: "i32" },
  nvme_emu_frame_unmap: { parameters: ["pointer", "u64", "u64"], result: "i32" },
  nvme_emu_iommu_attach: { parameters: ["pointer", "u32", "u64"], result: "i32" },
  nvme_emu_inv_post: { parameters: ["pointer", "u64", "u64"], result: "u64" },
  nvme_emu_inv_done: { parameters: ["pointer"], result: "u64" },
  nvme_emu_inv_wait: { parameters: ["pointer", "u64", "u64"], result: "i32" },
  nvme_emu_mmio_read32: { parameters: ["pointer", "u32"], result: "u32" },
  nvme_emu_mmio_write32: { parameters: ["pointer", "u32", "u32"], result: "void" },
  nvme_emu_process: { parameters: ["pointer", "u32"], result: "i32" },
  nvme_emu_irq_take: { parameters: ["pointer", "buffer", "u32"], result: "i32" },
  nvme_emu_irq_wait: { parameters: ["pointer", "u64"], result: "i32" },
  nvme_emu_irq_ring: { parameters: ["pointer", "i32", "u64"], result: "i32" },
  nvme_emu_stats: { parameters: ["pointer", "buffer", "u32"], result: "i32" },
  nvme_emu_last_fault: { parameters: ["pointer", "buffer"], result: "i32" },
  nvme_emu_trace_enable: { parameters: ["pointer", "u32", "buffer"], result: "pointer" },
  nvme_emu_trace_take: { parameters: ["pointer", "buffer", "u32"], result: "i32" },
  nvme_emu_outstanding: { parameters: ["pointer"], result: "i32" },
  nvme_emu_media_read: {
    parameters: ["pointer", "u32", "u64", "buffer", "u64"],
    result: "i32",
  },
  nvme_emu_media_write: {
    parameters: ["pointer", "u32", "u64", "buffer", "u64"],
    result: "i32",
  },
  nvme_emu_fault_add: { parameters: ["pointer", "buffer"], result: "i32" },
  nvme_emu_fault_clear: { parameters: ["pointer"], result: "void" },
  nvme_emu_power_cut: { parameters: ["pointer", "u64"], result: "i32" },
  nvme_emu_ledger: { parameters: [], result: "i64" },
  nvme_emu_layout: { parameters: ["buffer", "u32"], result: "i32" },
} as const;

/** The opened library. */
export type NvmeEmuLib = Deno.DynamicLibrary<typeof NVME_EMU_SYMBOLS>;
/** The library's symbol table. */
export type NvmeEmuSymbols = NvmeEmuLib["symbols"];

/**
 * Path of the library build `variant` (`ffi/native/build/libnvme_emu[-asan].so`);
 * `NVME_EMU_LIBRARY` / `NVME_EMU_LIBRARY_ASAN` in the environment name another build.
 */
export function nvmeEmuLibraryPath(variant: NvmeEmuVariant = "plain"): string {
  try {
    const env = Deno.env.get(variant === "asan" ? "NVME_EMU_LIBRARY_ASAN" : "NVME_EMU_LIBRARY");
    if (env) return env;
  } catch {
    // no --allow-env: the default build
  }
  const name = variant === "asan" ? "libnvme_emu-asan.so" : "libnvme_emu.so";
  return new URL(`./native/build/${name}`, import.meta.url).pathname;
}

const libs = new Map<NvmeEmuVariant, NvmeEmuLib>();
const whyNot = new Map<NvmeEmuVariant, string | null>();

function probe(variant: NvmeEmuVariant): string | null {
  const path = nvmeEmuLibraryPath(variant);
  if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") {
    return "FFI permission not granted (run with --allow-ffi)";
  }
  try {
    Deno.statSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      return `${path} not built (deno task build; needs gcc and liburing-dev)`;
    }
    return `cannot stat ${path}: ${(e as Error).message}`;
  }
  if (variant === "asan") {
    // An ASan library dlopen()ed into a process without the runtime preloaded
    // aborts the whole process; refuse instead.
    let preload = "";
    try {
      preload = Deno.env.get("LD_PRELOAD") ?? "";
    } catch {
      return "cannot read LD_PRELOAD (run with --allow-env)";
    }
    if (!/libasan\.so/.test(preload)) {
      return "the ASan build needs the ASan runtime in LD_PRELOAD (gcc -print-file-name=libasan.so)";
    }
  }
  try {
    libs.set(variant, Deno.dlopen(path, NVME_EMU_SYMBOLS));
  } catch (e) {
    return `cannot open ${path}: ${(e as Error).message}`;
  }
  return null;
}

/**
 * Why the library `variant` cannot be used here (not built, FFI denied,
 * dlopen failing, ASan runtime not preloaded), or null when it can. Probes
 * once per process and variant.
 */
export function nvmeEmuUnavailable(variant: NvmeEmuVariant = "plain"): string | null {
  if (!whyNot.has(variant)) whyNot.set(variant, probe(variant));
  return whyNot.get(variant)!;
}

/** The opened library's symbols; throws with the reason when it is unavailable. */
export function nvmeEmuSymbols(variant: NvmeEmuVariant = "plain"): NvmeEmuSymbols {
  const why = nvmeEmuUnavailable(variant);
  if (why !== null) throw new Error(`libnvme_emu unavailable: ${why}`);
  return libs.get(variant)!.symbols;
}

function u64(x: bigint | number, what: string): bigint {
  const v = BigInt(x);
  if (v < 0n || v >= 1n << 64n) throw new RangeError(`${what}: ${x} is not a u64`);
  return v;
}

function bufPtr(b: Uint8Array): Uint8Array<ArrayBuffer> {
  return b as Uint8Array<ArrayBuffer>;
}

/**
 * Encode `struct nvme_emu_config` (the header's offsets). Throws RangeError
 * on values the binding can tell are wrong before the library sees them.
 */
export function encodeNvmeEmuConfig(cfg: NvmeEmuConfig): Uint8Array<ArrayBuffer> {
  const L = NVME_EMU_LAYOUT;
  const b = new Uint8Array(L.config.SIZE);
  const v = new DataView(b.buffer);
  const nss = cfg.namespaces;
  if (nss.length < 1 || nss.length > NVME_EMU_MAX_NS) {
    throw new RangeError(`nvme_emu config: ${nss.length} namespaces (1..${NVME_EMU_MAX_NS})`);
  }
  v.setUint32(L.config.abi, NVME_EMU_ABI, true);
  v.setUint32(L.config.nrNamespaces, nss.length, true);
  v.setUint32(L.config.maxQueues, cfg.maxQueues ?? 8, true);
  v.setUint32(L.config.mqes, cfg.mqes ?? 1024, true);
  v.setUint32(L.config.mdts, cfg.mdts ?? 5, true);
  v.setUint32(L.config.sgls, (cfg.sgls ?? true) ? 1 : 0, true);
  v.setUint32(L.config.vwc, cfg.volatileWriteCache ? 1 : 0, true);
  v.setUint32(L.config.mode, (cfg.mode ?? "inline") === "thread" ? 1 : 0, true);
  v.setBigUint64(L.config.idlePollNs, u64(cfg.idlePollNs ?? 50_000, "idlePollNs"), true);
  v.setBigUint64(L.config.seed, u64(cfg.seed ?? 0, "seed"), true);
  v.setUint32(L.config.iotlbEntries, cfg.iotlbEntries ?? 128, true);
  const cacheBytes = cfg.writeCacheBytes;
  if (
    cacheBytes !== undefined &&
    (!Number.isInteger(cacheBytes) || cacheBytes % 1024 !== 0 || cacheBytes < 4096 ||
      cacheBytes > 256 << 20)
  ) {
    throw new RangeError(
      `nvme_emu config: writeCacheBytes ${cacheBytes} (KiB multiple, 4 KiB..256 MiB)`,
    );
  }
  v.setUint32(L.config.vwcCacheKib, cacheBytes === undefined ? 0 : cacheBytes / 1024, true);
  const enc = new TextEncoder();
  nss.forEach((ns, i) => {
    const o = L.config.ns + i * L.ns.SIZE;
    v.setUint32(o + L.ns.lbaSize, ns.lbaSize, true);
    v.setUint32(o + L.ns.flags, ns.noDirect ? NVME_EMU_NS_NO_DIRECT : 0, true);
    v.setBigUint64(o + L.ns.sizeBytes, u64(ns.sizeBytes, `namespace ${i + 1} sizeBytes`), true);
    const path = enc.encode(ns.mediaPath ?? "");
    if (path.includes(0) || path.length >= NVME_EMU_MEDIA_PATH_BYTES) {
      throw new RangeError(
        `nvme_emu config: namespace ${i + 1} mediaPath of ${path.length} bytes ` +
          `(NUL-free, < ${NVME_EMU_MEDIA_PATH_BYTES})`,
      );
    }
    b.set(path, o + L.ns.mediaPath);
  });
  return b;
}

/**
 * Encode `struct nvme_emu_fault` from a rule, after the same checks the
 * TypeScript controller applies (RangeError naming the field).
 */
export function encodeNvmeEmuFault(rule: NvmeFaultRule): Uint8Array<ArrayBuffer> {
  const r = validateFaultRule(rule);
  const F = NVME_EMU_LAYOUT.fault;
  const b = new Uint8Array(F.SIZE);
  const v = new DataView(b.buffer);
  let flags = 0;
  if (r.nsidSet) flags |= INJECT_F.NSID;
  if (r.lbaSet) flags |= INJECT_F.LBA;
  if (r.opcodeSet) flags |= INJECT_F.OPCODE;
  if (r.admin) flags |= INJECT_F.ADMIN;
  if (r.dnr) flags |= INJECT_F.DNR;
  v.setUint32(F.kind, NVME_FAULT_KINDS.indexOf(r.kind), true);
  v.setUint32(F.flags, flags, true);
  v.setUint32(F.nsid, r.nsid, true);
  v.setUint32(F.opcode, r.opcode, true);
  v.setBigUint64(F.slbaFirst, r.slbaFirst, true);
  v.setBigUint64(F.slbaLast, r.slbaLast, true);
  v.setFloat64(F.probability, r.probability, true);
  v.setUint32(F.count, r.count, true);
  return b;
}

/** nvme_emu_layout(): the C compiler's sizeof/offsetof values, in the header's order. */
export function nvmeEmuLayout(variant: NvmeEmuVariant = "plain"): bigint[] {
  const sym = nvmeEmuSymbols(variant);
  const out = new BigUint64Array(LAYOUT_VALUES);
  const n = sym.nvme_emu_layout(new Uint8Array(out.buffer), LAYOUT_VALUES);
  return [...out.subarray(0, Math.min(n, LAYOUT_VALUES))];
}

/** Options for {@link NvmeEmu.create}. */
export interface NvmeEmuOpenOptions {
  /** Which build to load (default "plain"; "asan" needs the ASan runtime preloaded). */
  variant?: NvmeEmuVariant;
}

/** One emulated NVMe controller in native memory. */
export class NvmeEmu implements NvmeControllerPort, Disposable {
  /** MSI-X vectors (admin plus one per I/O queue pair). */
  readonly msixVectors: number;
  /** Device mode. */
  readonly mode: "inline" | "thread";
  /** Which build of the library this controller runs in. */
  readonly variant: NvmeEmuVariant;
  readonly #sym: NvmeEmuSymbols;
  #ptr: Deno.PointerObject | null;
  readonly #irq = new Map<number, () => void>();
  readonly #vectors: Uint32Array;
  readonly #u64 = new BigUint64Array(1);
  #trace: Deno.UnsafePointerView | undefined;
  readonly #traceBuf = new Uint8Array(256 * 16);

  private constructor(
    sym: NvmeEmuSymbols,
    ptr: Deno.PointerObject,
    cfg: NvmeEmuConfig,
    variant: NvmeEmuVariant,
  ) {
    this.#sym = sym;
    this.#ptr = ptr;
    this.msixVectors = (cfg.maxQueues ?? 8) + 1;
    this.mode = cfg.mode ?? "inline";
    this.variant = variant;
    this.#vectors = new Uint32Array(this.msixVectors);
  }

  /** nvme_emu_create(): a disabled controller (CC.EN = 0); throws ErrnoError on -errno. */
  static create(cfg: NvmeEmuConfig, opts: NvmeEmuOpenOptions = {}): NvmeEmu {
    const variant = opts.variant ?? "plain";
    const sym = nvmeEmuSymbols(variant);
    const bytes = encodeNvmeEmuConfig(cfg);
    const err = new Int32Array(1);
    const p = sym.nvme_emu_create(bytes, new Uint8Array(err.buffer));
    if (p === null) throw new ErrnoError(err[0] || -Errno.ENOMEM, "nvme_emu_create");
    return new NvmeEmu(sym, p, cfg, variant);
  }

  /** nvme_emu_ledger(): allocations the library `variant` holds across all controllers. */
  static ledger(variant: NvmeEmuVariant = "plain"): number {
    return Number(nvmeEmuSymbols(variant).nvme_emu_ledger());
  }

  get #p(): Deno.PointerObject {
    if (this.#ptr === null) throw new Error("NvmeEmu: controller destroyed");
    return this.#ptr;
  }

  #check(r: number, what: string): number {
    if (r < 0) throw new ErrnoError(r, what);
    return r;
  }

  // ------------------------------------------------------------ registers

  /** 32-bit MMIO read of BAR0 (nvme_emu_mmio_read32). */
  readReg32(offset: number): number {
    return this.#sym.nvme_emu_mmio_read32(this.#p, offset) >>> 0;
  }

  /** 64-bit MMIO read: two 32-bit reads, low half first. */
  readReg64(offset: number): bigint {
    const lo = BigInt(this.readReg32(offset));
    return lo | (BigInt(this.readReg32(offset + 4)) << 32n);
  }

  /** 32-bit MMIO write of BAR0, doorbells included (nvme_emu_mmio_write32). */
  writeReg32(offset: number, value: number): void {
    this.#sym.nvme_emu_mmio_write32(this.#p, offset, value >>> 0);
  }

  /** 64-bit MMIO write: two 32-bit writes, low half first (lo_hi_writeq). */
  writeReg64(offset: number, value: bigint): void {
    const v = BigInt.asUintN(64, value);
    this.writeReg32(offset, Number(v & 0xffff_ffffn));
    this.writeReg32(offset + 4, Number(v >> 32n));
  }

  /** Install the handler for MSI-X vector `vector`, run by {@link deliverInterrupts}. */
  setIrqHandler(vector: number, handler: () => void): void {
    if (!Number.isInteger(vector) || vector < 0 || vector >= this.msixVectors) {
      throw new RangeError(`setIrqHandler: vector ${vector} (0..${this.msixVectors - 1})`);
    }
    this.#irq.set(vector, handler);
  }

  // -------------------------------------------------------------- stepping

  /**
   * Inline mode: nvme_emu_process(budget), then deliver the vectors raised
   * (handlers ascending, as the TypeScript controller's poll does). Returns
   * the completions posted.
   */
  process(budget: number): number {
    if (!Number.isInteger(budget) || budget <= 0 || budget > 0xffff_ffff) {
      throw new RangeError(`process: budget ${budget}`);
    }
    const n = this.#check(this.#sym.nvme_emu_process(this.#p, budget), "nvme_emu_process");
    this.deliverInterrupts();
    return n;
  }

  /** nvme_emu_irq_take(), then each taken vector's handler, ascending; returns the vectors. */
  deliverInterrupts(): number[] {
    const buf = this.#vectors;
    const n = this.#check(
      this.#sym.nvme_emu_irq_take(this.#p, new Uint8Array(buf.buffer), buf.length),
      "nvme_emu_irq_take",
    );
    const taken = [...buf.subarray(0, Math.min(n, buf.length))];
    for (const vec of taken) this.#irq.get(vec)?.();
    return taken;
  }

  /** Thread mode: block up to `timeoutNs` for a pending vector; the number pending, 0 on timeout. */
  waitInterrupt(timeoutNs: bigint | number): number {
    const r = this.#sym.nvme_emu_irq_wait(this.#p, u64(timeoutNs, "waitInterrupt"));
    if (r === -Errno.ETIMEDOUT) return 0;
    return this.#check(r, "nvme_emu_irq_wait");
  }

  // ---------------------------------------------------------------- memory

  /** nvme_emu_frame_map(): frames pfn.. are the 4 KiB pages at `ptr` (page aligned). */
  frameMap(pfn: number | bigint, npages: number | bigint, ptr: Deno.PointerObject): void {
    this.#check(
      this.#sym.nvme_emu_frame_map(this.#p, u64(pfn, "pfn"), u64(npages, "npages"), ptr),
      "nvme_emu_frame_map",
    );
  }

  /** nvme_emu_frame_unmap(): remove frames pfn..pfn+npages-1. */
  frameUnmap(pfn: number | bigint, npages: number | bigint): void {
    this.#check(
      this.#sym.nvme_emu_frame_unmap(this.#p, u64(pfn, "pfn"), u64(npages, "npages")),
      "nvme_emu_frame_unmap",
    );
  }

  /** nvme_emu_iommu_attach(): bus = physical, identity domain, or the 4-level table at `rootPa`. */
  iommuAttach(mode: NvmeEmuIommuMode, rootPa: bigint | number = 0n): void {
    const m = IOMMU_MODE[mode];
    if (m === undefined) throw new RangeError(`iommuAttach: mode ${String(mode)}`);
    this.#check(
      this.#sym.nvme_emu_iommu_attach(this.#p, m, u64(rootPa, "rootPa")),
      "nvme_emu_iommu_attach",
    );
  }

  /** nvme_emu_inv_post(): invalidate `npages` IOTLB pages from `iovaPfn` (0: all); its sequence number. */
  invPost(iovaPfn: number | bigint, npages: number | bigint): bigint {
    return BigInt(
      this.#sym.nvme_emu_inv_post(this.#p, u64(iovaPfn, "iovaPfn"), u64(npages, "npages")),
    );
  }

  /** nvme_emu_inv_done(): highest invalidation sequence number acknowledged. */
  invDone(): bigint {
    return BigInt(this.#sym.nvme_emu_inv_done(this.#p));
  }

  /** nvme_emu_inv_wait(): true once `seq` is acknowledged, false after `timeoutNs`. */
  invWait(seq: bigint | number, timeoutNs: bigint | number): boolean {
    const r = this.#sym.nvme_emu_inv_wait(this.#p, u64(seq, "seq"), u64(timeoutNs, "timeoutNs"));
    if (r === -Errno.ETIMEDOUT) return false;
    this.#check(r, "nvme_emu_inv_wait");
    return true;
  }

  /** nvme_emu_irq_ring(): also post each vector as a MSG_RING CQE in ring `fd` (-1 stops). */
  irqRing(fd: number, userDataBase: bigint | number): void {
    this.#check(
      this.#sym.nvme_emu_irq_ring(this.#p, fd, u64(userDataBase, "userDataBase")),
      "nvme_emu_irq_ring",
    );
  }

  // ------------------------------------------------------------ debug views

  // ---------------------------------------------------------------- faults

  /** nvme_emu_fault_add(): add a fault rule (RangeError when invalid or 64 are live). */
  addFault(rule: NvmeFaultRule): void {
    const r = this.#sym.nvme_emu_fault_add(this.#p, encodeNvmeEmuFault(rule));
    if (r === -Errno.ENOSPC) throw new RangeError("fault rule: 64 rules already");
    this.#check(r, "nvme_emu_fault_add");
  }

  /** nvme_emu_fault_clear(): remove every rule (the counts stay). */
  clearFaults(): void {
    this.#sym.nvme_emu_fault_clear(this.#p);
  }

  /** Faults injected so far, by kind (from the stats). */
  get faultsInjected(): Record<NvmeFaultKind, number> {
    const s = this.stats();
    const out = emptyFaultCounts();
    for (const k of NVME_FAULT_KINDS) out[k] = s[INJECT_STAT[k]];
    return out;
  }

  /**
   * nvme_emu_power_cut(): lose a seeded subset of the unflushed writes, the
   * rest reaches the media, the controller is dead (the TypeScript
   * controller's `powerCut`, choice for choice).
   */
  powerCut(seed: bigint | number): PowerCutReport {
    const before = this.stats();
    this.#check(this.#sym.nvme_emu_power_cut(this.#p, u64(seed, "seed")), "nvme_emu_power_cut");
    const after = this.stats();
    return {
      writesLost: after.writesLost - before.writesLost,
      writesKept: after.writesKept - before.writesKept,
      blocksLost: after.blocksLost - before.blocksLost,
    };
  }

  /** nvme_emu_stats(), decoded. */
  stats(): NvmeEmuStats {
    const b = new BigUint64Array(NVME_EMU_STAT_FIELDS.length);
    const n = this.#check(
      this.#sym.nvme_emu_stats(this.#p, new Uint8Array(b.buffer), b.byteLength),
      "nvme_emu_stats",
    );
    const out = {} as NvmeEmuStats;
    NVME_EMU_STAT_FIELDS.forEach((f, i) => out[f] = i * 8 < n ? Number(b[i]) : 0);
    return out;
  }

  /**
   * nvme_emu_trace_enable(): trace every device access that reaches host
   * memory into a ring of `capacity` entries (a power of two), before the
   * controller is enabled. Drain it with {@link NvmeEmu.traceTake}.
   */
  traceEnable(capacity: number): void {
    const err = new Int32Array(1);
    const p = this.#sym.nvme_emu_trace_enable(this.#p, capacity, new Uint8Array(err.buffer));
    if (p === null) this.#check(err[0] || -Errno.EINVAL, "nvme_emu_trace_enable");
    this.#trace = new Deno.UnsafePointerView(p!);
  }

  /** Whether traced accesses are waiting (the ring's head and tail, read in place). */
  tracePending(): boolean {
    const t = this.#trace;
    return t !== undefined && t.getBigUint64(0) !== t.getBigUint64(8);
  }

  /** Accesses the full ring could not record (the header's dropped count). */
  traceDropped(): number {
    return this.#trace ? Number(this.#trace.getBigUint64(16)) : 0;
  }

  /** nvme_emu_trace_take(): every traced access not yet taken, oldest first. */
  traceTake(): NvmeEmuAccess[] {
    const out: NvmeEmuAccess[] = [];
    if (!this.#trace) return out;
    const buf = this.#traceBuf;
    const dv = new DataView(buf.buffer);
    for (;;) {
      const n = this.#check(
        this.#sym.nvme_emu_trace_take(this.#p, buf, buf.byteLength / 16),
        "nvme_emu_trace_take",
      );
      for (let i = 0; i < n; i++) {
        out.push({
          addr: dv.getBigUint64(i * 16, true),
          len: dv.getUint32(i * 16 + 8, true),
          write: dv.getUint32(i * 16 + 12, true) !== 0,
        });
      }
      if (n < buf.byteLength / 16) return out;
    }
  }

  /** nvme_emu_last_fault(): the most recent DMA fault's reason and address. */
  lastFault(): NvmeEmuFault {
    const r = this.#check(
      this.#sym.nvme_emu_last_fault(this.#p, new Uint8Array(this.#u64.buffer)),
      "nvme_emu_last_fault",
    );
    const reason = FAULT_REASONS[r];
    if (reason === undefined) throw new Error(`nvme_emu_last_fault: unknown reason ${r}`);
    return { reason, addr: this.#u64[0] };
  }

  /** nvme_emu_outstanding(): commands fetched and not yet completed. */
  outstanding(): number {
    return this.#check(this.#sym.nvme_emu_outstanding(this.#p), "nvme_emu_outstanding");
  }

  /** nvme_emu_media_read(): `len` bytes of namespace `nsid` at byte `pos` (not through DMA). */
  mediaRead(nsid: number, pos: number | bigint, len: number): Uint8Array {
    const out = new Uint8Array(len);
    this.#check(
      this.#sym.nvme_emu_media_read(this.#p, nsid, u64(pos, "pos"), out, BigInt(len)),
      "nvme_emu_media_read",
    );
    return out;
  }

  /** nvme_emu_media_write(): store `data` in namespace `nsid` at byte `pos`. */
  mediaWrite(nsid: number, pos: number | bigint, data: Uint8Array): void {
    this.#check(
      this.#sym.nvme_emu_media_write(
        this.#p,
        nsid,
        u64(pos, "pos"),
        bufPtr(data),
        BigInt(data.length),
      ),
      "nvme_emu_media_write",
    );
  }

  /** nvme_emu_destroy(): stop the device, free everything (idempotent). */
  [Symbol.dispose](): void {
    if (this.#ptr === null) return;
    this.#sym.nvme_emu_destroy(this.#ptr);
    this.#ptr = null;
  }
}

/** BAR0 register offsets and the seam this controller implements, re-exported. */
export { NVME_REG, type NvmeControllerPort };
