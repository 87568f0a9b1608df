/**
 * The io_uring mirror's core (io_uring/io_uring.c): ring setup with the
 * kernel's memory layout, SQE submission with links and drains, CQE posting
 * with the overflow list, and ring teardown.
 *
 * {@link SimRing} is the raw ABI surface the testbed's `sim` backend offers
 * to applications: push 64-byte SQEs into the SQ ring, submit as
 * io_uring_enter(2) would, reap 16-byte CQEs from the CQ ring, and register
 * resources as io_uring_register(2) would.
 *
 * Completions of requests issued inline (in a submission or a task-work
 * batch) are deferred to the end of the batch and posted in order, then the
 * requests are freed (their links queued, their resource nodes put), as
 * io_submit_flush_completions() does; device completions, timer expiries and
 * linked requests run as task work.
 *
 * What is not modelled: SQPOLL, IOPOLL, SQE128/CQE32/CQE_MIXED, NO_MMAP,
 * REGISTERED_FD_ONLY, R_DISABLED, ATTACH_WQ (setup returns -EINVAL for
 * them), personalities, provided buffers. There is no io-wq:
 * an IOSQE_ASYNC request, like the next request of a link chain, is issued
 * after the batch's inline issues, which reproduces the completion order
 * Linux 6.18 shows for synchronous opcodes (observed: `A(link) B, C` posts
 * A, C, B; `ASYNC A, B` posts B, A).
 *
 * @module
 */

import { type File, fput, getFile } from "../fs/file.ts";
import { type FdTable, filesOf } from "../fs/fdtable.ts";
import type { Kernel, Poller } from "../kernel.ts";
import { Errno } from "../uapi/errno.ts";
import {
  CQ_OFF,
  CQE,
  type Cqe,
  IORING_FEAT,
  IORING_MAX_CQ_ENTRIES,
  IORING_MAX_ENTRIES,
  IORING_OP,
  IORING_SETUP,
  IORING_SQ,
  IOSQE,
  PARAMS,
  readSqe,
  SQ_OFF,
  SQE,
  type SqeFields,
  writeSqe,
} from "../uapi/io_uring.ts";
import { FileTable } from "./filetable.ts";
import { type IoKiocb, IOU_ISSUE_QUEUED } from "./io_uring_types.ts";
import { IO_ISSUE_DEFS, IORING_OP_LAST } from "./opdef.ts";
import { ioUringRegister } from "./register.ts";
import { registerGuard } from "../uapi/register_rules.ts";
import { ioIsUringFops, ioUringGetFile, type RingFileCtx } from "./ring_file.ts";
import { BufTable, ioFileSlotRelease, unmapWhen } from "./rsrc.ts";
import {
  ioDisarmLinkedTimeout,
  ioFlushTimeouts,
  ioKillTimeouts,
  ioPrepLinkedTimeout,
  ioQueueLinkedTimeout,
  ioTimeoutsShutdown,
  type TimeoutCtx,
  TimeoutState,
} from "./timeout.ts";
import { COUNTER } from "../stats.ts";

/** offsetof(struct io_rings, ...): the ring header fields (Linux 6.18, observed). */
export const IO_RINGS = {
  sqHead: 0,
  sqTail: 4,
  cqHead: 8,
  cqTail: 12,
  sqRingMask: 16,
  cqRingMask: 20,
  sqRingEntries: 24,
  cqRingEntries: 28,
  sqDropped: 32,
  sqFlags: 36,
  cqFlags: 40,
  cqOverflow: 44,
  cqes: 64,
} as const;

/** SMP_CACHE_BYTES on x86_64: the SQ index array starts on a cache line. */
const SMP_CACHE_BYTES = 64;

/** Every IORING_SETUP_* flag Linux 6.18 knows (bits 0..18, observed). */
export const IORING_SETUP_FLAGS = (1 << 19) - 1;
const SETUP_HYBRID_IOPOLL = 1 << 17;
const SETUP_CQE_MIXED = 1 << 18;
/** The setup flags the mirror implements. */
export const SIM_SETUP_FLAGS = IORING_SETUP.CQSIZE | IORING_SETUP.CLAMP |
  IORING_SETUP.SUBMIT_ALL | IORING_SETUP.COOP_TASKRUN | IORING_SETUP.TASKRUN_FLAG |
  IORING_SETUP.SINGLE_ISSUER | IORING_SETUP.DEFER_TASKRUN | IORING_SETUP.NO_SQARRAY;

/**
 * Features the mirror reports: the ones whose semantics it honours. (Linux
 * 6.18 reports 0x3ffff; the sim leaves out what it does not model.)
 */
export const SIM_FEATURES = IORING_FEAT.SINGLE_MMAP | IORING_FEAT.NODROP |
  IORING_FEAT.SUBMIT_STABLE | IORING_FEAT.RW_CUR_POS | IORING_FEAT.RSRC_TAGS |
  IORING_FEAT.CQE_SKIP | IORING_FEAT.LINKED_FILE;

/** SQE flags the kernel accepts (SQE_VALID_FLAGS). */
const SQE_VALID_FLAGS = 0x7f;
const IO_REQ_LINK_FLAGS = IOSQE.IO_LINK | IOSQE.IO_HARDLINK;

/** Options for {@link SimRing.setup} beyond io_uring_params. */
export interface SimRingOptions {
  /** The process fd table (default: the kernel's, {@link filesOf}). */
  files?: FdTable;
  /** capable(CAP_IPC_LOCK): registered buffers skip memlock accounting (default true, root). */
  capIpcLock?: boolean;
  /** RLIMIT_MEMLOCK in bytes when accounting applies (default 8 MiB). */
  memlockLimitBytes?: number;
  /**
   * Bound on the CQ overflow list, standing for the kernel's allocation of an
   * overflow entry failing: past it a CQE is dropped and cq_overflow counts it.
   * Default: unbounded, as the kernel with memory to spare (IORING_FEAT_NODROP:
   * 70,000 NOPs on an 8-entry ring without reaping lose none, observed on 6.18).
   */
  maxOverflow?: number;
}

function roundupPow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/** io_uring_sanitise_params(): flag combinations the kernel rejects. */
function sanitiseParams(flags: number): number {
  if ((flags & IORING_SETUP.REGISTERED_FD_ONLY) && !(flags & IORING_SETUP.NO_MMAP)) {
    return -Errno.EINVAL;
  }
  const ipi = IORING_SETUP.COOP_TASKRUN | IORING_SETUP.TASKRUN_FLAG | IORING_SETUP.DEFER_TASKRUN;
  if ((flags & IORING_SETUP.SQPOLL) && (flags & ipi)) return -Errno.EINVAL;
  if (
    (flags & IORING_SETUP.TASKRUN_FLAG) &&
    !(flags & (IORING_SETUP.COOP_TASKRUN | IORING_SETUP.DEFER_TASKRUN))
  ) return -Errno.EINVAL;
  if ((flags & SETUP_HYBRID_IOPOLL) && !(flags & IORING_SETUP.IOPOLL)) return -Errno.EINVAL;
  if ((flags & IORING_SETUP.DEFER_TASKRUN) && !(flags & IORING_SETUP.SINGLE_ISSUER)) {
    return -Errno.EINVAL;
  }
  const both = IORING_SETUP.CQE32 | SETUP_CQE_MIXED;
  if ((flags & both) === both) return -Errno.EINVAL;
  return 0;
}

/** io_uring_fill_params(): ring sizes, or -EINVAL. */
function fillParams(entries: number, flags: number, cqIn: number): [number, number] | number {
  if (!entries) return -Errno.EINVAL;
  if (entries > IORING_MAX_ENTRIES) {
    if (!(flags & IORING_SETUP.CLAMP)) return -Errno.EINVAL;
    entries = IORING_MAX_ENTRIES;
  }
  const sq = roundupPow2(entries);
  let cq: number;
  if (flags & IORING_SETUP.CQSIZE) {
    if (!cqIn) return -Errno.EINVAL;
    cq = cqIn;
    if (cq > IORING_MAX_CQ_ENTRIES) {
      if (!(flags & IORING_SETUP.CLAMP)) return -Errno.EINVAL;
      cq = IORING_MAX_CQ_ENTRIES;
    }
    cq = roundupPow2(cq);
    if (cq < sq) return -Errno.EINVAL;
  } else {
    cq = 2 * sq;
  }
  return [sq, cq];
}

interface OverflowCqe {
  userData: bigint;
  res: number;
  flags: number;
}

/**
 * One io_uring instance (struct io_ring_ctx) and its rings.
 *
 * @example
 * ```ts
 * import { Kernel } from "../kernel.ts";
 * import { SimRing } from "./io_uring.ts";
 * import { encodeSqe, IORING_OP } from "../uapi/io_uring.ts";
 * const ring = SimRing.setup(new Kernel(), 8, new Uint8Array(120));
 * if (typeof ring === "number") throw new Error(`setup: ${ring}`);
 * ring.pushSqe(encodeSqe({ opcode: IORING_OP.NOP, userData: 7n }));
 * ring.submit(1);
 * console.log(ring.reap()); // [{ userData: 7n, res: 0, flags: 0 }]
 * ring[Symbol.dispose]();
 * ```
 */
export class SimRing implements RingFileCtx, TimeoutCtx, Disposable {
  /** Which backend this is. */
  readonly backend = "sim" as const;
  /** The host. */
  readonly kernel: Kernel;
  /** The process fd table. */
  readonly fdt: FdTable;
  /** Fixed files. */
  readonly fileTable: FileTable;
  /** Registered buffers. */
  readonly bufTable: BufTable;
  /** IORING_SETUP_* */
  readonly setupFlags: number;
  /** SQ ring entries. */
  readonly sqEntries: number;
  /** CQ ring entries. */
  readonly cqEntries: number;
  /** The shared ring memory (struct io_rings, then the SQ index array), kernel layout. */
  readonly ringBytes: Uint8Array;
  /** The SQE array (64 bytes each). */
  readonly sqeBytes: Uint8Array;
  /** sq_off.array (0 with IORING_SETUP_NO_SQARRAY). */
  readonly sqArrayOff: number;
  /** R_DISABLED is not modelled: rings are always enabled. */
  readonly disabled = false;
  #fd = -1;
  #file: File | null = null;
  #dead = false;
  readonly #rv: DataView;
  /** A view of {@link SimRing.sqeBytes}, made once. */
  readonly #sqev: DataView;
  #cachedSqHead = 0;
  #seq = 0;
  /** ctx->cq_overflow_list: entries from #ovHead on are pending (a queue without O(n) shifts). */
  #overflow: OverflowCqe[] = [];
  #ovHead = 0;
  readonly #maxOverflow: number;
  /**
   * Requests submitted and not yet freed, in submission order: a list threaded through
   * the requests (IoKiocb.inflightPrev/Next). (A Set of request objects made V8 create an
   * identity hash for each, some 100 ns per request; a Map by number still hashed.)
   */
  #inflightHead: IoKiocb | null = null;
  #inflightTail: IoKiocb | null = null;
  #inflightCount = 0;
  readonly #deferList: IoKiocb[] = [];
  #taskWork: (() => void)[] = [];
  /** ctx->submit_state.compl_reqs: completions deferred to the end of the batch. */
  #compl: IoKiocb[] = [];
  /** The timeout state (io_uring/timeout.c). */
  readonly timeouts: TimeoutState = new TimeoutState();
  /** Runs task work queued outside a submission (timer expiries) from Kernel.poll(). */
  readonly #poller: Poller = {
    poll: () => {
      const n = this.#taskWork.length;
      if (n) this.#runTaskWork();
      return n;
    },
    inFlight: 0,
  };
  #drainDisabled = false;
  /** min_complete of the io_uring_enter waiting now. */
  #waitNr = 0;
  /** The wait's condition, made once: run task work, flush the overflow, enough CQEs? */
  readonly #waitDone = (): boolean => {
    this.#runTaskWork();
    this.#flushOverflow();
    return this.cqReady >= this.#waitNr;
  };
  #linkHead: IoKiocb | null = null;
  #linkLast: IoKiocb | null = null;
  #inSubmit = false;
  #inTaskWork = false;

  private constructor(kernel: Kernel, sq: number, cq: number, flags: number, o: SimRingOptions) {
    this.kernel = kernel;
    this.fdt = o.files ?? filesOf(kernel);
    this.setupFlags = flags;
    this.sqEntries = sq;
    this.cqEntries = cq;
    this.#maxOverflow = o.maxOverflow ?? Infinity;
    const cqEnd = IO_RINGS.cqes + CQE.SIZE * cq;
    const noArray = (flags & IORING_SETUP.NO_SQARRAY) !== 0;
    this.sqArrayOff = noArray ? 0 : Math.ceil(cqEnd / SMP_CACHE_BYTES) * SMP_CACHE_BYTES;
    this.ringBytes = new Uint8Array(noArray ? cqEnd : this.sqArrayOff + 4 * sq);
    this.sqeBytes = new Uint8Array(SQE.SIZE * sq);
    this.#rv = new DataView(this.ringBytes.buffer);
    this.#sqev = new DataView(this.sqeBytes.buffer);
    this.#rv.setUint32(IO_RINGS.sqRingMask, sq - 1, true);
    this.#rv.setUint32(IO_RINGS.cqRingMask, cq - 1, true);
    this.#rv.setUint32(IO_RINGS.sqRingEntries, sq, true);
    this.#rv.setUint32(IO_RINGS.cqRingEntries, cq, true);
    // io_free_rsrc_node(): a tagged resource posts io_post_aux_cqe(ctx, tag, 0, 0).
    const postTag = (tag: bigint) => this.postAuxCqe(tag, 0, 0);
    this.bufTable = new BufTable(kernel.mm, {
      capIpcLock: o.capIpcLock,
      memlockLimitBytes: o.memlockLimitBytes,
      postTag,
    });
    this.fileTable = new FileTable(
      (slot) => ioFileSlotRelease(this.bufTable, slot, unmapWhen(kernel.premap)),
      (f) => ioIsUringFops(f),
      postTag,
    );
  }

  /**
   * io_uring_setup(entries, params): a ring, or a negative errno. `paramsBytes`
   * is a struct io_uring_params (120 bytes): read as input, and on success
   * written back with sq_entries, cq_entries, features, sq_off and cq_off.
   */
  static setup(
    kernel: Kernel,
    entries: number,
    paramsBytes: Uint8Array,
    opts: SimRingOptions = {},
  ): SimRing | number {
    if (paramsBytes.length < PARAMS.SIZE) return -Errno.EFAULT;
    const pv = new DataView(paramsBytes.buffer, paramsBytes.byteOffset, PARAMS.SIZE);
    for (let i = 0; i < 3; i++) if (pv.getUint32(PARAMS.resv + 4 * i, true)) return -Errno.EINVAL;
    const flags = pv.getUint32(PARAMS.flags, true);
    if (flags & ~IORING_SETUP_FLAGS) return -Errno.EINVAL;
    const bad = sanitiseParams(flags);
    if (bad) return bad;
    const sizes = fillParams(entries >>> 0, flags, pv.getUint32(PARAMS.cqEntries, true));
    if (typeof sizes === "number") return sizes;
    // Valid for Linux, but not modelled here.
    if (flags & ~SIM_SETUP_FLAGS) return -Errno.EINVAL;
    const [sq, cq] = sizes;
    const ring = new SimRing(kernel, sq, cq, flags, opts);
    kernel.addPoller(ring.#poller);
    const file = ioUringGetFile(ring, () => ring.#free());
    const fd = ring.fdt.install(file);
    if (fd < 0) {
      fput(file);
      return fd;
    }
    ring.#fd = fd;
    ring.#file = file;
    pv.setUint32(PARAMS.sqEntries, sq, true);
    pv.setUint32(PARAMS.cqEntries, cq, true);
    pv.setUint32(PARAMS.features, SIM_FEATURES, true);
    const so = PARAMS.sqOff;
    pv.setUint32(so + SQ_OFF.head, IO_RINGS.sqHead, true);
    pv.setUint32(so + SQ_OFF.tail, IO_RINGS.sqTail, true);
    pv.setUint32(so + SQ_OFF.ringMask, IO_RINGS.sqRingMask, true);
    pv.setUint32(so + SQ_OFF.ringEntries, IO_RINGS.sqRingEntries, true);
    pv.setUint32(so + SQ_OFF.flags, IO_RINGS.sqFlags, true);
    pv.setUint32(so + SQ_OFF.dropped, IO_RINGS.sqDropped, true);
    pv.setUint32(so + SQ_OFF.array, ring.sqArrayOff, true);
    pv.setUint32(so + SQ_OFF.resv1, 0, true);
    pv.setBigUint64(so + SQ_OFF.userAddr, 0n, true);
    const co = PARAMS.cqOff;
    pv.setUint32(co + CQ_OFF.head, IO_RINGS.cqHead, true);
    pv.setUint32(co + CQ_OFF.tail, IO_RINGS.cqTail, true);
    pv.setUint32(co + CQ_OFF.ringMask, IO_RINGS.cqRingMask, true);
    pv.setUint32(co + CQ_OFF.ringEntries, IO_RINGS.cqRingEntries, true);
    pv.setUint32(co + CQ_OFF.overflow, IO_RINGS.cqOverflow, true);
    pv.setUint32(co + CQ_OFF.cqes, IO_RINGS.cqes, true);
    pv.setUint32(co + CQ_OFF.flags, IO_RINGS.cqFlags, true);
    pv.setUint32(co + CQ_OFF.resv1, 0, true);
    pv.setBigUint64(co + CQ_OFF.userAddr, 0n, true);
    return ring;
  }

  /** The ring's descriptor in the process fd table (-1 once torn down). */
  get fd(): number {
    return this.#dead ? -1 : this.#fd;
  }

  /** Free SQ slots as user space sees them. */
  get sqSpace(): number {
    const used = (this.#u32(IO_RINGS.sqTail) - this.#u32(IO_RINGS.sqHead)) >>> 0;
    return this.sqEntries - used;
  }

  /** CQEs in the CQ ring not yet reaped. */
  get cqReady(): number {
    return (this.#u32(IO_RINGS.cqTail) - this.#u32(IO_RINGS.cqHead)) >>> 0;
  }

  /** CQEs waiting on the overflow list. */
  get overflowPending(): number {
    return this.#overflow.length - this.#ovHead;
  }

  /** Requests submitted and not yet completed. */
  get inflight(): number {
    return this.#inflightCount;
  }

  /** ctx->cached_cq_tail: CQEs written into the CQ ring so far (u32). */
  get cachedCqTail(): number {
    return this.#u32(IO_RINGS.cqTail);
  }

  /** ctx->submit_state.link: the chain being assembled. */
  get submitLink(): { head: IoKiocb | null; last: IoKiocb | null } {
    return { head: this.#linkHead, last: this.#linkLast };
  }

  #u32(off: number): number {
    return this.#rv.getUint32(off, true);
  }

  #setU32(off: number, v: number): void {
    this.#rv.setUint32(off, v >>> 0, true);
  }

  /** User side (io_uring_get_sqe + copy): queue one SQE; false when the SQ is full. */
  pushSqe(sqe: Uint8Array): boolean {
    if (sqe.length !== SQE.SIZE) {
      throw new RangeError(`pushSqe: SQE is ${sqe.length} bytes, not 64`);
    }
    const idx = this.#userGetSqe();
    if (idx < 0) return false;
    this.sqeBytes.set(sqe, idx * SQE.SIZE);
    this.#userCommitSqe(idx);
    return true;
  }

  /**
   * User side (io_uring_get_sqe + io_uring_prep_*): fill the next SQE in
   * place from named fields, as liburing does; false when the SQ is full.
   */
  prepSqe(fields: SqeFields): boolean {
    const idx = this.#userGetSqe();
    if (idx < 0) return false;
    writeSqe(this.#sqev, idx * SQE.SIZE, fields);
    this.#userCommitSqe(idx);
    return true;
  }

  /** The SQ slot the application fills next, or -1 (ring gone, SQ full). */
  #userGetSqe(): number {
    if (this.#dead) return -1;
    const tail = this.#u32(IO_RINGS.sqTail);
    if (this.sqSpace <= 0) return -1;
    return tail & (this.sqEntries - 1);
  }

  /** Publish slot `idx` (the SQ array entry, then the tail). */
  #userCommitSqe(idx: number): void {
    if (this.sqArrayOff) this.#setU32(this.sqArrayOff + 4 * idx, idx);
    this.#setU32(IO_RINGS.sqTail, this.#u32(IO_RINGS.sqTail) + 1);
  }

  /**
   * io_uring_enter(to_submit = all queued, min_complete = waitNr, flags):
   * GETEVENTS when `waitNr > 0` or the CQ has overflowed (liburing's rule),
   * which flushes the overflow list into the CQ. While waiting the devices
   * are polled (`kernel.runUntil`). Returns the number of SQEs submitted;
   * when the wait cannot be satisfied because nothing is left in flight
   * (the kernel would sleep forever), it returns the submitted count if
   * any, else -ETIME, as a timed-out wait would. -EBADF once torn down.
   */
  submit(waitNr = 0): number {
    if (this.#dead) return -Errno.EBADF;
    if (!Number.isInteger(waitNr) || waitNr < 0) return -Errno.EINVAL;
    const tail = this.#u32(IO_RINGS.sqTail);
    const pending = Math.min((tail - this.#cachedSqHead) >>> 0, this.sqEntries);
    // One syscall: on the submission side when it carries SQEs, else it only waits or reaps.
    const stats = this.kernel.stats;
    if (pending) stats.add(COUNTER.enterCalls);
    else {
      stats.enterCompletion();
      stats.add(COUNTER.enterCalls);
      stats.exitCompletion();
    }
    const submitted = pending ? this.#submitSqes(pending) : 0;
    this.#runTaskWork();
    const getEvents = waitNr > 0 || (this.#u32(IO_RINGS.sqFlags) & IORING_SQ.CQ_OVERFLOW) !== 0;
    if (getEvents) this.#flushOverflow();
    if (waitNr > 0) {
      const outer = this.#waitNr;
      this.#waitNr = waitNr;
      let ok: boolean;
      try {
        ok = this.kernel.runUntil(this.#waitDone);
      } finally {
        this.#waitNr = outer;
      }
      if (!ok && submitted === 0) return -Errno.ETIME;
    }
    return submitted;
  }

  /** User side: take up to `max` CQEs and advance the CQ head (no syscall, no flush). */
  reap(max = Infinity): Cqe[] {
    const out: Cqe[] = [];
    let head = this.#u32(IO_RINGS.cqHead);
    const tail = this.#u32(IO_RINGS.cqTail);
    const mask = this.cqEntries - 1;
    while (head !== tail && out.length < max) {
      const at = IO_RINGS.cqes + (head & mask) * CQE.SIZE;
      out.push({
        userData: this.#rv.getBigUint64(at + CQE.userData, true),
        res: this.#rv.getInt32(at + CQE.res, true),
        flags: this.#rv.getUint32(at + CQE.flags, true),
      });
      head = (head + 1) >>> 0;
    }
    this.#setU32(IO_RINGS.cqHead, head);
    return out;
  }

  /**
   * io_uring_register(fd, opcode, arg, nr_args): see {@link ioUringRegister}.
   * A zero-length `arg` is a NULL pointer, as Deno FFI passes an empty buffer
   * to the live kernel (so `REGISTER_FILES` with no files is -EFAULT on both).
   * The register guard of both backends ({@link registerGuard}: allow-list,
   * argument sizes, pointers into the process's mappings) runs first, so the
   * sim answers a call the real backend refuses exactly as it does.
   */
  register(opcode: number, arg: Uint8Array | null, nrArgs: number): number {
    const rule = registerGuard(opcode, arg, nrArgs, this.kernel.mm, this.fdt.maxFds);
    if (typeof rule === "number") return rule;
    if (this.#dead) return -Errno.EBADF;
    const t0 = this.kernel.stats.begin();
    try {
      return ioUringRegister(this, opcode, arg !== null && arg.length === 0 ? null : arg, nrArgs);
    } finally {
      this.kernel.stats.end("io_uring", t0);
    }
  }

  /** io_submit_sqes() */
  #submitSqes(nr: number): number {
    const stats = this.kernel.stats;
    let t0 = stats.begin();
    this.#inSubmit = true;
    let left = nr;
    try {
      while (left) {
        const at = this.#getSqe();
        if (at < 0) break;
        stats.add(COUNTER.sqesConsumed);
        stats.end("io_uring", t0);
        const failed = this.#submitSqe(at);
        t0 = stats.begin();
        left--;
        if (failed && !(this.setupFlags & IORING_SETUP.SUBMIT_ALL)) break;
      }
      // io_submit_state_end(): a link left open at the end of the batch is queued as is,
      // then the batch's inline completions are posted.
      if (this.#linkHead) {
        const head = this.#linkHead;
        this.#linkHead = this.#linkLast = null;
        this.#queueFallback(head);
      }
      this.#flushCompletions();
    } finally {
      this.#inSubmit = false;
      this.#setU32(IO_RINGS.sqHead, this.#cachedSqHead);
      stats.end("io_uring", t0);
    }
    return nr - left;
  }

  /**
   * io_get_sqe(): the byte offset of the next SQE in {@link SimRing.sqeBytes},
   * or -1 for an invalid SQ array index (dropped).
   */
  #getSqe(): number {
    const mask = this.sqEntries - 1;
    let head = this.#cachedSqHead & mask;
    this.#cachedSqHead = (this.#cachedSqHead + 1) >>> 0;
    if (this.sqArrayOff) {
      head = this.#u32(this.sqArrayOff + 4 * head);
      if (head >= this.sqEntries) {
        this.#setU32(IO_RINGS.sqDropped, this.#u32(IO_RINGS.sqDropped) + 1);
        return -1;
      }
    }
    return head * SQE.SIZE;
  }

  /**
   * io_submit_sqe(): init (the SQE at byte `at` copied into the request:
   * IORING_FEAT_SUBMIT_STABLE), then link assembly; nonzero when submission
   * should stop.
   */
  #submitSqe(at: number): number {
    const sqe = readSqe(this.#sqev, at);
    const req: IoKiocb = {
      ctx: this,
      sqe,
      flags: sqe.flags,
      seq: this.#seq++,
      file: null,
      res: 0,
      cflags: 0,
      failed: false,
      cqeSkip: (sqe.flags & IOSQE.CQE_SKIP_SUCCESS) !== 0,
      skipLinkCqes: false,
      armLtimeout: false,
      linkTimeout: false,
      fileNode: null,
      link: null,
      cleanup: null,
      done: false,
      op: null,
      inflightPrev: null,
      inflightNext: null,
    };
    this.#inflightAdd(req);
    const ret = this.#initReq(req);
    if (ret) return this.#submitFailInit(req, ret);
    if (this.#linkHead) {
      this.#linkLast!.link = req;
      this.#linkLast = req;
      if (req.flags & IO_REQ_LINK_FLAGS) return 0;
      const head = this.#linkHead;
      this.#linkHead = this.#linkLast = null;
      this.#queueFallback(head);
      return 0;
    }
    if (req.flags & IO_REQ_LINK_FLAGS) {
      this.#linkHead = this.#linkLast = req;
      return 0;
    }
    this.#queueFallback(req);
    return 0;
  }

  /** Append `req` to the in-flight list. */
  #inflightAdd(req: IoKiocb): void {
    const tail = this.#inflightTail;
    req.inflightPrev = tail;
    req.inflightNext = null;
    if (tail) tail.inflightNext = req;
    else this.#inflightHead = req;
    this.#inflightTail = req;
    this.#inflightCount++;
  }

  /** Take `req` off the in-flight list (no-op if it is not on it). */
  #inflightDel(req: IoKiocb): void {
    if (req.inflightPrev === null && this.#inflightHead !== req) return;
    const prev = req.inflightPrev;
    const next = req.inflightNext;
    if (prev) prev.inflightNext = next;
    else this.#inflightHead = next;
    if (next) next.inflightPrev = prev;
    else this.#inflightTail = prev;
    req.inflightPrev = req.inflightNext = null;
    this.#inflightCount--;
  }

  /** io_init_req(): the kernel's checks in its order, then the opcode's prep. */
  #initReq(req: IoKiocb): number {
    const op = req.sqe.opcode;
    if (op >= IORING_OP_LAST) return -Errno.EINVAL;
    const def = IO_ISSUE_DEFS[op];
    const f = req.flags;
    if (f & ~SQE_VALID_FLAGS) return -Errno.EINVAL;
    if ((f & IOSQE.BUFFER_SELECT) && !def.bufferSelect) return -Errno.EOPNOTSUPP;
    if (f & IOSQE.CQE_SKIP_SUCCESS) this.#drainDisabled = true;
    if (f & IOSQE.IO_DRAIN) {
      if (this.#drainDisabled) return -Errno.EOPNOTSUPP;
      // io_init_drain(): a drain inside a link drains the link's head.
      if (this.#linkHead) this.#linkHead.flags |= IOSQE.IO_DRAIN;
    }
    if (!def.ioprio && req.sqe.ioprio) return -Errno.EINVAL;
    if (req.sqe.personality) return -Errno.EINVAL;
    return def.prep(req);
  }

  /** req_set_fail(): mark a failure; a CQE_SKIP_SUCCESS request then posts, and skips its links'. */
  reqSetFail(req: IoKiocb): void {
    req.failed = true;
    if (req.cqeSkip) {
      req.cqeSkip = false;
      req.skipLinkCqes = true;
    }
  }

  /** io_submit_fail_init(): fail the request and its link; nonzero stops submission. */
  #submitFailInit(req: IoKiocb, ret: number): number {
    this.reqSetFail(req);
    req.res = ret;
    const head = this.#linkHead;
    if (head && !head.failed) {
      this.reqSetFail(head);
      head.res = -Errno.ECANCELED;
    }
    if (!(req.flags & IO_REQ_LINK_FLAGS)) {
      let r = req;
      if (head) {
        this.#linkLast!.link = req;
        this.#linkHead = this.#linkLast = null;
        r = head;
      }
      this.#queueFallback(r);
      return ret;
    }
    if (head) this.#linkLast!.link = req;
    else this.#linkHead = req;
    this.#linkLast = req;
    return 0;
  }

  /** io_queue_sqe_fallback() / io_drain_req(): fail, defer behind a drain, or issue. */
  #queueFallback(req: IoKiocb): void {
    if (req.failed) {
      // Nothing of a failed link is submitted: a hard link fails the rest like a soft one.
      req.flags = (req.flags & ~IOSQE.IO_HARDLINK) | IOSQE.IO_LINK;
      this.#complete(req, req.res, true);
      return;
    }
    if ((req.flags & IOSQE.IO_DRAIN) || this.#deferList.length) {
      this.#deferList.push(req);
      this.#processDefer();
      return;
    }
    // IOSQE_ASYNC punts to io-wq: it runs after the inline issues of this batch (observed order).
    if (req.flags & IOSQE.ASYNC) this.taskWorkAdd(() => this.#issue(req));
    else this.#issue(req);
  }

  /** io_queue_deferred(): issue deferred requests whose drain condition holds. */
  #processDefer(): void {
    while (this.#deferList.length) {
      const h = this.#deferList[0];
      if (h.flags & IOSQE.IO_DRAIN) {
        let earlier = false;
        for (let r = this.#inflightHead; r; r = r.inflightNext) {
          if (r.seq < h.seq) {
            earlier = true;
            break;
          }
        }
        if (earlier) return;
      }
      this.#deferList.shift();
      this.#issue(h);
    }
  }

  /** io_issue_sqe(): assign the file, arm a linked timeout, then run the opcode. */
  #issue(req: IoKiocb): void {
    const def = IO_ISSUE_DEFS[req.sqe.opcode];
    if (def.needsFile && !req.file) {
      const fd = req.sqe.fd;
      let f: File | null;
      if (req.flags & IOSQE.FIXED_FILE) {
        // io_file_get_fixed(): the request holds the slot's node until it is freed.
        const node = this.fileTable.getNode(fd);
        f = node?.file ?? null;
        if (node) req.fileNode = node.ref();
      } else {
        f = this.fdt.lookup(fd) ?? null;
      }
      if (!f) {
        this.#complete(req, -Errno.EBADF);
        return;
      }
      req.file = getFile(f);
    }
    // __io_issue_sqe(): a LINK_TIMEOUT next in the chain is armed around the issue.
    const lt = req.armLtimeout ? ioPrepLinkedTimeout(req) : null;
    const ret = req.flags & IOSQE.BUFFER_SELECT ? -Errno.ENOBUFS : def.issue(req);
    if (lt) ioQueueLinkedTimeout(lt);
    if (ret === IOU_ISSUE_QUEUED) return;
    this.#complete(req, ret);
  }

  /** ki_complete path for queued requests: completed from task work, as the kernel does. */
  completeReq(req: IoKiocb, res: number): void {
    this.taskWorkAdd(() => this.#complete(req, res));
    this.#runTaskWork();
  }

  /** io_req_task_complete() from task work: `req.res` and its failure are already set. */
  taskComplete(req: IoKiocb): void {
    this.#complete(req, req.res, false);
  }

  /**
   * io_req_post_cqe(): a CQE for a request that stays alive (multishot),
   * through io_fill_cqe_aux(), which never overflows: false when the CQ ring
   * is full or a backlog waits.
   */
  postReqCqe(req: IoKiocb, res: number, cflags: number): boolean {
    if (this.#dead) return false;
    if (this.overflowPending || this.cqReady >= this.cqEntries) return false;
    this.#postCqe(req.sqe.userData, res, cflags);
    return true;
  }

  /** io_req_task_work_add(): run `fn` as task work (after the current submission or batch). */
  taskWorkAdd(fn: () => void): void {
    if (this.#dead) return;
    // Outside a submission or batch (a timer expiring) it runs when the kernel next
    // polls (the ring's poller), after every timer due at that instant has fired.
    this.#taskWork.push(fn);
  }

  /**
   * Complete a request with `res`. A failure (`fail`, by default a negative
   * result, or for read/write any result but the full count) is req_set_fail().
   * In a submission or task-work batch the completion is deferred to the end
   * of the batch (IO_URING_F_COMPLETE_DEFER), as the kernel posts it.
   */
  #complete(req: IoKiocb, res: number, fail?: boolean): void {
    if (req.done) throw new Error(`io_uring: request ${req.sqe.userData} completed twice`);
    req.done = true;
    const op = req.sqe.opcode;
    const isRw = op === IORING_OP.READ || op === IORING_OP.WRITE || op === IORING_OP.READV ||
      op === IORING_OP.WRITEV || op === IORING_OP.READ_FIXED || op === IORING_OP.WRITE_FIXED;
    if (fail ?? (isRw ? res !== req.res : res < 0)) this.reqSetFail(req);
    req.res = res;
    if (this.#inSubmit || this.#inTaskWork) {
      this.#compl.push(req);
      return;
    }
    this.#postReq(req);
    this.#freeReq(req);
  }

  /** io_fill_cqe_req(): the request's CQE, unless REQ_F_CQE_SKIP. */
  #postReq(req: IoKiocb): void {
    if (!req.cqeSkip) this.#postCqe(req.sqe.userData, req.res, req.cflags);
  }

  /** __io_submit_flush_completions(): post the batch's CQEs, then free its requests. */
  #flushCompletions(): void {
    while (this.#compl.length) {
      const batch = this.#compl;
      this.#compl = [];
      for (const r of batch) this.#postReq(r);
      for (const r of batch) this.#freeReq(r);
    }
  }

  /**
   * io_free_batch_list() for one request: drop what it holds (its resource
   * nodes last, so a tag CQE follows the request's), disarm a linked timeout
   * (io_disarm_next), and move its chain on: the next link runs, or a failed
   * request fails the rest (a hard link runs on).
   */
  #freeReq(req: IoKiocb): void {
    if (req.cleanup) {
      const c = req.cleanup;
      req.cleanup = null;
      c(req);
    }
    if (req.file) {
      fput(req.file);
      req.file = null;
    }
    this.#inflightDel(req);
    if (req.armLtimeout) {
      // The guarded request never issued: its timeout completes with -ECANCELED.
      req.armLtimeout = false;
      const lt = req.link;
      if (lt && lt.sqe.opcode === IORING_OP.LINK_TIMEOUT) {
        req.link = lt.link;
        lt.link = null;
        this.#queueTwComplete(lt, -Errno.ECANCELED);
      }
    } else if (req.linkTimeout) {
      const lt = ioDisarmLinkedTimeout(req);
      if (lt) this.#queueTwComplete(lt, -Errno.ECANCELED);
    }
    const next = req.link;
    req.link = null;
    if (next) {
      if (req.failed && !(req.flags & IOSQE.IO_HARDLINK)) this.#failLinks(next, req.skipLinkCqes);
      else this.taskWorkAdd(() => this.#issue(next));
    }
    if (req.fileNode) {
      const n = req.fileNode;
      req.fileNode = null;
      n.put();
    }
    this.#processDefer();
  }

  /** io_req_queue_tw_complete(): complete from task work with `res`, not a failure. */
  #queueTwComplete(req: IoKiocb, res: number): void {
    req.res = res;
    this.taskWorkAdd(() => this.taskComplete(req));
  }

  /**
   * io_fail_links(): cancel the rest of a chain (-ECANCELED, or a member's own
   * error), from task work. When the failed request carried IOSQE_CQE_SKIP_SUCCESS
   * (REQ_F_SKIP_LINK_CQES) no member posts a CQE; otherwise every member does,
   * its own CQE_SKIP_SUCCESS notwithstanding.
   */
  #failLinks(first: IoKiocb, ignoreCqes: boolean): void {
    for (let l: IoKiocb | null = first; l; l = l.link) l.cqeSkip = ignoreCqes;
    this.taskWorkAdd(() => {
      // io_req_tw_fail_links()
      for (let l: IoKiocb | null = first; l;) {
        const n: IoKiocb | null = l.link;
        l.link = null;
        const res = l.failed ? l.res : -Errno.ECANCELED;
        l.failed = true;
        this.#complete(l, res, false);
        l = n;
      }
    });
  }

  /** Run task work (linked requests, device completions, timers), batch by batch. */
  #runTaskWork(): void {
    if (this.#inSubmit || this.#inTaskWork) return;
    this.#inTaskWork = true;
    try {
      while (this.#taskWork.length) {
        const batch = this.#taskWork;
        this.#taskWork = [];
        for (const fn of batch) fn();
        this.#flushCompletions();
      }
    } finally {
      this.#inTaskWork = false;
    }
  }

  /** io_post_aux_cqe() */
  postAuxCqe(userData: bigint, res: number, cflags: number): void {
    this.#postCqe(userData, res, cflags);
  }

  /**
   * io_fill_cqe_req() / io_cqring_event_overflow(): CQ ring if room and no
   * backlog, else overflow; then io_commit_cqring_flush() (counted timeouts).
   */
  #postCqe(userData: bigint, res: number, flags: number): void {
    if (this.#dead) return;
    const t0 = this.kernel.stats.begin();
    if (this.overflowPending || this.cqReady >= this.cqEntries) {
      if (this.overflowPending >= this.#maxOverflow) {
        this.#setU32(IO_RINGS.cqOverflow, this.#u32(IO_RINGS.cqOverflow) + 1);
      } else {
        if (!this.overflowPending) {
          this.#setU32(IO_RINGS.sqFlags, this.#u32(IO_RINGS.sqFlags) | IORING_SQ.CQ_OVERFLOW);
        }
        this.#overflow.push({ userData, res, flags });
      }
    } else {
      this.#writeCqe(userData, res, flags);
      if (this.timeouts.offTimeoutUsed) ioFlushTimeouts(this);
    }
    this.kernel.stats.end("io_uring", t0);
  }

  #writeCqe(userData: bigint, res: number, flags: number): void {
    const tail = this.#u32(IO_RINGS.cqTail);
    const at = IO_RINGS.cqes + (tail & (this.cqEntries - 1)) * CQE.SIZE;
    this.#rv.setBigUint64(at + CQE.userData, BigInt.asUintN(64, userData), true);
    this.#rv.setInt32(at + CQE.res, res | 0, true);
    this.#rv.setUint32(at + CQE.flags, flags >>> 0, true);
    this.#setU32(IO_RINGS.cqTail, tail + 1);
    if (this.cqReady > this.cqEntries) throw new Error("io_uring: CQ tail ran past head");
    this.kernel.stats.add(COUNTER.cqesPosted);
  }

  /** __io_cqring_overflow_flush(): move overflowed CQEs into the ring while there is room. */
  #flushOverflow(): void {
    let moved = 0;
    while (this.overflowPending && this.cqReady < this.cqEntries) {
      const o = this.#overflow[this.#ovHead++];
      this.#writeCqe(o.userData, o.res, o.flags);
      moved++;
    }
    if (this.#ovHead > 1024 && this.#ovHead * 2 > this.#overflow.length) {
      this.#overflow = this.#overflow.slice(this.#ovHead);
      this.#ovHead = 0;
    }
    if (!this.overflowPending) {
      this.#overflow = [];
      this.#ovHead = 0;
      this.#setU32(IO_RINGS.sqFlags, this.#u32(IO_RINGS.sqFlags) & ~IORING_SQ.CQ_OVERFLOW);
    }
    if (moved && this.timeouts.offTimeoutUsed) {
      ioFlushTimeouts(this);
      this.#runTaskWork();
    }
  }

  /**
   * io_ring_ctx_free(): cancel the timeouts (io_kill_timeouts), wait for
   * in-flight I/O, then drop buffers and files.
   */
  #free(): void {
    if (this.#dead) return;
    ioKillTimeouts(this);
    this.#runTaskWork();
    this.kernel.runUntil(() => {
      this.#runTaskWork();
      return this.#inflightCount === 0;
    });
    this.#inTaskWork = true;
    try {
      const all: IoKiocb[] = [];
      for (let r = this.#inflightHead; r; r = r.inflightNext) all.push(r);
      for (const r of all) {
        if (!r.done) this.#complete(r, -Errno.ECANCELED, true);
      }
      this.#flushCompletions();
    } finally {
      this.#inTaskWork = false;
    }
    this.#runTaskWork();
    this.#dead = true;
    this.kernel.removePoller(this.#poller);
    ioTimeoutsShutdown(this.timeouts);
    this.#taskWork = [];
    this.bufTable.unregister();
    this.fileTable.unregister();
    this.#overflow = [];
    this.#ovHead = 0;
  }

  /** close(ring_fd): the ring goes when its last file reference does. */
  [Symbol.dispose](): void {
    if (this.#dead || !this.#file) return;
    if (this.fdt.lookup(this.#fd) === this.#file) this.fdt.close(this.#fd);
    else this.#free();
  }
}
