/**
 * The live-kernel io_uring, through liburing 2.3 (`Deno.dlopen("liburing.so.2")`).
 *
 * liburing 2.3 exports the ring setup, submit, wait and register calls but no
 * `io_uring_prep_*` helpers (they are `static inline` in the header), so this
 * binding lays `struct io_uring` (216 bytes, x86_64) in a `Uint8Array`, maps
 * the kernel's SQE array, SQ/CQ ring indices and CQE array ONCE into typed
 * arrays, and fills SQEs from TypeScript:
 *
 * - get an SQE: `sq.sqe_tail - *sq.khead < sq.ring_entries`, write the 64
 *   bytes at `sqes[sqe_tail & ring_mask]`, bump `sq.sqe_tail` in the struct;
 *   liburing's `io_uring_submit*()` publishes it to `*sq.ktail`;
 * - reap: load `*cq.ktail`, read the CQEs, store `*cq.khead`.
 *
 * {@link LiveRing} implements the byte-level {@link RawRing} shared with the
 * sim backend (`pushSqe`, `submit`, `reap`, `register`), plus typed helpers
 * (prep, register/update of files and buffers, probe, wait with timeout) whose
 * failures come back as values (`{ res, ok, errno }`), never thrown.
 *
 * {@link LiveRing.register} applies the register guard shared with the sim
 * (`sim/uapi/register_rules.ts`) before any system call: an allow-list of
 * opcodes, the argument size each needs for its `nr_args`, and every pointer
 * inside the argument checked against the native memory this ring was given
 * ({@link LiveRingOptions.memory}; by default every live `allocBuffer` of the
 * process). The proposal's `IORING_REGISTER_MAP_BUFFERS`/`UNMAP_BUFFERS`
 * (38/39) are never forwarded to the kernel in any spelling: `-EINVAL`, what a
 * kernel without the opcodes returns, unless a handler was installed with
 * {@link LiveRing.setMapHandler} (the emulated controller's).
 *
 * @example
 * ```ts
 * import { LiveRing, liveRingUnavailable } from "./liburing.ts";
 * import { IORING_OP } from "../sim/uapi/io_uring.ts";
 * if (liveRingUnavailable() === null) {
 *   const r = LiveRing.create(8);
 *   if ("ring" in r) {
 *     using ring = r.ring;
 *     ring.prep({ opcode: IORING_OP.NOP, userData: 7n });
 *     ring.submit(1);
 *     console.log(ring.reap()); // [{ userData: 7n, res: 0, flags: 0 }]
 *   }
 * }
 * ```
 *
 * @module
 */

import { Errno } from "../sim/uapi/errno.ts";
import {
  CQE,
  type Cqe,
  IORING_OP,
  IORING_SETUP,
  IOVEC,
  PARAMS,
  PROBE,
  SQE,
  type SqeFields,
  writeSqe,
} from "../sim/uapi/io_uring.ts";
import {
  type CallResult,
  decodeProbe,
  encodeIovecs,
  type RawRing,
  result,
  Ring,
} from "../sim/uapi/ring_api.ts";
import { allocBuffer, type NativeMemory, processMemory, processNofileLimit } from "./libc.ts";
import { checkIovecTargets, registerGuard } from "../sim/uapi/register_rules.ts";

/** Byte offsets in liburing 2.3's `struct io_uring` (x86_64), checked against offsetof(). */
export const IO_URING = {
  SIZE: 216,
  sq: {
    khead: 0,
    ktail: 8,
    kringMask: 16,
    kringEntries: 24,
    kflags: 32,
    kdropped: 40,
    array: 48,
    sqes: 56,
    sqeHead: 64,
    sqeTail: 68,
    ringSz: 72,
    ringPtr: 80,
    ringMask: 88,
    ringEntries: 92,
  },
  cq: {
    khead: 104,
    ktail: 112,
    kringMask: 120,
    kringEntries: 128,
    kflags: 136,
    koverflow: 144,
    cqes: 152,
    ringSz: 160,
    ringPtr: 168,
    ringMask: 176,
    ringEntries: 180,
  },
  flags: 192,
  ringFd: 196,
  features: 200,
  enterRingFd: 204,
  intFlags: 208,
} as const;

/** Limit: ring sizes accepted by {@link LiveRing.create} (the kernel's IORING_MAX_ENTRIES). */
export const LIVE_MAX_ENTRIES = 32768;
/**
 * True where plain typed-array stores and loads of the mapped ring indices
 * already have release and acquire order (x86-64 is TSO: the CPU moves
 * neither a store before an earlier access nor a load before an earlier
 * load), so {@link storeRelease} and {@link loadAcquire} need no fence.
 * What this relies on from V8: TurboFan keeps typed-array loads and stores
 * on its effect chain, in program order, and does not drop or merge them
 * across an opaque call (an FFI call, a system call).
 *
 * Hot loops copy it into a local and branch on that: optimized code reads a
 * module-level constant through the module context (and its TDZ check) at
 * every use, a chain of dependent heap loads.
 */
export const PLAIN_RING_ACCESS_ORDERED: boolean = Deno.build.arch === "x86_64";

/**
 * io_uring_smp_store_release() on a mapped ring index: a plain store on
 * x86-64 (what liburing compiles to there), `Atomics.store` elsewhere.
 */
export function storeRelease(index: Uint32Array, value: number): void {
  if (PLAIN_RING_ACCESS_ORDERED) index[0] = value;
  else Atomics.store(index, 0, value);
}

/**
 * io_uring_smp_load_acquire() on a mapped ring index: a plain load on x86-64
 * (what liburing compiles to there), `Atomics.load` elsewhere, so the CQEs
 * read after it see what the kernel wrote before it moved the tail. Not
 * `Atomics.load` everywhere: TurboFan does not inline it (a builtin call per
 * load).
 */
export function loadAcquire(index: Uint32Array): number {
  return PLAIN_RING_ACCESS_ORDERED ? index[0] : Atomics.load(index, 0);
}

/** Below this many SQEs, {@link LiveRing.prepNops} writes words instead of copying an image. */
const NOP_COPY_MIN = 4;
/** Limit: probe at most this many opcodes (u8 op numbers). */
const PROBE_MAX_OPS = 256;

/** The liburing 2.3 symbols this binding uses (all synchronous, fast-call friendly). */
export const LIBURING_SYMBOLS = {
  io_uring_queue_init_params: {
    parameters: ["u32", "pointer", "pointer"],
    result: "i32",
    nonblocking: false,
  },
  io_uring_queue_exit: { parameters: ["pointer"], result: "void", nonblocking: false },
  io_uring_submit: { parameters: ["pointer"], result: "i32", nonblocking: false },
  io_uring_submit_and_wait: { parameters: ["pointer", "u32"], result: "i32", nonblocking: false },
  /**
   * io_uring_enter(2), liburing's wrapper (LIBURING_2.3): the same
   * instructions its io_uring_submit*() end in. Optional, so an older
   * liburing still opens (LiveRing.enter then answers -ENOSYS).
   */
  io_uring_enter: {
    parameters: ["u32", "u32", "u32", "u32", "pointer"],
    result: "i32",
    nonblocking: false,
    optional: true,
  },
  io_uring_wait_cqes: {
    parameters: ["pointer", "pointer", "u32", "pointer", "pointer"],
    result: "i32",
    nonblocking: false,
  },
  io_uring_register: {
    parameters: ["u32", "u32", "pointer", "u32"],
    result: "i32",
    nonblocking: false,
  },
  io_uring_register_files: {
    parameters: ["pointer", "pointer", "u32"],
    result: "i32",
    nonblocking: false,
  },
  io_uring_register_files_sparse: {
    parameters: ["pointer", "u32"],
    result: "i32",
    nonblocking: false,
  },
  io_uring_register_files_update: {
    parameters: ["pointer", "u32", "pointer", "u32"],
    result: "i32",
    nonblocking: false,
  },
  io_uring_register_files_update_tag: {
    parameters: ["pointer", "u32", "pointer", "pointer", "u32"],
    result: "i32",
    nonblocking: false,
  },
  io_uring_unregister_files: { parameters: ["pointer"], result: "i32", nonblocking: false },
  io_uring_register_buffers: {
    parameters: ["pointer", "pointer", "u32"],
    result: "i32",
    nonblocking: false,
  },
  io_uring_register_buffers_sparse: {
    parameters: ["pointer", "u32"],
    result: "i32",
    nonblocking: false,
  },
  io_uring_register_buffers_update_tag: {
    parameters: ["pointer", "u32", "pointer", "pointer", "u32"],
    result: "i32",
    nonblocking: false,
  },
  io_uring_unregister_buffers: { parameters: ["pointer"], result: "i32", nonblocking: false },
  io_uring_register_probe: {
    parameters: ["pointer", "pointer", "u32"],
    result: "i32",
    nonblocking: false,
  },
} as const;

/** The opened liburing library. */
export type Lib = Deno.DynamicLibrary<typeof LIBURING_SYMBOLS>;
/** The liburing symbol table. */
export type LiburingSymbols = Lib["symbols"];

let lib: Lib | null = null;
let libError: string | null = null;

/** liburing's symbols, opened once per process; null (see {@link liveRingUnavailable}) if absent. */
export function liburing(): LiburingSymbols | null {
  if (lib === null && libError === null) {
    try {
      lib = Deno.dlopen("liburing.so.2", LIBURING_SYMBOLS);
    } catch (e) {
      libError = `cannot open liburing.so.2: ${(e as Error).message}`;
    }
  }
  return lib?.symbols ?? null;
}

let unavailable: string | null | undefined;

/**
 * Why the live ring cannot be used here (liburing missing, FFI denied,
 * io_uring_setup failing), or null when it can. Probes once per process.
 */
export function liveRingUnavailable(): string | null {
  if (unavailable !== undefined) return unavailable;
  try {
    if (liburing() === null) return (unavailable = libError);
    const r = LiveRing.create(2);
    if ("ring" in r) {
      r.ring[Symbol.dispose]();
      unavailable = null;
    } else unavailable = `io_uring_setup failed: ${r.res} (${r.errno})`;
  } catch (e) {
    unavailable = `live io_uring unavailable: ${(e as Error).message}`;
  }
  return unavailable;
}

/** Options for {@link LiveRing.create}. */
export interface LiveRingOptions {
  /** IORING_SETUP_* flags (SQE128/CQE32 are supported by the layout). */
  flags?: number;
  /** CQ size (sets IORING_SETUP_CQSIZE). */
  cqEntries?: number;
  /**
   * The only memory register arguments may point into (a testbed's
   * `allocBuffer`s); default: every live `allocBuffer` of the process.
   */
  memory?: NativeMemory;
}

export type { CallResult, Cqe, RawRing, SqeFields };
export { Ring };

function ptr(u8: Uint8Array | null): Deno.PointerValue {
  return u8 === null || u8.length === 0
    ? null
    : Deno.UnsafePointer.of(u8 as Uint8Array<ArrayBuffer>);
}

function mapU32(p: bigint, bytes: number): Uint32Array {
  const pv = Deno.UnsafePointer.create(p);
  if (pv === null) throw new Error("liburing left a NULL ring pointer");
  return new Uint32Array(Deno.UnsafePointerView.getArrayBuffer(pv, bytes));
}

/** Build the io_uring_probe out-buffer length for `nOps` ops. */
function probeBytes(nOps: number): number {
  return PROBE.SIZE + nOps * PROBE.OP_SIZE;
}

/**
 * A live kernel io_uring instance (liburing's `struct io_uring`), with its
 * SQE array and SQ/CQ rings mapped into typed arrays.
 */
export class LiveRing implements RawRing {
  /** Always "real". */
  readonly backend = "real" as const;
  /** The struct io_uring bytes (owned here; liburing keeps no pointer to it across calls). */
  readonly struct: Uint8Array<ArrayBuffer>;
  /** Pointer to {@link struct}, for FFI calls. */
  readonly ringPtr: Deno.PointerObject;
  /** The ring's file descriptor. */
  readonly fd: number;
  /** SQ entries. */
  readonly sqEntries: number;
  /** CQ entries. */
  readonly cqEntries: number;
  /** SQ index mask. */
  readonly sqMask: number;
  /** CQ index mask. */
  readonly cqMask: number;
  /** IORING_FEAT_* the kernel reported. */
  readonly features: number;
  /** IORING_SETUP_* the ring was created with. */
  readonly setupFlags: number;
  /** SQE size in bytes (64, or 128 with SQE128). */
  readonly sqeSize: number;
  /** CQE size in bytes (16, or 32 with CQE32). */
  readonly cqeSize: number;

  /** The kernel SQE array, as bytes. */
  readonly sqeBytes: Uint8Array;
  /** The kernel SQE array, as 32-bit words (SQE i at word i * sqeSize / 4). */
  readonly sqeWords: Int32Array;
  /** The kernel CQE array, as 32-bit words (CQE i at word i * cqeSize / 4). */
  readonly cqeWords: Int32Array;
  /** `struct io_uring` as 32-bit words; `sq.sqe_tail` is word {@link SQE_TAIL_WORD}. */
  readonly structWords: Uint32Array;
  /** Kernel `*sq.khead`. */
  readonly sqKhead: Uint32Array;
  /** Kernel `*sq.ktail`. */
  readonly sqKtail: Uint32Array;
  /** Kernel `*sq.kflags` (IORING_SQ_*). */
  readonly sqKflags: Uint32Array;
  /** Kernel `*sq.kdropped`. */
  readonly sqKdropped: Uint32Array;
  /** Kernel `*cq.khead`. */
  readonly cqKhead: Uint32Array;
  /** Kernel `*cq.ktail`. */
  readonly cqKtail: Uint32Array;
  /** Kernel `*cq.koverflow`. */
  readonly cqKoverflow: Uint32Array;

  readonly #sym: LiburingSymbols;
  readonly #submit: (ring: Deno.PointerValue) => number;
  readonly #submitAndWait: (ring: Deno.PointerValue, n: number) => number;
  readonly #enter: LiburingSymbols["io_uring_enter"];
  readonly #cqePtr = new BigUint64Array(1);
  readonly #ts = new BigInt64Array(2);
  #mapHandler: ((opcode: number, arg: Uint8Array | null, nrArgs: number) => number) | null = null;
  readonly #memory: NativeMemory;
  /** The process's RLIMIT_NOFILE, for the register guard. */
  readonly #nofile = processNofileLimit();
  #closed = false;
  #kernelRegisterCalls = 0;

  /** Word index of `sq.sqe_tail` in {@link structWords}. */
  static readonly SQE_TAIL_WORD = IO_URING.sq.sqeTail / 4;
  /** Word index of `sq.sqe_head` in {@link structWords}. */
  static readonly SQE_HEAD_WORD = IO_URING.sq.sqeHead / 4;

  private constructor(
    sym: LiburingSymbols,
    struct: Uint8Array<ArrayBuffer>,
    memory: NativeMemory,
  ) {
    this.#sym = sym;
    this.#memory = memory;
    this.#submit = sym.io_uring_submit;
    this.#submitAndWait = sym.io_uring_submit_and_wait;
    this.#enter = sym.io_uring_enter;
    this.struct = struct;
    const p = Deno.UnsafePointer.of(struct);
    if (p === null) throw new Error("struct io_uring has no address");
    this.ringPtr = p;
    const v = new DataView(struct.buffer);
    const u64 = (at: number) => v.getBigUint64(at, true);
    const u32 = (at: number) => v.getUint32(at, true);
    this.structWords = new Uint32Array(struct.buffer);
    this.fd = v.getInt32(IO_URING.ringFd, true);
    this.setupFlags = u32(IO_URING.flags);
    this.features = u32(IO_URING.features);
    this.sqEntries = u32(IO_URING.sq.ringEntries);
    this.cqEntries = u32(IO_URING.cq.ringEntries);
    this.sqMask = u32(IO_URING.sq.ringMask);
    this.cqMask = u32(IO_URING.cq.ringMask);
    this.sqeSize = this.setupFlags & IORING_SETUP.SQE128 ? 2 * SQE.SIZE : SQE.SIZE;
    this.cqeSize = this.setupFlags & IORING_SETUP.CQE32 ? 2 * CQE.SIZE : CQE.SIZE;
    const sqes = mapU32(u64(IO_URING.sq.sqes), this.sqEntries * this.sqeSize);
    this.sqeBytes = new Uint8Array(sqes.buffer);
    this.sqeWords = new Int32Array(sqes.buffer);
    this.cqeWords = new Int32Array(
      mapU32(u64(IO_URING.cq.cqes), this.cqEntries * this.cqeSize).buffer,
    );
    this.sqKhead = mapU32(u64(IO_URING.sq.khead), 4);
    this.sqKtail = mapU32(u64(IO_URING.sq.ktail), 4);
    this.sqKflags = mapU32(u64(IO_URING.sq.kflags), 4);
    this.sqKdropped = mapU32(u64(IO_URING.sq.kdropped), 4);
    this.cqKhead = mapU32(u64(IO_URING.cq.khead), 4);
    this.cqKtail = mapU32(u64(IO_URING.cq.ktail), 4);
    this.cqKoverflow = mapU32(u64(IO_URING.cq.koverflow), 4);
    // Invariants the fast paths rely on.
    if (this.sqEntries === 0 || (this.sqEntries & (this.sqEntries - 1)) !== 0) {
      throw new Error(`SQ entries ${this.sqEntries} not a power of two`);
    }
    if (this.sqMask !== this.sqEntries - 1 || this.cqMask !== this.cqEntries - 1) {
      throw new Error("ring masks disagree with ring sizes");
    }
  }

  /** io_uring_queue_init_params(): a ring, or the errno io_uring_setup returned. */
  static create(
    entries: number,
    opts: LiveRingOptions = {},
  ): { ring: LiveRing } | CallResult {
    if (!Number.isInteger(entries) || entries < 1 || entries > LIVE_MAX_ENTRIES) {
      return result(-Errno.EINVAL);
    }
    const sym = liburing();
    if (sym === null) throw new Error(libError ?? "liburing unavailable");
    const params = new Uint8Array(PARAMS.SIZE);
    const pv = new DataView(params.buffer);
    let flags = opts.flags ?? 0;
    if (opts.cqEntries !== undefined) {
      flags |= IORING_SETUP.CQSIZE;
      pv.setUint32(PARAMS.cqEntries, opts.cqEntries, true);
    }
    pv.setUint32(PARAMS.flags, flags, true);
    const struct = new Uint8Array(IO_URING.SIZE);
    const r = sym.io_uring_queue_init_params(entries, ptr(struct), ptr(params));
    if (r < 0) return result(r);
    return { ring: new LiveRing(sym, struct, opts.memory ?? processMemory) };
  }

  /** The friendly {@link Ring} over this raw ring, allocating argument memory natively. */
  toRing(): Ring {
    return new Ring(this, allocBuffer);
  }

  #live(): void {
    if (this.#closed) throw new Error("LiveRing used after dispose");
  }

  // ---------------------------------------------------------------- SQ side

  /** SQEs queued locally, not yet handed to the kernel by a submit. */
  get sqPending(): number {
    return (this.structWords[LiveRing.SQE_TAIL_WORD] - this.sqKtail[0]) >>> 0;
  }

  /** Free SQ slots (`entries - (sqe_tail - *khead)`). */
  get sqSpace(): number {
    return this.sqEntries - ((this.structWords[LiveRing.SQE_TAIL_WORD] - this.sqKhead[0]) >>> 0);
  }

  /**
   * io_uring_get_sqe(): the byte offset of a free SQE in {@link sqeBytes}
   * (its word index is `offset >> 2`), or -1 when the SQ is full. The SQE is
   * NOT cleared; the caller writes all of it.
   */
  getSqe(): number {
    const words = this.structWords;
    const tail = words[LiveRing.SQE_TAIL_WORD];
    if (((tail - this.sqKhead[0]) >>> 0) >= this.sqEntries) return -1;
    words[LiveRing.SQE_TAIL_WORD] = (tail + 1) >>> 0;
    return (tail & this.sqMask) * this.sqeSize;
  }

  /** Queue a 64-byte SQE (kernel layout); false when the SQ is full. */
  pushSqe(sqe: Uint8Array): boolean {
    this.#live();
    if (sqe.length !== SQE.SIZE && sqe.length !== this.sqeSize) {
      throw new RangeError(`SQE must be ${SQE.SIZE} or ${this.sqeSize} bytes, got ${sqe.length}`);
    }
    const at = this.getSqe();
    if (at < 0) return false;
    this.sqeBytes.fill(0, at, at + this.sqeSize);
    this.sqeBytes.set(sqe, at);
    return true;
  }

  /** Queue an SQE from named fields (zeroing the rest); false when full. */
  prep(fields: SqeFields): boolean {
    this.#live();
    const at = this.getSqe();
    if (at < 0) return false;
    if (this.sqeSize > SQE.SIZE) this.sqeBytes.fill(0, at + SQE.SIZE, at + this.sqeSize);
    writeSqe(new DataView(this.sqeBytes.buffer), at, fields);
    return true;
  }

  /**
   * io_uring_prep_nop() + io_uring_sqe_set_data64() with user_data given as
   * two u32 halves (no BigInt): false when the SQ is full. Writes the fields
   * prep_nop writes (everything but `__pad2[1]`), fd = -1.
   */
  prepNop(userDataLo: number, userDataHi = 0): boolean {
    const words = this.structWords;
    const tail = words[LiveRing.SQE_TAIL_WORD];
    if (((tail - this.sqKhead[0]) >>> 0) >= this.sqEntries) return false;
    words[LiveRing.SQE_TAIL_WORD] = (tail + 1) >>> 0;
    const w = this.sqeWords;
    const i = (tail & this.sqMask) * (this.sqeSize >> 2);
    w[i] = IORING_OP.NOP; // opcode, flags, ioprio
    w[i + 1] = -1; // fd
    w[i + 2] = 0; // off
    w[i + 3] = 0;
    w[i + 4] = 0; // addr
    w[i + 5] = 0;
    w[i + 6] = 0; // len
    w[i + 7] = 0; // rw_flags
    w[i + 8] = userDataLo;
    w[i + 9] = userDataHi;
    w[i + 10] = 0; // buf_index, personality
    w[i + 11] = 0; // file_index
    w[i + 12] = 0; // addr3
    w[i + 13] = 0;
    w[i + 14] = 0; // __pad2[0]
    return true;
  }

  /**
   * `n` x (io_uring_get_sqe() + io_uring_prep_nop() + io_uring_sqe_set_data64())
   * with user_data `userDataLo + k` (low 32 bits; high bits 0): the batch
   * form of {@link prepNop}, for hot loops. Each SQE ends up byte-identical to
   * what liburing writes (the whole SQE is copied from a prep_nop image, then
   * user_data is set). Returns false, queueing nothing, when fewer than `n`
   * slots are free.
   */
  prepNops(n: number, userDataLo: number): boolean {
    const words = this.structWords;
    const tail = words[LiveRing.SQE_TAIL_WORD];
    if (n > this.sqEntries - ((tail - this.sqKhead[0]) >>> 0)) return false;
    if (n < NOP_COPY_MIN) {
      for (let k = 0; k < n; k++) this.prepNop((userDataLo + k) | 0, 0);
      return true;
    }
    const stride = this.sqeSize >> 2;
    const w = this.sqeWords;
    const start = tail & this.sqMask;
    const first = Math.min(n, this.sqEntries - start);
    w.set(this.#nopImage(first), start * stride);
    if (first < n) w.set(this.#nopImage(n - first), 0);
    let ud = userDataLo;
    for (let k = 0, i = start * stride + 8; k < first; k++, i += stride) w[i] = ud++;
    for (let k = first, i = 8; k < n; k++, i += stride) w[i] = ud++;
    words[LiveRing.SQE_TAIL_WORD] = (tail + n) >>> 0;
    return true;
  }

  /** prep_nop images of 0..sqEntries SQEs, views of one array, built on first use. */
  #nopImages: Int32Array[] = [];

  #nopImage(n: number): Int32Array {
    let v = this.#nopImages[n];
    if (v === undefined) {
      if (this.#nopImages.length === 0) {
        const stride = this.sqeSize >> 2;
        const tpl = new Int32Array(this.sqEntries * stride);
        for (let k = 0; k < this.sqEntries; k++) {
          tpl[k * stride] = IORING_OP.NOP;
          tpl[k * stride + 1] = -1; // fd
        }
        for (let k = 0; k <= this.sqEntries; k++) this.#nopImages.push(tpl.subarray(0, k * stride));
      }
      v = this.#nopImages[n];
    }
    return v;
  }

  /**
   * io_uring_submit() / io_uring_submit_and_wait(): hand queued SQEs to the
   * kernel and wait for `waitNr` completions. Submitted count or -errno.
   */
  submit(waitNr = 0): number {
    this.#live();
    return waitNr === 0 ? this.#submit(this.ringPtr) : this.#submitAndWait(this.ringPtr, waitNr);
  }

  /** io_uring_submit_and_wait() without the liveness check, for hot loops. */
  submitAndWait(waitNr: number): number {
    return this.#submitAndWait(this.ringPtr, waitNr);
  }

  /**
   * liburing 2.3's `__io_uring_flush_sq()`: hand the locally queued SQEs to
   * the kernel's view of the ring (`sq.sqe_head = sq.sqe_tail`, then
   * `*sq.ktail = sq.sqe_tail` with release order) and return how many the
   * kernel has not consumed yet, the `to_submit` that io_uring_submit*()
   * passes to io_uring_enter(2). No system call.
   */
  flushSq(): number {
    const words = this.structWords;
    const tail = words[LiveRing.SQE_TAIL_WORD];
    if (words[LiveRing.SQE_HEAD_WORD] !== tail) {
      words[LiveRing.SQE_HEAD_WORD] = tail;
      storeRelease(this.sqKtail, tail);
    }
    return (tail - loadAcquire(this.sqKhead)) >>> 0;
  }

  /**
   * io_uring_enter(2) on this ring, through liburing's wrapper, with no
   * sigset: the submitted count or -errno (-ENOSYS when this liburing does
   * not export it). For a ring without SQPOLL, {@link flushSq} and then
   * `enter(toSubmit, waitNr, IORING_ENTER.GETEVENTS)` is the system call
   * io_uring_submit_and_wait(ring, waitNr) makes, argument for argument.
   */
  enter(toSubmit: number, minComplete: number, flags: number): number {
    this.#live();
    const enter = this.#enter;
    return enter === null ? -Errno.ENOSYS : enter(this.fd, toSubmit, minComplete, flags, null);
  }

  // ---------------------------------------------------------------- CQ side

  /** io_uring_cq_ready(): CQEs posted and not yet reaped. */
  cqReady(): number {
    return (loadAcquire(this.cqKtail) - this.cqKhead[0]) >>> 0;
  }

  /** io_uring_cq_advance(): release `n` CQEs to the kernel. */
  cqAdvance(n: number): void {
    if (n < 0 || n > this.cqReady()) throw new RangeError(`cqAdvance(${n}) past the CQ tail`);
    storeRelease(this.cqKhead, (this.cqKhead[0] + n) >>> 0);
  }

  /** Take up to `max` CQEs (all available by default) and advance the CQ head. */
  reap(max = Infinity): Cqe[] {
    this.#live();
    const tail = loadAcquire(this.cqKtail);
    let head = this.cqKhead[0];
    const out: Cqe[] = [];
    const w = this.cqeWords;
    const stride = this.cqeSize >> 2;
    while (head !== tail && out.length < max) {
      const i = (head & this.cqMask) * stride;
      out.push({
        userData: (BigInt(w[i + 1] >>> 0) << 32n) | BigInt(w[i] >>> 0),
        res: w[i + 2],
        flags: w[i + 3] >>> 0,
      });
      head = (head + 1) >>> 0;
    }
    storeRelease(this.cqKhead, head);
    return out;
  }

  /**
   * io_uring_wait_cqes(): wait until `waitNr` CQEs are ready, at most
   * `timeoutNs` (forever when omitted). 0, or -ETIME on timeout, or -errno.
   */
  waitCqes(waitNr: number, timeoutNs?: number): number {
    this.#live();
    let ts: Deno.PointerValue = null;
    if (timeoutNs !== undefined) {
      if (!(timeoutNs >= 0)) return -Errno.EINVAL;
      this.#ts[0] = BigInt(Math.floor(timeoutNs / 1e9));
      this.#ts[1] = BigInt(Math.floor(timeoutNs % 1e9));
      ts = Deno.UnsafePointer.of(this.#ts);
    }
    return this.#sym.io_uring_wait_cqes(
      this.ringPtr,
      Deno.UnsafePointer.of(this.#cqePtr),
      waitNr,
      ts,
      null,
    );
  }

  /** `*sq.kflags`: IORING_SQ_NEED_WAKEUP, IORING_SQ_CQ_OVERFLOW, IORING_SQ_TASKRUN. */
  get sqFlags(): number {
    return Atomics.load(this.sqKflags, 0);
  }

  /** `*cq.koverflow`: CQEs the kernel dropped. */
  get cqOverflow(): number {
    return Atomics.load(this.cqKoverflow, 0);
  }

  /** `*sq.kdropped`: invalid SQ indices the kernel skipped. */
  get sqDropped(): number {
    return Atomics.load(this.sqKdropped, 0);
  }

  // ---------------------------------------------------------------- register

  /** How many raw {@link register} calls went to the kernel (guarded and 38/39 calls never do). */
  get kernelRegisterCalls(): number {
    return this.#kernelRegisterCalls;
  }

  /**
   * Install the handler for the proposal's MAP/UNMAP_BUFFERS opcodes (the
   * emulated controller's), or null to get -EINVAL back for them again.
   */
  setMapHandler(h: ((opcode: number, arg: Uint8Array | null, nrArgs: number) => number) | null) {
    this.#mapHandler = h;
  }

  /**
   * io_uring_register(2), raw: 0 (or a count) or -errno. Pointers inside
   * `arg` are native addresses and must lie in this ring's memory
   * ({@link LiveRingOptions.memory}). The register guard
   * (`sim/uapi/register_rules.ts`) answers a call that breaks its rules
   * without a system call: `-EINVAL` for a non-u32 opcode or nr_args, any
   * IORING_REGISTER_USE_REGISTERED_RING spelling, or an opcode off the list;
   * `-EFAULT` for an argument too short for nr_args or a pointer outside that
   * memory. MAP/UNMAP_BUFFERS (38/39) never reach the kernel: -EINVAL, or the
   * installed map handler's result.
   */
  register(opcode: number, arg: Uint8Array | null, nrArgs: number): number {
    const rule = registerGuard(opcode, arg, nrArgs, this.#memory, this.#nofile);
    if (typeof rule === "number") return rule;
    this.#live();
    if (rule.testbedOnly) return this.#mapHandler?.(opcode, arg, nrArgs) ?? -Errno.EINVAL;
    this.#kernelRegisterCalls++;
    return this.#sym.io_uring_register(this.fd, opcode, ptr(arg), nrArgs);
  }

  /** io_uring_register_files(): `fds` may hold -1 for sparse slots. */
  registerFiles(fds: readonly number[]): CallResult {
    this.#live();
    const a = Int32Array.from(fds);
    return result(
      this.#sym.io_uring_register_files(this.ringPtr, Deno.UnsafePointer.of(a), a.length),
    );
  }

  /** io_uring_register_files_sparse(): `nr` empty slots. */
  registerFilesSparse(nr: number): CallResult {
    this.#live();
    return result(this.#sym.io_uring_register_files_sparse(this.ringPtr, nr));
  }

  /** io_uring_register_files_update(): replace slots from `offset` (-1 clears). Count on success. */
  updateFiles(offset: number, fds: readonly number[]): CallResult {
    this.#live();
    const a = Int32Array.from(fds);
    return result(
      this.#sym.io_uring_register_files_update(
        this.ringPtr,
        offset,
        Deno.UnsafePointer.of(a),
        a.length,
      ),
    );
  }

  /** io_uring_register_files_update_tag(): as {@link updateFiles} with a tag per slot. */
  updateFilesTag(offset: number, fds: readonly number[], tags: readonly bigint[]): CallResult {
    this.#live();
    if (tags.length !== fds.length) return result(-Errno.EINVAL);
    const a = Int32Array.from(fds);
    const t = BigUint64Array.from(tags);
    return result(
      this.#sym.io_uring_register_files_update_tag(
        this.ringPtr,
        offset,
        Deno.UnsafePointer.of(a),
        Deno.UnsafePointer.of(t),
        a.length,
      ),
    );
  }

  /** io_uring_unregister_files() */
  unregisterFiles(): CallResult {
    this.#live();
    return result(this.#sym.io_uring_unregister_files(this.ringPtr));
  }

  /** io_uring_register_buffers(): one iovec per buffer. */
  registerBuffers(bufs: readonly { addr: bigint; len: number }[]): CallResult {
    this.#live();
    const bad = checkIovecTargets(bufs, this.#memory);
    if (bad < 0) return result(bad);
    // Like a C caller, pass a real pointer even for an empty array.
    const iov = bufs.length ? encodeIovecs(bufs) : new Uint8Array(IOVEC.SIZE);
    return result(this.#sym.io_uring_register_buffers(this.ringPtr, ptr(iov), bufs.length));
  }

  /** io_uring_register_buffers_sparse(): `nr` empty buffer slots. */
  registerBuffersSparse(nr: number): CallResult {
    this.#live();
    return result(this.#sym.io_uring_register_buffers_sparse(this.ringPtr, nr));
  }

  /**
   * io_uring_register_buffers_update_tag() with no tags: replace buffers from
   * `offset` (`{ addr: 0n, len: 0 }` clears a slot). Count on success.
   */
  updateBuffers(offset: number, bufs: readonly { addr: bigint; len: number }[]): CallResult {
    this.#live();
    const bad = checkIovecTargets(bufs, this.#memory);
    if (bad < 0) return result(bad);
    // Like a C caller, pass a real pointer even for an empty array.
    const iov = bufs.length ? encodeIovecs(bufs) : new Uint8Array(IOVEC.SIZE);
    return result(
      this.#sym.io_uring_register_buffers_update_tag(
        this.ringPtr,
        offset,
        ptr(iov),
        null,
        bufs.length,
      ),
    );
  }

  /** io_uring_unregister_buffers() */
  unregisterBuffers(): CallResult {
    this.#live();
    return result(this.#sym.io_uring_unregister_buffers(this.ringPtr));
  }

  /**
   * io_uring_register_probe(): the supported opcodes and the kernel's last
   * opcode, or the failed result.
   */
  probe(): { ops: Set<number>; lastOp: number } | CallResult {
    this.#live();
    const b = new Uint8Array(probeBytes(PROBE_MAX_OPS));
    const r = this.#sym.io_uring_register_probe(this.ringPtr, ptr(b), PROBE_MAX_OPS);
    return r < 0 ? result(r) : decodeProbe(b);
  }

  /** io_uring_queue_exit(): unmap the rings and close the fd. Idempotent. */
  [Symbol.dispose](): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#sym.io_uring_queue_exit(this.ringPtr);
  }
}
