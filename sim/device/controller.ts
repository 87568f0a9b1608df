/**
 * A simulated NVMe controller (PCIe function) that checks what hardware
 * checks. It implements {@link NvmeControllerPort}: BAR0 registers and
 * doorbells, MSI-X vectors, and a `poll()` that does the device's work.
 * Queues and data live in host memory, reached only through the
 * {@link DeviceDmaPort} it is given.
 *
 * Modelled on QEMU hw/nvme/ctrl.c (nvme_write_bar, nvme_start_ctrl,
 * nvme_process_db, nvme_process_sq, nvme_post_cqes, nvme_admin_cmd,
 * nvme_io_cmd, nvme_rw). Section numbers cite NVMe Base Spec 2.0.
 *
 * Execution model (deterministic for a seed):
 * - Register and doorbell writes only record state.
 * - `poll(budget)` fetches up to `budget` commands, one SQ at a time in
 *   round-robin order, executes each at once (data moves at fetch time), and
 *   schedules its completion at `simNowNs + latency`. It then posts every
 *   completion that is due; if none is due it advances `simNowNs` to the
 *   earliest scheduled completion (a discrete-event clock) and posts those.
 *   A completion whose CQ is full is held until the host frees room through
 *   the CQ head doorbell. Interrupts fire at the end of `poll`, once per
 *   vector that received entries on a CQ with interrupts enabled.
 * - Faults: seeded rules (`addFault`, see `faults.ts`) hit commands at fetch
 *   or at the media; a volatile write cache (`volatileWriteCache`, see
 *   `write_cache.ts`) holds written blocks until Flush, FUA, eviction or
 *   shutdown, and `powerCut(seed)` loses some of them and kills the controller.
 * - Latency: `baseNs + nsPerKiB * KiB + uniform[0, jitterNs]` per I/O
 *   command (seeded); admin commands take no simulated time. With no latency
 *   model every completion is due immediately.
 *
 * @module
 */

import type { DeviceDmaPort } from "../dma/types.ts";
import { Rng } from "../random.ts";
import { COUNTER, type Stats } from "../stats.ts";
import { DeviceDma } from "./dma.ts";
import {
  type DataSegment,
  dmaFromHost,
  dmaToHost,
  dmaToHostFrom,
  nvmeMapDptr,
  nvmeMapPrp,
} from "./dptr.ts";
import { buildActiveNsList, buildIdCtrl, buildIdNs } from "./identify.ts";
import { MEDIA_MAX_BYTES, SparseMedia } from "./media.ts";
import {
  NVME_FAULT_BAD_CID_XOR,
  NVME_FAULT_SEED_SALT,
  NvmeFaultInjector,
  type NvmeFaultKind,
  type NvmeFaultRule,
} from "./faults.ts";
import { type PowerCutReport, WriteCache } from "./write_cache.ts";
import {
  decodeNvmeCommandView,
  encodeCqe,
  NVME_ADMIN,
  NVME_CMD,
  NVME_CMD_FUSE_MASK,
  NVME_CQ_IRQ_ENABLED,
  NVME_CQE_SIZE,
  NVME_FEAT,
  NVME_ID_CNS,
  NVME_IDENTIFY_DATA_SIZE,
  NVME_NSID_ALL,
  NVME_PSDT_PRP,
  NVME_QUEUE_PHYS_CONTIG,
  NVME_RW_FUA_CDW12,
  NVME_SC,
  NVME_SQE_SIZE,
  NVME_STATUS_DNR,
  nvmeCmdPsdt,
  nvmeCmdSlba,
  type NvmeCommand,
} from "./nvme_spec.ts";
import { NVME_REG, type NvmeControllerPort } from "./port.ts";
import { CC, CSTS, decodeCc, encodeCap, NVME_VS_1_4 } from "./regs.ts";

/** One namespace. */
export interface NamespaceConfig {
  /** Logical block size. */
  lbaSize: 512 | 4096;
  /** Capacity in bytes (a multiple of lbaSize). */
  sizeBytes: bigint;
}

/** Per-command service time model, in simulated nanoseconds. */
export interface LatencyModel {
  /** Fixed cost of every I/O command. */
  baseNs: number;
  /** Cost per KiB transferred. */
  nsPerKiB?: number;
  /** Uniform extra delay in [0, jitterNs], from the controller's seed. */
  jitterNs?: number;
}

/** Controller configuration. */
export interface ControllerConfig {
  /** Namespaces, NSID 1.. in order (default: one 1 GiB namespace of 4096-byte LBAs). */
  namespaces?: NamespaceConfig[];
  /** I/O queue pairs (default 8, at most 1024). */
  maxQueues?: number;
  /** Maximum queue entries, CAP.MQES + 1 (default 1024, 2..65536). */
  mqes?: number;
  /** MDTS: log2 of the max transfer in CAP.MPSMIN (4 KiB) pages (default 5 = 128 KiB, 1..12). */
  mdts?: number;
  /** Advertise and accept SGLs (default true). */
  sgls?: boolean;
  /** Seed for every random choice the controller makes. */
  seed: number;
  /** Optional service time model (default: none, zero time). */
  latency?: LatencyModel;
  /**
   * A volatile write cache (default false): Identify Controller VWC is set,
   * a Write without FUA completes into the cache, and Flush, FUA, eviction
   * and shutdown write it to the media; `powerCut` loses part of it (see
   * `write_cache.ts`). Without it every write reaches the media at once.
   */
  volatileWriteCache?: boolean;
  /** Capacity of the volatile write cache in bytes (default 4 MiB, 4096..256 MiB). */
  writeCacheBytes?: number;
  /**
   * The namespaces' media to start from, one per namespace, each of its
   * namespace's size (default: new, zero-filled). A power-cut controller's
   * {@link NvmeController.detachMedia} carries a namespace into a new controller.
   */
  media?: readonly SparseMedia[];
}

/** An asynchronous event (5.2 Asynchronous Event Request, completion dword 0). */
export interface AsyncEvent {
  /** Asynchronous Event Type (0: error status). */
  type: number;
  /** Asynchronous Event Information. */
  info: number;
  /** Log page associated with the event (01h: Error Information). */
  logPage: number;
}

/** Asynchronous Event Information values for the error type (5.2, figure 146). */
export const NVME_AER_ERROR = {
  INVALID_DB_REGISTER: 0x00,
  INVALID_DB_VALUE: 0x01,
} as const;

/** Most asynchronous events kept while no request is outstanding. */
export const MAX_QUEUED_EVENTS = 16;
/** AERL: outstanding Asynchronous Event Requests allowed, 0-based. */
export const NVME_AERL = 3;

const PAGE_4K = 4096;
const MAX_IO_QUEUES = 1024;
const DEFAULT_BUDGET = 1024;

interface SubQueue {
  readonly id: number;
  readonly base: bigint;
  readonly size: number;
  readonly cqid: number;
  /** Next entry the controller fetches. */
  head: number;
  /** Last tail the host wrote. */
  tail: number;
  /** Fetched, not yet posted (bounded by size). */
  outstanding: number;
  /** Of those, commands a `drop` fault swallowed: they hold their slot until a reset. */
  held: number;
}

interface Completion {
  dueNs: number;
  seq: number;
  sqid: number;
  cqid: number;
  commandId: number;
  status: number;
  result: number;
  /** Counts toward inFlight (AERs do not). */
  counted: boolean;
}

interface CompQueue {
  readonly id: number;
  readonly base: bigint;
  readonly size: number;
  readonly vector: number;
  readonly ien: boolean;
  /** Next slot the controller writes. */
  tail: number;
  /** Last head the host wrote. */
  head: number;
  phase: 0 | 1;
  readonly sqids: Set<number>;
  /** Due completions waiting for room. */
  readonly ready: Completion[];
}

interface Namespace {
  readonly lbaSize: number;
  readonly nlb: bigint;
  readonly media: SparseMedia;
}

/** Outcome of executing one command. */
interface Exec {
  status: number;
  result?: number;
  serviceNs?: number;
  /** The command completes later (AER). */
  held?: boolean;
}

function dnr(sc: number): number {
  return sc | NVME_STATUS_DNR;
}

/** The simulated NVMe controller. */
export class NvmeController implements NvmeControllerPort {
  readonly #dma: DeviceDma;
  readonly #stats: Stats | undefined;
  readonly #rng: Rng;
  readonly #ns: Namespace[];
  readonly #maxQueues: number;
  readonly #mqes: number;
  readonly #mdts: number;
  readonly #sgls: boolean;
  readonly #vwc: boolean;
  readonly #latency: LatencyModel | undefined;
  readonly #cap: bigint;
  readonly #nVectors: number;
  readonly #irq = new Map<number, () => void>();
  readonly #faults: NvmeFaultInjector;
  readonly #cache: WriteCache | undefined;
  /** The command being fetched (one SQE; decoded before the next fetch). */
  readonly #sqe = new Uint8Array(NVME_SQE_SIZE);
  readonly #sqeView = new DataView(this.#sqe.buffer);
  /** MSI-X vectors to raise at the end of one poll (the poll guard keeps it to one user). */
  readonly #vectors = new Set<number>();
  /** The completion being posted. */
  readonly #cqe = new Uint8Array(NVME_CQE_SIZE);
  /**
   * The controller's data buffer for one transfer between host memory and
   * the media (grown to the largest transfer seen, at most MDTS).
   */
  #xfer = new Uint8Array(0);

  #cc = 0;
  #csts = 0;
  #aqa = 0;
  #asq = 0n;
  #acq = 0n;
  #intms = 0;
  #pageSize = PAGE_4K;

  #sqs: (SubQueue | undefined)[] = [];
  #cqs: (CompQueue | undefined)[] = [];
  #scheduled: Completion[] = []; // sorted by (dueNs, seq)
  #seq = 0;
  #rr = 0;
  #fetchedUncompleted = 0;
  #queuesCreated = false;
  #aers: { commandId: number }[] = [];
  #events: AsyncEvent[] = [];
  #nowNs = 0;
  #polling = false;
  /** Power was cut: nothing is processed again, register writes are ignored. */
  #dead = false;

  /** Writes to doorbells that were invalid (ignored, reported as asynchronous events). */
  invalidDoorbellWrites = 0;
  /** Asynchronous events dropped because {@link MAX_QUEUED_EVENTS} were already queued. */
  droppedEvents = 0;
  /** Commands a `drop` fault swallowed (fetched, never completed). */
  droppedCommands = 0;

  /** Build a controller that reaches host memory through `dma`. */
  constructor(dma: DeviceDmaPort, cfg: ControllerConfig, stats?: Stats) {
    const nss = cfg.namespaces ?? [{ lbaSize: 4096, sizeBytes: 1n << 30n }];
    if (nss.length < 1 || nss.length > 1024) {
      throw new RangeError(`NvmeController: ${nss.length} namespaces (1..1024)`);
    }
    this.#ns = nss.map((n, i) => {
      if (n.lbaSize !== 512 && n.lbaSize !== 4096) {
        throw new RangeError(`NvmeController: namespace ${i + 1} lbaSize ${n.lbaSize}`);
      }
      const lba = BigInt(n.lbaSize);
      if (n.sizeBytes <= 0n || n.sizeBytes % lba !== 0n || n.sizeBytes > BigInt(MEDIA_MAX_BYTES)) {
        throw new RangeError(`NvmeController: namespace ${i + 1} size ${n.sizeBytes}`);
      }
      const given = cfg.media?.[i];
      if (given && given.sizeBytes !== Number(n.sizeBytes)) {
        throw new RangeError(
          `NvmeController: media ${i + 1} holds ${given.sizeBytes} bytes, namespace ${n.sizeBytes}`,
        );
      }
      return {
        lbaSize: n.lbaSize,
        nlb: n.sizeBytes / lba,
        media: given ?? new SparseMedia(Number(n.sizeBytes)),
      };
    });
    if (cfg.media && cfg.media.length !== nss.length) {
      throw new RangeError(
        `NvmeController: ${cfg.media.length} media for ${nss.length} namespaces`,
      );
    }
    this.#maxQueues = cfg.maxQueues ?? 8;
    this.#mqes = cfg.mqes ?? 1024;
    this.#mdts = cfg.mdts ?? 5;
    this.#sgls = cfg.sgls ?? true;
    this.#vwc = cfg.volatileWriteCache ?? false;
    if (!Number.isInteger(this.#maxQueues) || this.#maxQueues < 1) {
      throw new RangeError(`NvmeController: maxQueues ${this.#maxQueues}`);
    }
    if (this.#maxQueues > MAX_IO_QUEUES) {
      throw new RangeError(`NvmeController: maxQueues ${this.#maxQueues} > ${MAX_IO_QUEUES}`);
    }
    if (!Number.isInteger(this.#mqes) || this.#mqes < 2 || this.#mqes > 65536) {
      throw new RangeError(`NvmeController: mqes ${this.#mqes} (2..65536)`);
    }
    if (!Number.isInteger(this.#mdts) || this.#mdts < 1 || this.#mdts > 12) {
      throw new RangeError(`NvmeController: mdts ${this.#mdts} (1..12)`);
    }
    const lat = cfg.latency;
    if (lat) {
      for (const [k, x] of Object.entries(lat)) {
        if (typeof x !== "number" || !Number.isFinite(x) || x < 0) {
          throw new RangeError(`NvmeController: latency.${k} ${x}`);
        }
      }
    }
    this.#latency = lat;
    this.#dma = new DeviceDma(dma, stats);
    this.#stats = stats;
    this.#rng = new Rng(cfg.seed);
    this.#faults = new NvmeFaultInjector(new Rng((cfg.seed ^ NVME_FAULT_SEED_SALT) >>> 0));
    this.#cache = this.#vwc ? new WriteCache(this.#ns, cfg.writeCacheBytes) : undefined;
    this.#nVectors = this.#maxQueues + 1;
    this.#cap = encodeCap({
      mqes: this.#mqes - 1,
      cqr: true,
      to: 15,
      dstrd: 0,
      css: 1, // NVM command set
      mpsmin: 0,
      mpsmax: 4,
    });
  }

  // ---------------------------------------------------------------- state

  /** Simulated device time in nanoseconds. */
  get simNowNs(): number {
    return this.#nowNs;
  }

  /**
   * Commands doorbelled or fetched that the controller will still complete
   * (outstanding AERs and commands a `drop` fault swallowed excluded; 0 while
   * the controller is not ready, fatal or dead: nothing will complete).
   */
  get inFlight(): number {
    if (!this.#ready()) return 0;
    let n = this.#fetchedUncompleted;
    for (const sq of this.#sqs) {
      // Unfetched entries count while the SQ can still fetch: not when swallowed commands
      // hold every slot, since then nothing will ever be fetched again.
      if (sq && sq.held < sq.size) n += (sq.tail - sq.head + sq.size) % sq.size;
    }
    return n;
  }

  /** Asynchronous events waiting for an Asynchronous Event Request. */
  get pendingEvents(): readonly AsyncEvent[] {
    return this.#events.slice();
  }

  /** Number of namespaces. */
  get namespaceCount(): number {
    return this.#ns.length;
  }

  /** MSI-X vectors the function has (admin plus one per I/O queue pair). */
  get msixVectors(): number {
    return this.#nVectors;
  }

  /**
   * Read `len` bytes of namespace `nsid` media at byte `pos` (a test and
   * debug view of the persistent media: blocks in the volatile write cache
   * are not included).
   */
  mediaRead(nsid: number, pos: number, len: number): Uint8Array {
    const ns = this.#ns[nsid - 1];
    if (!ns) throw new RangeError(`mediaRead: no namespace ${nsid}`);
    return ns.media.read(pos, len);
  }

  // --------------------------------------------------------------- faults

  /** Add a fault rule (see `faults.ts`); RangeError when it is invalid or 64 are live. */
  addFault(rule: NvmeFaultRule): void {
    this.#faults.add(rule);
  }

  /** Remove every fault rule (the counts stay). */
  clearFaults(): void {
    this.#faults.clear();
  }

  /** Faults injected so far, by kind. */
  get faultsInjected(): Record<NvmeFaultKind, number> {
    return { ...this.#faults.injected };
  }

  /** The volatile write cache's state and counters (zeros without one). */
  get writeCache(): {
    blocks: number;
    bytes: number;
    cachedWrites: number;
    blocksDestaged: number;
  } {
    const c = this.#cache;
    return {
      blocks: c?.blocks ?? 0,
      bytes: c?.bytes ?? 0,
      cachedWrites: c?.cachedWrites ?? 0,
      blocksDestaged: c?.blocksDestaged ?? 0,
    };
  }

  /** Whether power was cut ({@link powerCut}). */
  get dead(): boolean {
    return this.#dead;
  }

  /**
   * Cut the power: the volatile write cache loses a seeded subset of its
   * unflushed writes (at least one when any exist; `WriteCache.powerCut`),
   * the rest reaches the media, and the controller is dead: CSTS reads 0,
   * register writes are ignored, nothing is fetched or completed again. With
   * no cache nothing is lost. A second cut reports nothing.
   */
  powerCut(seed: number): PowerCutReport {
    if (this.#dead) return { writesLost: 0, writesKept: 0, blocksLost: 0 };
    const r = this.#cache?.powerCut(seed) ?? { writesLost: 0, writesKept: 0, blocksLost: 0 };
    this.#dead = true;
    this.#reset();
    this.#csts = 0;
    return r;
  }

  /** Each namespace's media after a power cut, for a new controller's `media` (throws before). */
  detachMedia(): SparseMedia[] {
    if (!this.#dead) {
      throw new Error("detachMedia: the controller still has power (powerCut first)");
    }
    return this.#ns.map((n) => n.media);
  }

  // ------------------------------------------------------------ registers

  /** nvme_mmio_read() */
  readReg32(offset: number): number {
    switch (offset) {
      case NVME_REG.CAP:
        return Number(this.#cap & 0xffff_ffffn);
      case NVME_REG.CAP + 4:
        return Number(this.#cap >> 32n);
      case NVME_REG.VS:
        return NVME_VS_1_4;
      case NVME_REG.INTMS:
      case NVME_REG.INTMC:
        return this.#intms;
      case NVME_REG.CC:
        return this.#cc;
      case NVME_REG.CSTS:
        return this.#dead ? 0 : this.#csts;
      case NVME_REG.AQA:
        return this.#aqa;
      case NVME_REG.ASQ:
        return Number(this.#asq & 0xffff_ffffn);
      case NVME_REG.ASQ + 4:
        return Number(this.#asq >> 32n);
      case NVME_REG.ACQ:
        return Number(this.#acq & 0xffff_ffffn);
      case NVME_REG.ACQ + 4:
        return Number(this.#acq >> 32n);
      default:
        return 0; // reserved registers and doorbells read as zero
    }
  }

  /** 64-bit MMIO read (two 32-bit halves). */
  readReg64(offset: number): bigint {
    return BigInt(this.readReg32(offset) >>> 0) | (BigInt(this.readReg32(offset + 4) >>> 0) << 32n);
  }

  /** 64-bit MMIO write (low half first, as lo_hi_writeq). */
  writeReg64(offset: number, value: bigint): void {
    const v = BigInt.asUintN(64, value);
    this.writeReg32(offset, Number(v & 0xffff_ffffn));
    this.writeReg32(offset + 4, Number(v >> 32n));
  }

  /** nvme_write_bar() and nvme_process_db() */
  writeReg32(offset: number, value: number): void {
    const v = value >>> 0;
    if (this.#dead) return;
    if (offset >= NVME_REG.DBS) {
      this.#processDb(offset, v);
      return;
    }
    switch (offset) {
      case NVME_REG.INTMS:
        this.#intms = (this.#intms | v) >>> 0;
        return;
      case NVME_REG.INTMC:
        this.#intms = (this.#intms & ~v) >>> 0;
        return;
      case NVME_REG.CC:
        this.#writeCc(v);
        return;
      case NVME_REG.AQA:
        this.#aqa = v & 0x0fff_0fff;
        return;
      case NVME_REG.ASQ:
        this.#asq = (this.#asq & ~0xffff_ffffn) | BigInt(v);
        return;
      case NVME_REG.ASQ + 4:
        this.#asq = (this.#asq & 0xffff_ffffn) | (BigInt(v) << 32n);
        return;
      case NVME_REG.ACQ:
        this.#acq = (this.#acq & ~0xffff_ffffn) | BigInt(v);
        return;
      case NVME_REG.ACQ + 4:
        this.#acq = (this.#acq & 0xffff_ffffn) | (BigInt(v) << 32n);
        return;
      default:
        return; // CAP, VS, CSTS are read-only; reserved offsets ignore writes
    }
  }

  /** Install the handler for MSI-X vector `vector`. */
  setIrqHandler(vector: number, handler: () => void): void {
    if (!Number.isInteger(vector) || vector < 0 || vector >= this.#nVectors) {
      throw new RangeError(`setIrqHandler: vector ${vector} (0..${this.#nVectors - 1})`);
    }
    this.#irq.set(vector, handler);
  }

  #writeCc(v: number): void {
    const wasEn = (this.#cc & CC.ENABLE) !== 0;
    const en = (v & CC.ENABLE) !== 0;
    this.#cc = v;
    if (!wasEn && en) {
      if (this.#startCtrl()) this.#csts = CSTS.RDY;
      else this.#csts = CSTS.CFS; // 3.5.1: a bad configuration is a fatal status
    } else if (wasEn && !en) {
      this.#reset();
      this.#csts = 0;
    }
    // 3.6.1: shutdown notification: the volatile write cache reaches the media first.
    if ((v & CC.SHN_MASK) !== 0) {
      this.#cache?.flush();
      this.#csts = (this.#csts & ~CSTS.SHST_MASK) | CSTS.SHST_CMPLT;
    } else {
      this.#csts &= ~CSTS.SHST_MASK;
    }
  }

  /** nvme_start_ctrl(): check CC and the admin queue registers, create the admin queues. */
  #startCtrl(): boolean {
    const cc = decodeCc(this.#cc);
    const ps = BigInt(PAGE_4K << cc.mps);
    // 3.1.4.8/3.1.4.9: ASQ/ACQ are memory page aligned.
    if (this.#asq & (ps - 1n) || this.#acq & (ps - 1n)) return false;
    // 3.1.4.5 CC.CSS must name a command set CAP.CSS supports (NVM only).
    if (cc.css !== 0) return false;
    // CC.MPS within CAP.MPSMIN..MPSMAX.
    if (cc.mps < 0 || cc.mps > 4) return false;
    // CC.IOCQES/IOSQES within Identify CQES/SQES (16 and 64 bytes).
    if (cc.iocqes !== 4 || cc.iosqes !== 6) return false;
    // 3.1.4.7 AQA: ASQS and ACQS are 0-based, at least 1 (two entries), at most 4095.
    const asqs = this.#aqa & 0xfff;
    const acqs = (this.#aqa >>> 16) & 0xfff;
    if (asqs === 0 || acqs === 0) return false;
    this.#pageSize = PAGE_4K << cc.mps;
    this.#cqs = new Array(this.#maxQueues + 1);
    this.#sqs = new Array(this.#maxQueues + 1);
    this.#cqs[0] = this.#newCq(0, this.#acq, acqs + 1, 0, true);
    this.#sqs[0] = this.#newSq(0, this.#asq, asqs + 1, 0);
    return true;
  }

  /** nvme_ctrl_reset(): drop all queues and pending work. */
  #reset(): void {
    this.#sqs = [];
    this.#cqs = [];
    this.#scheduled = [];
    this.#fetchedUncompleted = 0;
    this.#queuesCreated = false;
    this.#aers = [];
    this.#events = [];
    this.#rr = 0;
  }

  #newSq(id: number, base: bigint, size: number, cqid: number): SubQueue {
    const sq: SubQueue = { id, base, size, cqid, head: 0, tail: 0, outstanding: 0, held: 0 };
    this.#cqs[cqid]!.sqids.add(id);
    return sq;
  }

  #newCq(id: number, base: bigint, size: number, vector: number, ien: boolean): CompQueue {
    return { id, base, size, vector, ien, tail: 0, head: 0, phase: 1, sqids: new Set(), ready: [] };
  }

  #ready(): boolean {
    return (this.#csts & (CSTS.RDY | CSTS.CFS)) === CSTS.RDY;
  }

  /** A fatal controller error (3.1.4.6 CSTS.CFS): stop all processing until reset. */
  #fatal(): void {
    this.#csts |= CSTS.CFS;
    this.#stats?.add(COUNTER.deviceErrors);
  }

  // ------------------------------------------------------------ doorbells

  /** nvme_process_db(): record a doorbell write, or report an invalid one. */
  #processDb(offset: number, v: number): void {
    const rel = offset - NVME_REG.DBS;
    if (!this.#ready()) {
      // Doorbells of a controller that is not ready have no queues behind them.
      this.invalidDoorbellWrites++;
      return;
    }
    const idx = rel >> 2;
    const qid = idx >> 1;
    if (rel % 4 !== 0 || qid > this.#maxQueues) {
      this.#dbError(NVME_AER_ERROR.INVALID_DB_REGISTER);
      return;
    }
    if (idx & 1) {
      const cq = this.#cqs[qid];
      // 5.2: a write to the doorbell of a queue that does not exist.
      if (!cq) return this.#dbError(NVME_AER_ERROR.INVALID_DB_REGISTER);
      // 5.2: a head beyond the queue, or one that consumes entries not yet posted.
      if (v >= cq.size) return this.#dbError(NVME_AER_ERROR.INVALID_DB_VALUE);
      const posted = (cq.tail - cq.head + cq.size) % cq.size;
      const consumed = (v - cq.head + cq.size) % cq.size;
      if (consumed > posted) return this.#dbError(NVME_AER_ERROR.INVALID_DB_VALUE);
      cq.head = v;
    } else {
      const sq = this.#sqs[qid];
      if (!sq) return this.#dbError(NVME_AER_ERROR.INVALID_DB_REGISTER);
      if (v >= sq.size) return this.#dbError(NVME_AER_ERROR.INVALID_DB_VALUE);
      sq.tail = v;
    }
  }

  #dbError(info: number): void {
    this.invalidDoorbellWrites++;
    this.#stats?.add(COUNTER.deviceErrors);
    this.#raiseEvent({ type: 0, info, logPage: 0x01 });
  }

  /** nvme_enqueue_event(): complete an outstanding AER, or queue the event. */
  #raiseEvent(e: AsyncEvent): void {
    if (this.#events.length >= MAX_QUEUED_EVENTS) {
      this.droppedEvents++;
      return;
    }
    this.#events.push(e);
    this.#deliverEvents();
  }

  /** nvme_process_aers() */
  #deliverEvents(): void {
    while (this.#events.length > 0 && this.#aers.length > 0) {
      const e = this.#events.shift()!;
      const aer = this.#aers.shift()!;
      const result = (e.type & 7) | ((e.info & 0xff) << 8) | ((e.logPage & 0xff) << 16);
      this.#schedule(0, aer.commandId, 0, result, 0, false);
    }
  }

  // ----------------------------------------------------------------- poll

  /**
   * Fetch and execute up to `budget` commands (round-robin over SQs), post
   * due completions (up to `budget`), raise interrupts. Returns the number of
   * completions posted.
   */
  poll(budget = DEFAULT_BUDGET): number {
    if (!Number.isInteger(budget) || budget <= 0) throw new RangeError(`poll: budget ${budget}`);
    if (this.#polling || !this.#ready()) return 0; // an interrupt handler re-entering
    this.#polling = true;
    const vectors = this.#vectors;
    vectors.clear();
    let posted = 0;
    try {
      this.#processSqs(budget);
      posted = this.#postCqes(budget, vectors);
      // Handlers run inside the guard: a handler that polls gets 0 back. Lowest vector first.
      if (vectors.size === 1) {
        for (const vec of vectors) this.#irq.get(vec)?.();
      } else if (vectors.size > 1) {
        for (const vec of [...vectors].sort((a, b) => a - b)) this.#irq.get(vec)?.();
      }
    } finally {
      this.#polling = false;
    }
    return posted;
  }

  /** nvme_process_sq(), round-robin arbitration (3.4.4) one command per SQ per turn. */
  #processSqs(budget: number): void {
    let fetched = 0;
    const nq = this.#sqs.length;
    let idle = 0;
    while (fetched < budget && idle < nq && this.#ready()) {
      const sq = this.#sqs[this.#rr];
      this.#rr = (this.#rr + 1) % nq;
      if (!sq || sq.head === sq.tail || sq.outstanding >= sq.size) {
        idle++;
        continue;
      }
      idle = 0;
      if (!this.#dma.readInto(sq.base + BigInt(sq.head * NVME_SQE_SIZE), this.#sqe)) {
        this.#fatal(); // QEMU: a failed SQE fetch sets CSTS.CFS
        return;
      }
      sq.head = (sq.head + 1) % sq.size;
      sq.outstanding++;
      this.#fetchedUncompleted++;
      fetched++;
      let cmd = decodeNvmeCommandView(this.#sqeView);
      const fault = this.#faults.atFetch(cmd, sq.id === 0);
      if (fault?.kind === "drop") {
        this.#fetchedUncompleted--; // swallowed: held by the device until a reset, outside inFlight
        sq.held++;
        this.droppedCommands++;
        continue;
      }
      if (fault?.kind === "cfs") {
        this.#fetchedUncompleted--;
        this.#fatal();
        return;
      }
      if (fault?.kind === "bad-cid") {
        cmd = { ...cmd, commandId: cmd.commandId ^ NVME_FAULT_BAD_CID_XOR };
      }
      const r = fault?.kind === "admin-fail"
        ? { status: fault.status }
        : sq.id === 0
        ? this.#adminCmd(cmd)
        : this.#ioCmd(cmd);
      if (r.held) {
        this.#fetchedUncompleted--; // an AER waits for an event, outside inFlight
        continue;
      }
      this.#schedule(sq.id, cmd.commandId, r.status, r.result ?? 0, r.serviceNs ?? 0, true);
    }
  }

  #schedule(
    sqid: number,
    commandId: number,
    status: number,
    result: number,
    serviceNs: number,
    counted: boolean,
  ): void {
    const sq = this.#sqs[sqid];
    if (!sq) throw new Error(`schedule: SQ ${sqid} gone`);
    if (status !== 0) this.#stats?.add(COUNTER.deviceErrors);
    const c: Completion = {
      dueNs: this.#nowNs + serviceNs,
      seq: this.#seq++,
      sqid,
      cqid: sq.cqid,
      commandId,
      status,
      result,
      counted,
    };
    // insert keeping (dueNs, seq) order; equal due times keep submission order
    let i = this.#scheduled.length;
    while (i > 0 && this.#scheduled[i - 1].dueNs > c.dueNs) i--;
    this.#scheduled.splice(i, 0, c);
  }

  /** nvme_post_cqes(): move due completions to their CQs and write what fits. */
  #postCqes(budget: number, vectors: Set<number>): number {
    if (this.#scheduled.length > 0 && this.#scheduled[0].dueNs > this.#nowNs) {
      let anyReady = false;
      for (const cq of this.#cqs) if (cq && cq.ready.length > 0) anyReady = true;
      if (!anyReady) this.#nowNs = this.#scheduled[0].dueNs; // next event
    }
    let due = 0;
    while (due < this.#scheduled.length && this.#scheduled[due].dueNs <= this.#nowNs) due++;
    for (let i = 0; i < due; i++) {
      const c = this.#scheduled[i];
      const cq = this.#cqs[c.cqid];
      if (!cq) throw new Error(`postCqes: CQ ${c.cqid} gone with completions due`);
      cq.ready.push(c);
    }
    if (due > 0) this.#scheduled.splice(0, due);
    let posted = 0;
    for (const cq of this.#cqs) {
      if (!cq) continue;
      while (cq.ready.length > 0 && posted < budget) {
        // 3.3.1.2 (Full Queue): a CQ is full when tail + 1 == head; never overwrite.
        if ((cq.tail + 1) % cq.size === cq.head) break;
        const c = cq.ready[0];
        const sq = this.#sqs[c.sqid];
        const cqe = encodeCqe({
          result: c.result,
          sqHead: sq ? sq.head : 0,
          sqId: c.sqid,
          commandId: c.commandId,
          status: c.status,
          phase: cq.phase,
        }, this.#cqe);
        if (!this.#dma.write(cq.base + BigInt(cq.tail * NVME_CQE_SIZE), cqe)) {
          this.#fatal(); // QEMU: a failed CQE write sets CSTS.CFS
          return posted;
        }
        cq.ready.shift();
        cq.tail++;
        if (cq.tail === cq.size) {
          cq.tail = 0;
          cq.phase = cq.phase === 1 ? 0 : 1; // 4.2.4: the phase tag inverts on each pass
        }
        if (sq) {
          if (sq.outstanding <= 0) throw new Error(`SQ ${sq.id} outstanding underflow`);
          sq.outstanding--;
        }
        if (c.counted) {
          this.#fetchedUncompleted--;
          if (this.#fetchedUncompleted < 0) throw new Error("inFlight underflow");
        }
        posted++;
        if (cq.ien) vectors.add(cq.vector);
      }
    }
    return posted;
  }

  // ---------------------------------------------------------------- admin

  /** nvme_admin_cmd() */
  #adminCmd(cmd: NvmeCommand): Exec {
    // 4.2: SGLs are not used for Admin commands on PCIe; fused admin commands do not exist.
    if (nvmeCmdPsdt(cmd) !== NVME_PSDT_PRP) return { status: dnr(NVME_SC.INVALID_FIELD) };
    if (cmd.flags & NVME_CMD_FUSE_MASK) return { status: dnr(NVME_SC.INVALID_FIELD) };
    switch (cmd.opcode) {
      case NVME_ADMIN.IDENTIFY:
        return this.#identify(cmd);
      case NVME_ADMIN.CREATE_CQ:
        return { status: this.#createCq(cmd) };
      case NVME_ADMIN.CREATE_SQ:
        return { status: this.#createSq(cmd) };
      case NVME_ADMIN.DELETE_SQ:
        return { status: this.#deleteSq(cmd) };
      case NVME_ADMIN.DELETE_CQ:
        return { status: this.#deleteCq(cmd) };
      case NVME_ADMIN.SET_FEATURES:
        return this.#setFeatures(cmd);
      case NVME_ADMIN.GET_FEATURES:
        return this.#getFeatures(cmd);
      case NVME_ADMIN.ASYNC_EVENT:
        return this.#asyncEventRequest(cmd);
      case NVME_ADMIN.ABORT_CMD:
        return this.#abort();
      default:
        return { status: dnr(NVME_SC.INVALID_OPCODE) };
    }
  }

  /** nvme_identify() (5.17) */
  #identify(cmd: NvmeCommand): Exec {
    const cns = cmd.cdw10 & 0xff;
    let data: Uint8Array;
    switch (cns) {
      case NVME_ID_CNS.NS: {
        // 5.17.1: an NSID that is not a valid namespace: Invalid Namespace or Format.
        const ns = this.#ns[cmd.nsid - 1];
        if (cmd.nsid === 0 || !ns) return { status: dnr(NVME_SC.INVALID_NS) };
        data = buildIdNs(ns.nlb, ns.lbaSize);
        break;
      }
      case NVME_ID_CNS.CTRL:
        data = buildIdCtrl({
          mdts: this.#mdts,
          nn: this.#ns.length,
          sgls: this.#sgls,
          ver: NVME_VS_1_4,
          aerl: NVME_AERL,
          vwc: this.#vwc,
        });
        break;
      case NVME_ID_CNS.NS_ACTIVE_LIST:
        // 5.17.2.2: NSID FFFFFFFEh and FFFFFFFFh are invalid here.
        if (cmd.nsid >= 0xffff_fffe) return { status: dnr(NVME_SC.INVALID_NS) };
        data = buildActiveNsList(this.#ns.map((_, i) => i + 1), cmd.nsid);
        break;
      default:
        return { status: dnr(NVME_SC.INVALID_FIELD) };
    }
    return { status: this.#toHostPrp(cmd, data) };
  }

  #toHostPrp(cmd: NvmeCommand, data: Uint8Array): number {
    if (data.length !== NVME_IDENTIFY_DATA_SIZE) throw new Error("identify data size");
    const segs = nvmeMapPrp(this.#dma, cmd.prp1, cmd.prp2, data.length, this.#pageSize);
    if (typeof segs === "number") return segs;
    return dmaToHost(this.#dma, segs, data);
  }

  /** nvme_create_cq() (5.4): checks in QEMU's order. */
  #createCq(cmd: NvmeCommand): number {
    const cqid = cmd.cdw10 & 0xffff;
    const qsize0 = cmd.cdw10 >>> 16; // 0-based
    const flags = cmd.cdw11 & 0xffff;
    const vector = cmd.cdw11 >>> 16;
    if (cqid === 0 || cqid > this.#maxQueues || this.#cqs[cqid]) {
      return dnr(NVME_SC.QID_INVALID);
    }
    // 5.4: size of at least 2 entries and at most CAP.MQES + 1.
    if (qsize0 === 0 || qsize0 > this.#mqes - 1) return dnr(NVME_SC.QUEUE_SIZE);
    // 5.4 PRP1 of a physically contiguous queue is memory page aligned.
    if (cmd.prp1 & BigInt(this.#pageSize - 1)) return dnr(NVME_SC.PRP_INVALID_OFFSET);
    if (vector >= this.#nVectors) return dnr(NVME_SC.INVALID_VECTOR);
    // 5.4: CAP.CQR = 1, so PC = 0 is Invalid Field in Command.
    if (!(flags & NVME_QUEUE_PHYS_CONTIG)) return dnr(NVME_SC.INVALID_FIELD);
    this.#cqs[cqid] = this.#newCq(
      cqid,
      cmd.prp1,
      qsize0 + 1,
      vector,
      (flags & NVME_CQ_IRQ_ENABLED) !== 0,
    );
    this.#queuesCreated = true;
    return 0;
  }

  /** nvme_create_sq() (5.5): checks in QEMU's order. */
  #createSq(cmd: NvmeCommand): number {
    const sqid = cmd.cdw10 & 0xffff;
    const qsize0 = cmd.cdw10 >>> 16;
    const flags = cmd.cdw11 & 0xffff;
    const cqid = cmd.cdw11 >>> 16;
    // 5.5: the CQ must exist and be an I/O CQ.
    if (cqid === 0 || cqid > this.#maxQueues || !this.#cqs[cqid]) return dnr(NVME_SC.CQ_INVALID);
    if (sqid === 0 || sqid > this.#maxQueues || this.#sqs[sqid]) return dnr(NVME_SC.QID_INVALID);
    if (qsize0 === 0 || qsize0 > this.#mqes - 1) return dnr(NVME_SC.QUEUE_SIZE);
    if (cmd.prp1 & BigInt(this.#pageSize - 1)) return dnr(NVME_SC.PRP_INVALID_OFFSET);
    if (!(flags & NVME_QUEUE_PHYS_CONTIG)) return dnr(NVME_SC.INVALID_FIELD);
    this.#sqs[sqid] = this.#newSq(sqid, cmd.prp1, qsize0 + 1, cqid);
    this.#queuesCreated = true;
    return 0;
  }

  /** nvme_del_sq() (5.7): unfetched commands are dropped; fetched ones still complete. */
  #deleteSq(cmd: NvmeCommand): number {
    const qid = cmd.cdw10 & 0xffff;
    const sq = qid === 0 ? undefined : this.#sqs[qid];
    if (!sq) return dnr(NVME_SC.QID_INVALID);
    // Completions of this SQ's commands become due now, ahead of the delete's own.
    const cq = this.#cqs[sq.cqid]!;
    const mine = this.#scheduled.filter((c) => c.sqid === qid);
    this.#scheduled = this.#scheduled.filter((c) => c.sqid !== qid);
    cq.ready.push(...mine);
    cq.sqids.delete(qid);
    this.#sqs[qid] = undefined;
    return 0;
  }

  /** nvme_del_cq() (5.6) */
  #deleteCq(cmd: NvmeCommand): number {
    const qid = cmd.cdw10 & 0xffff;
    const cq = qid === 0 ? undefined : this.#cqs[qid];
    if (!cq) return dnr(NVME_SC.QID_INVALID);
    // 5.6: every SQ using it must have been deleted first.
    if (cq.sqids.size > 0) return NVME_SC.INVALID_QUEUE;
    for (const c of cq.ready) if (c.counted) this.#fetchedUncompleted--;
    this.#cqs[qid] = undefined;
    return 0;
  }

  #numQueuesResult(): number {
    const n = this.#maxQueues - 1;
    return (n | (n << 16)) >>> 0;
  }

  /** nvme_set_feature() (5.27) */
  #setFeatures(cmd: NvmeCommand): Exec {
    const fid = cmd.cdw10 & 0xff;
    const save = (cmd.cdw10 >>> 31) !== 0;
    if (fid !== NVME_FEAT.NUM_QUEUES) return { status: dnr(NVME_SC.INVALID_FIELD) };
    if (save) return { status: dnr(NVME_SC.FEATURE_NOT_SAVEABLE) };
    // 5.27.1.5: Number of Queues may only be set before any I/O queue is created.
    if (this.#queuesCreated) return { status: dnr(NVME_SC.CMD_SEQ_ERROR) };
    const nsqr = cmd.cdw11 & 0xffff;
    const ncqr = cmd.cdw11 >>> 16;
    if (nsqr === 0xffff || ncqr === 0xffff) return { status: dnr(NVME_SC.INVALID_FIELD) };
    return { status: 0, result: this.#numQueuesResult() };
  }

  /** nvme_get_feature() (5.15) */
  #getFeatures(cmd: NvmeCommand): Exec {
    const fid = cmd.cdw10 & 0xff;
    const sel = (cmd.cdw10 >>> 8) & 7;
    if (fid !== NVME_FEAT.NUM_QUEUES || sel > 3) return { status: dnr(NVME_SC.INVALID_FIELD) };
    if (sel === 3) return { status: 0, result: 0 }; // supported capabilities: none
    return { status: 0, result: this.#numQueuesResult() };
  }

  /**
   * nvme_abort() (5.1): this controller executes a command when it fetches
   * it, so nothing is ever left to abort (a command a `drop` fault swallowed
   * is lost inside the device): Abort succeeds with dword 0 bit 0 set,
   * "command not aborted", whatever SQID and CID it names.
   */
  #abort(): Exec {
    return { status: 0, result: 1 };
  }

  /** nvme_aer() (5.2) */
  #asyncEventRequest(cmd: NvmeCommand): Exec {
    if (this.#aers.length > NVME_AERL) return { status: dnr(NVME_SC.ASYNC_LIMIT) };
    this.#aers.push({ commandId: cmd.commandId });
    this.#deliverEvents();
    return { status: 0, held: true };
  }

  // ------------------------------------------------------------------ I/O

  /** nvme_io_cmd() */
  #ioCmd(cmd: NvmeCommand): Exec {
    if (cmd.flags & NVME_CMD_FUSE_MASK) return { status: dnr(NVME_SC.INVALID_FIELD) };
    if (cmd.opcode === NVME_CMD.FLUSH) {
      // NVM 3.2.2: Flush may name all namespaces (FFFFFFFFh).
      if (cmd.nsid !== NVME_NSID_ALL && !this.#ns[cmd.nsid - 1]) {
        return { status: dnr(NVME_SC.INVALID_NS) };
      }
      this.#cache?.flush(cmd.nsid === NVME_NSID_ALL ? undefined : cmd.nsid);
      return { status: 0, serviceNs: this.#serviceNs(0) };
    }
    // 4.2: NSID must name an active namespace.
    const ns = cmd.nsid === 0 ? undefined : this.#ns[cmd.nsid - 1];
    if (!ns) return { status: dnr(NVME_SC.INVALID_NS) };
    switch (cmd.opcode) {
      case NVME_CMD.READ:
        return this.#rw(cmd, ns, false);
      case NVME_CMD.WRITE:
        return this.#rw(cmd, ns, true);
      default:
        return { status: dnr(NVME_SC.INVALID_OPCODE) };
    }
  }

  /** nvme_read() / nvme_write(): MDTS, LBA range, DPTR walk, transfer. */
  #rw(cmd: NvmeCommand, ns: Namespace, isWrite: boolean): Exec {
    const nlb = (cmd.cdw12 & 0xffff) + 1; // NVM 3.2.4/3.2.6: NLB is 0-based
    const len = nlb * ns.lbaSize;
    // Identify MDTS: a larger transfer is Invalid Field in Command.
    if (len > (1 << this.#mdts) * PAGE_4K) return { status: dnr(NVME_SC.INVALID_FIELD) };
    const slba = nvmeCmdSlba(cmd);
    // NVM 3.2.4: an LBA range beyond the namespace is LBA Out of Range.
    if (slba + BigInt(nlb) > ns.nlb) return { status: dnr(NVME_SC.LBA_RANGE) };
    const segs: DataSegment[] | number = nvmeMapDptr(this.#dma, cmd, len, isWrite, {
      pageSize: this.#pageSize,
      sgls: this.#sgls,
    });
    if (typeof segs === "number") return { status: segs };
    // Injected media errors: the command reached the media and fails there, moving nothing.
    const injected = this.#faults.atMedia(cmd, isWrite);
    if (injected) return { status: injected };
    const pos = Number(slba) * ns.lbaSize;
    const lba = Number(slba);
    const fua = (cmd.cdw12 & NVME_RW_FUA_CDW12) !== 0;
    const cache = this.#cache;
    if (isWrite) {
      // Read every byte from the host before the media changes: a fault leaves it untouched.
      const data = this.#xferBuffer(len);
      const st = dmaFromHost(this.#dma, segs, data);
      if (st) return { status: st };
      if (cache && !fua) {
        cache.write(cmd.nsid, lba, data);
      } else {
        ns.media.write(pos, data);
        cache?.discard(cmd.nsid, lba, nlb);
      }
    } else {
      if (cache && fua) cache.destageRange(cmd.nsid, lba, nlb);
      let st: number;
      if (cache === undefined) {
        // No cache to overlay: the media's bytes go straight into host memory.
        const media = ns.media;
        st = dmaToHostFrom(this.#dma, segs, len, (dst, at) => media.readInto(pos + at, dst));
      } else {
        const data = this.#xferBuffer(len);
        ns.media.readInto(pos, data);
        cache.overlay(cmd.nsid, lba, nlb, data);
        st = dmaToHost(this.#dma, segs, data);
      }
      if (st) return { status: st };
    }
    return { status: 0, serviceNs: this.#serviceNs(len) };
  }

  /** The first `len` bytes of the transfer buffer (contents undefined until filled). */
  #xferBuffer(len: number): Uint8Array {
    if (this.#xfer.length < len) this.#xfer = new Uint8Array(len);
    return this.#xfer.subarray(0, len);
  }

  #serviceNs(bytes: number): number {
    const l = this.#latency;
    if (!l) return 0;
    const jitter = l.jitterNs ? this.#rng.int(Math.floor(l.jitterNs) + 1) : 0;
    return Math.round(l.baseNs + (l.nsPerKiB ?? 0) * (bytes / 1024) + jitter);
  }
}
