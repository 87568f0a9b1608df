/**
 * A seeded fuzzer for the io_uring mirror (`sim/io_uring/`): hostile SQEs
 * over every field and IOSQE flag, hostile io_uring_register(2) calls, and
 * lifecycle events (close, munmap, ring teardown, MAP/UNMAP_BUFFERS) while
 * I/O is in flight on the simulated NVMe namespace, on both premap variants.
 *
 * A run is a list of operations generated from one seed up front (so a run
 * replays exactly and can be shrunk), then executed against a fresh host.
 * After every operation the invariants are checked:
 *
 * - nothing is thrown out of the library;
 * - the ring's head/tail never run past each other, `cq_overflow` stays 0
 *   (IORING_FEAT_NODROP: nothing dropped) and IORING_SQ_CQ_OVERFLOW is set
 *   exactly while a backlog waits;
 * - no CQE names a request that was never submitted, and none is completed
 *   twice; a CQE for an IOSQE_CQE_SKIP_SUCCESS request is a failure (or a
 *   short read/write, which fails the request too);
 * - at each checkpoint (before a ring is torn down, and at the end) every
 *   SQE the ring consumed has its CQE, unless it asked for CQE_SKIP_SUCCESS,
 *   or its link chain held such a request (REQ_F_SKIP_LINK_CQES), or its SQ
 *   array slot was out of range (sq_dropped counts those);
 * - teardown is clean: nothing left in flight, every pinned page unpinned,
 *   every file reference dropped; on `hardened`, no IOMMU fault and no
 *   DMA-API debug report (on `v2` those are the posted code's flaw, counted).
 *
 * On a failure the run is shrunk (chunks of operations dropped while the
 * same invariant still breaks) and reported with the seed.
 *
 * @module
 */

import { Kernel, type PremapVariant } from "../../sim/kernel.ts";
import { attachNvme, type NvmeHost } from "../../sim/host.ts";
import { IO_RINGS, SimRing } from "../../sim/io_uring/io_uring.ts";
import { Rng } from "../../sim/random.ts";
import { doSysOpen, sysClose } from "../../sim/fs/namei.ts";
import type { File } from "../../sim/fs/file.ts";
import type { Vma } from "../../sim/memory/mm.ts";
import type { IommuMode } from "../../sim/dma/types.ts";
import {
  IORING_CQE_F,
  IORING_OP,
  IORING_SETUP,
  IORING_SQ,
  IORING_TIMEOUT,
  IOSQE,
  O,
  PARAMS,
  SQE,
  writeSqe,
} from "../../sim/uapi/io_uring.ts";
import { shrinkByChunks } from "./shrink.ts";

/**
 * A user address: inside (or just past, into the guard gap of) a buffer, a
 * raw number, one of the fuzzer's timespecs (`ts`: an index into
 * {@link TIMESPECS_NS}), its tag array at entry `tag`, its fd array (the
 * fuzzer's descriptors, written just before use), or the user_data of the
 * SQE queued `prevUd` SQEs earlier (TIMEOUT_REMOVE's target).
 */
export type AddrRef =
  | { buf: number; off: number }
  | { raw: string }
  | { ts: number }
  | { tag: number }
  | { fds: true }
  | { prevUd: number };
/** A descriptor: a file of the fuzzer's, a ring, a fixed slot, or a raw number. */
export type FdRef = { file: number } | { ring: number } | { raw: number };

/** One SQE, every field drawn; references resolved at run time. */
export interface SqeSpec {
  opcode: number;
  flags: number;
  ioprio: number;
  fd: FdRef;
  off: string;
  addr: AddrRef;
  len: number;
  rwFlags: number;
  bufIndex: number;
  personality: number;
  fileIndex: number;
  addr3: AddrRef;
  pad2: string;
  /** Write an out-of-range index into its SQ array slot (the kernel drops it). */
  badIndex?: boolean;
}

/** An io_uring_register(2) argument: NULL, or bytes with u32/u64 fields and pointers. */
export interface ArgSpec {
  len: number;
  u32: [number, number][];
  ptrs: [number, AddrRef][];
  /** Fill pointed-to memory first: `fds` writes fuzzer fds (or -1), `iovecs` buffer ranges. */
  fill?: { at: AddrRef; kind: "fds" | "iovecs"; n: number };
}

/** One fuzzer operation. */
export type FuzzOp =
  | { k: "sqe"; ring: number; s: SqeSpec }
  | { k: "submit"; ring: number; wait: number }
  | { k: "reap"; ring: number; max: number }
  | { k: "reg"; ring: number; opcode: number; nr: number; arg: ArgSpec | null }
  | { k: "open"; file: number; flags: number }
  | { k: "close"; file: number }
  | { k: "munmap"; buf: number }
  | { k: "mmap"; buf: number }
  | { k: "fill"; buf: number; byte: number }
  | { k: "teardown"; ring: number; entries: number; flags: number };

/** Sizes the generator and the runner share. */
export const NR_FILES = 4;
export const NR_BUFS = 4;
export const NR_RINGS = 2;
export const BUF_BYTES = 64 * 1024;
/** MSG_RING's target user_data (sqe->off) lives here, so those CQEs are told apart. */
const MSG_UD_BASE = 0x4d53_0000_0000_0000n;
/** Layout of the fuzzer's auxiliary page: timespecs, tags, an fd array. */
const AUX = { ts: 0, fds: 2048, tags: 4096 } as const;
/** Tags in the array: a tag array read past its end runs off the mapping (-EFAULT). */
const NR_TAGS = 512;
const AUX_BYTES = AUX.tags + 8 * NR_TAGS;

/** What a run reports. */
export interface FuzzResult {
  seed: number;
  ops: number;
  sqes: number;
  cqes: number;
  /** CQE results by errno name ("ok" for >= 0). */
  outcomes: Map<string, number>;
  /** NVMe commands the simulated controller received. */
  nvmeCommands: number;
  /** The first invariant that broke, or null. */
  failure: { op: number; invariant: string; detail: string } | null;
}

/** Knobs of one run. */
export interface FuzzConfig {
  premap: PremapVariant;
  iommu: IommuMode;
}

// ---------------------------------------------------------------- generator

const INTERESTING_OFF = [
  0n,
  512n,
  4096n,
  65536n,
  -1n,
  -2n,
  -4096n,
  (1n << 63n) - 1n,
  (1n << 63n) - 4096n,
  1n << 63n,
  (1n << 64n) - 512n,
  1n << 32n,
];
const INTERESTING_LEN = [0, 1, 511, 512, 4096, 8192, 65536, 65537, 1 << 20, 0x7fffffff, 0xffffffff];
/** The timespecs the fuzzer's timeouts use (ns): zero, short, long, and the ktime limit. */
export const TIMESPECS_NS = [0n, 1000n, 1_000_000n, 10_000_000n, 1_000_000_000n, 1n << 62n];
/** user_data of tag CQEs: every tag the fuzzer registers is TAG_BASE + its array index. */
export const TAG_BASE = 0x7461_6700_0000_0000n;
const TIMEOUT_OPS = [
  IORING_OP.TIMEOUT,
  IORING_OP.TIMEOUT,
  IORING_OP.LINK_TIMEOUT,
  IORING_OP.TIMEOUT_REMOVE,
  IORING_OP.FILES_UPDATE,
];
/** The opcodes of the well-formed I/O mix. */
const SANE = [
  IORING_OP.NOP,
  IORING_OP.READV,
  IORING_OP.WRITEV,
  IORING_OP.FSYNC,
  IORING_OP.READ_FIXED,
  IORING_OP.WRITE_FIXED,
  IORING_OP.READ,
  IORING_OP.WRITE,
  IORING_OP.MSG_RING,
];
/** Every opcode the mirror implements. */
const IMPLEMENTED = [
  IORING_OP.NOP,
  IORING_OP.READV,
  IORING_OP.WRITEV,
  IORING_OP.FSYNC,
  IORING_OP.READ_FIXED,
  IORING_OP.WRITE_FIXED,
  IORING_OP.READ,
  IORING_OP.WRITE,
  IORING_OP.MSG_RING,
  IORING_OP.TIMEOUT,
  IORING_OP.TIMEOUT_REMOVE,
  IORING_OP.LINK_TIMEOUT,
  IORING_OP.FILES_UPDATE,
];

function u64(x: bigint): string {
  return BigInt.asUintN(64, x).toString();
}

function genAddr(rng: Rng): AddrRef {
  const r = rng.float();
  if (r < 0.85) {
    const buf = rng.int(NR_BUFS);
    // Mostly inside the buffer; sometimes at its end, in the guard gap after it.
    const off = rng.chance(0.8)
      ? rng.pick([0, 512, 4096, 8192, 512 * rng.int(128), rng.int(BUF_BYTES)])
      : BUF_BYTES - rng.pick([0, 1, 100, 512, 4096]) + rng.pick([0, 0, 100, 4095]);
    return { buf, off };
  }
  return {
    raw: u64(
      rng.pick([0n, 1n, 0xdead0000n, 0x7fff_ffff_f000n, 1n << 63n, -1n, BigInt(rng.nextU32())]),
    ),
  };
}

function genFd(rng: Rng): FdRef {
  const r = rng.float();
  if (r < 0.55) return { file: rng.int(NR_FILES) };
  if (r < 0.9) {
    return { raw: rng.chance(0.7) ? rng.int(6) : rng.pick([-1, -2, 1 << 20, 0x7fffffff]) };
  }
  return { ring: rng.int(NR_RINGS) };
}

/** A well-formed SQE: it reaches real I/O (on a fixed slot when the tables are registered). */
function genSaneSqe(rng: Rng): SqeSpec {
  const opcode = rng.pick(SANE);
  let flags = rng.chance(0.3) ? IOSQE.FIXED_FILE : 0;
  if (rng.chance(0.15)) flags |= IOSQE.IO_LINK;
  if (rng.chance(0.03)) flags |= IOSQE.IO_HARDLINK;
  if (rng.chance(0.05)) flags |= IOSQE.ASYNC;
  if (rng.chance(0.05)) flags |= IOSQE.CQE_SKIP_SUCCESS;
  const buf = rng.int(NR_BUFS);
  const len = 512 * rng.range(1, 32);
  const off = 512 * rng.int((BUF_BYTES - len) / 512 + 1);
  const msg = opcode === IORING_OP.MSG_RING;
  return {
    opcode,
    flags: msg ? flags & ~IOSQE.FIXED_FILE : flags,
    ioprio: 0,
    fd: msg ? { ring: rng.int(NR_RINGS) } : { file: rng.chance(0.4) ? 1 : rng.int(NR_FILES) },
    off: u64(BigInt(512 * rng.int(2048))),
    addr: msg ? { raw: "0" } : { buf, off },
    len: opcode === IORING_OP.READV || opcode === IORING_OP.WRITEV ? rng.range(1, 4) : len,
    rwFlags: opcode === IORING_OP.NOP ? 0 : rng.chance(0.9) ? 0 : rng.pick([2, 4, 0x10, 0x80]),
    bufIndex: buf,
    personality: 0,
    fileIndex: 0,
    addr3: { raw: "0" },
    pad2: "0",
  };
}

/** A well-formed timeout-family or FILES_UPDATE SQE (their fields drawn from what makes sense). */
function genTimeoutSqe(rng: Rng): SqeSpec {
  const opcode = rng.pick(TIMEOUT_OPS);
  let flags = 0;
  if (rng.chance(0.3)) flags |= IOSQE.IO_LINK;
  if (rng.chance(0.05)) flags |= IOSQE.IO_HARDLINK;
  if (rng.chance(0.05)) flags |= IOSQE.ASYNC;
  if (rng.chance(0.1)) flags |= IOSQE.CQE_SKIP_SUCCESS;
  const tflags = rng.pick([0, 0, 0, 1, 4, 8, 0x20, 0x40, 0x40, 0x60]); // ABS, clocks, ETIME_SUCCESS, MULTISHOT
  const spec: SqeSpec = {
    opcode,
    flags,
    ioprio: 0,
    fd: { raw: 0 },
    off: "0",
    addr: { ts: rng.int(TIMESPECS_NS.length - 1) },
    len: 1,
    rwFlags: tflags,
    bufIndex: 0,
    personality: 0,
    fileIndex: 0,
    addr3: { raw: "0" },
    pad2: "0",
  };
  if (opcode === IORING_OP.TIMEOUT) {
    spec.off = String(rng.chance(0.5) ? 0 : rng.pick([1, 2, 3, 8, 0xffffffff]));
    if (rng.chance(0.03)) spec.addr = { ts: TIMESPECS_NS.length - 1 };
  } else if (opcode === IORING_OP.LINK_TIMEOUT) {
    spec.rwFlags &= ~0x40;
  } else if (opcode === IORING_OP.TIMEOUT_REMOVE) {
    spec.addr = { prevUd: rng.range(1, 8) };
    spec.len = 0;
    spec.rwFlags = rng.pick([0, 0, 2, 0x12]); // remove, UPDATE, UPDATE|LINK_TIMEOUT_UPDATE
    if (spec.rwFlags) spec.off = `ts:${rng.int(TIMESPECS_NS.length - 1)}`;
  } else {
    spec.addr = { fds: true };
    spec.len = rng.range(1, NR_FILES + 1);
    spec.off = String(rng.chance(0.8) ? rng.int(NR_FILES) : 0xffffffff);
    spec.rwFlags = 0;
  }
  return spec;
}

function genSqe(rng: Rng): SqeSpec {
  if (rng.chance(0.1)) return genTimeoutSqe(rng);
  if (rng.chance(0.75 / 0.9)) return genSaneSqe(rng);
  const opcode = rng.chance(0.9) ? rng.pick(IMPLEMENTED) : rng.int(256);
  // IOSQE flags: mostly the common ones, sometimes every bit (0x80 is invalid).
  let flags = 0;
  if (rng.chance(0.15)) flags |= IOSQE.FIXED_FILE;
  if (rng.chance(0.04)) flags |= IOSQE.IO_DRAIN;
  if (rng.chance(0.2)) flags |= IOSQE.IO_LINK;
  if (rng.chance(0.06)) flags |= IOSQE.IO_HARDLINK;
  if (rng.chance(0.08)) flags |= IOSQE.ASYNC;
  if (rng.chance(0.04)) flags |= IOSQE.BUFFER_SELECT;
  if (rng.chance(0.1)) flags |= IOSQE.CQE_SKIP_SUCCESS;
  if (rng.chance(0.02)) flags = rng.int(256);
  const rwBits = [0, 0, 0, 0, 1, 2, 4, 8, 0x10, 0x20, 0x40, 0x80, 0x100, 0x200, 1 << 31];
  return {
    opcode,
    flags,
    ioprio: rng.chance(0.85)
      ? 0
      : rng.pick([1, 7, 1 << 13, (2 << 13) | 7, 3 << 13, 4 << 13, 0xffff, 8]),
    fd: genFd(rng),
    off: u64(rng.chance(0.7) ? BigInt(512 * rng.int(512)) : rng.pick(INTERESTING_OFF)),
    addr: genAddr(rng),
    len: rng.chance(0.6)
      ? rng.pick([512, 4096, 8192, 16384, 512 * rng.range(1, 64)])
      : rng.pick(INTERESTING_LEN),
    rwFlags: rng.chance(0.1) ? rng.nextU32() : rng.pick(rwBits),
    bufIndex: rng.chance(0.9) ? rng.int(NR_BUFS + 1) : rng.pick([0xffff, 1 << 14]),
    personality: rng.chance(0.97) ? 0 : rng.int(4),
    fileIndex: rng.chance(0.9) ? 0 : rng.nextU32() % 8,
    addr3: rng.chance(0.9) ? { raw: "0" } : genAddr(rng),
    pad2: rng.chance(0.92) ? "0" : u64(rng.pick([1n, 2n, 1n << 63n, -1n])),
    badIndex: rng.chance(0.005) ? true : undefined,
  };
}

/** Register opcodes the fuzzer calls: every number to 40, weighted to the modelled ones. */
const MODELLED_REGISTER = [0, 1, 2, 3, 6, 8, 11, 13, 14, 15, 16, 38, 39];

function genReg(rng: Rng, ring: number): FuzzOp {
  const opcode = rng.chance(0.85)
    ? rng.pick(MODELLED_REGISTER)
    : rng.int(41) | (rng.chance(0.05) ? 1 << 31 : 0);
  const nr = rng.chance(0.6) ? rng.range(0, NR_BUFS + 2) : rng.pick([
    32,
    1,
    256,
    1024,
    1025,
    1 << 14,
    (1 << 14) + 1,
    1 << 20,
    (1 << 20) + 1,
    0x7fffffff,
    0xffffffff,
  ]);
  if (rng.chance(0.15)) return { k: "reg", ring, opcode, nr, arg: null };
  const len = rng.pick([0, 4, 8, 16, 32, 32, 32, 64, 16 * NR_BUFS]);
  const u32: [number, number][] = [];
  const ptrs: [number, AddrRef][] = [];
  let fill: ArgSpec["fill"];
  // Shapes: an rsrc_register/update2 (nr, flags/offset, data, tags), a map_buffers, or noise.
  const shape = rng.int(4);
  if (shape === 0 && len >= 32) {
    u32.push([
      0,
      rng.chance(0.7) ? rng.range(1, NR_BUFS + 1) : rng.pick([0, 0xffffffff, (1 << 20) + 1]),
    ]);
    u32.push([4, rng.chance(0.7) ? rng.int(3) : rng.nextU32()]);
    const data = rng.chance(0.2) ? { raw: "0" } : genAddr(rng);
    ptrs.push([16, data]);
    // Tags: the fuzzer's tag array (TAG_BASE + i), or garbage (the guard's -EFAULT).
    if (rng.chance(0.15)) ptrs.push([24, rng.chance(0.8) ? { tag: 0 } : genAddr(rng)]);
    if ("buf" in data) fill = { at: data, kind: rng.chance(0.5) ? "fds" : "iovecs", n: NR_BUFS };
  } else if (shape === 1 && len >= 32) {
    // io_uring_map_buffers { s32 fd, buf_start, buf_end; u32 flags; ... }
    u32.push([0, rng.int(NR_FILES + 1)], [4, rng.int(NR_BUFS)], [8, rng.range(0, NR_BUFS + 2)]);
    if (rng.chance(0.1)) u32.push([12, 1]);
  } else if (shape === 2 && len >= 16) {
    // A direct iovec or fd array: its entries written at run time.
    const at = { buf: 3, off: 0 };
    fill = { at, kind: rng.chance(0.5) ? "fds" : "iovecs", n: Math.min(NR_BUFS, len / 16) };
  } else {
    for (let i = 0; i + 4 <= len; i += 4) if (rng.chance(0.3)) u32.push([i, rng.nextU32()]);
  }
  return { k: "reg", ring, opcode, nr, arg: { len, u32, ptrs, fill } };
}

/** The operations of one run, from `seed` alone. */
export function generate(seed: number, nOps: number): FuzzOp[] {
  const rng = new Rng(seed);
  const ops: FuzzOp[] = [];
  for (let f = 0; f < NR_FILES; f++) {
    ops.push({ k: "open", file: f, flags: f === 0 ? O.RDWR : O.RDWR | O.DIRECT });
  }
  while (ops.length < nOps) {
    const ring = rng.int(NR_RINGS);
    const r = rng.float();
    if (r < 0.6) {
      ops.push({ k: "sqe", ring, s: genSqe(rng) });
    } else if (r < 0.8) {
      ops.push({ k: "submit", ring, wait: rng.chance(0.7) ? 0 : rng.range(1, 4) });
    } else if (r < 0.87) {
      ops.push({ k: "reap", ring, max: rng.chance(0.5) ? 1 << 30 : rng.range(1, 8) });
    } else if (r < 0.91) {
      ops.push(genReg(rng, ring));
    } else if (r < 0.945) {
      // Well-formed tables: every file in its slot, every buffer whole (or unregister).
      const files = rng.chance(0.5);
      const opcode = files ? 2 : 0;
      if (rng.chance(0.25)) {
        ops.push({ k: "reg", ring, opcode: opcode + 1, nr: 0, arg: null });
      } else {
        const n = files ? NR_FILES : NR_BUFS;
        const fill = {
          at: { buf: 3, off: 0 },
          kind: files ? "fds" as const : "iovecs" as const,
          n,
        };
        ops.push({
          k: "reg",
          ring,
          opcode,
          nr: n,
          arg: { len: files ? 4 * n : 16 * n, u32: [], ptrs: [], fill },
        });
      }
    } else if (r < 0.965) {
      const file = rng.int(NR_FILES);
      const flags = rng.pick([O.RDWR, O.RDWR | O.DIRECT, O.RDONLY, O.RDONLY | O.DIRECT, O.WRONLY]);
      ops.push(rng.chance(0.5) ? { k: "open", file, flags } : { k: "close", file });
    } else if (r < 0.975) {
      const buf = rng.int(NR_BUFS);
      ops.push(rng.chance(0.5) ? { k: "munmap", buf } : { k: "mmap", buf });
    } else if (r < 0.985) {
      ops.push({ k: "fill", buf: rng.int(NR_BUFS), byte: rng.pick([0, 0xff, rng.int(256)]) });
    } else {
      const flags = rng.chance(0.8) ? 0 : rng.pick([
        IORING_SETUP.CQSIZE,
        IORING_SETUP.SUBMIT_ALL,
        IORING_SETUP.SQPOLL,
        IORING_SETUP.NO_SQARRAY,
        IORING_SETUP.SINGLE_ISSUER | IORING_SETUP.DEFER_TASKRUN,
        IORING_SETUP.IOPOLL,
        1 << 30,
      ]);
      ops.push({ k: "teardown", ring, entries: rng.pick([1, 2, 4, 8, 16, 64, 0, 1 << 20]), flags });
    }
  }
  return ops;
}

// ---------------------------------------------------------------- runner

/** Bookkeeping for one SQE the fuzzer queued. */
interface Pending {
  op: number;
  opcode: number;
  flags: number;
  chain: number;
  dropped: boolean;
  cqes: number;
  /** A multishot TIMEOUT: it re-arms for ever (or 2^32 - 1 times) while its CQEs are reaped. */
  endless: boolean;
}

class FuzzRing {
  readonly ring: SimRing;
  readonly sqes = new Map<bigint, Pending>();
  readonly skipChains = new Set<number>();
  chain = 0;
  linkOpen = false;
  dropped = 0;
  constructor(ring: SimRing) {
    this.ring = ring;
  }
}

class Violation extends Error {
  constructor(readonly invariant: string, detail: string) {
    super(detail);
  }
}

const isRw = (op: number) =>
  op === IORING_OP.READ || op === IORING_OP.WRITE || op === IORING_OP.READV ||
  op === IORING_OP.WRITEV || op === IORING_OP.READ_FIXED || op === IORING_OP.WRITE_FIXED;

/** One fuzz run's world: a host, its files, buffers and rings. */
class World implements Disposable {
  readonly k: Kernel;
  readonly host: NvmeHost;
  readonly cfg: FuzzConfig;
  readonly bufs: (Vma | null)[] = [];
  /** Timespecs, the tag array and the fd array (never unmapped, never filled by I/O). */
  readonly aux: Vma;
  /** user_data of the SQEs queued so far, newest last (TIMEOUT_REMOVE targets). */
  readonly #uds: bigint[] = [];
  readonly fds: number[] = new Array(NR_FILES).fill(-1);
  readonly files = new Set<File>();
  readonly rings: (FuzzRing | null)[] = [];
  readonly outcomes = new Map<string, number>();
  #ud = 1n;
  sqes = 0;
  cqes = 0;
  tagCqes = 0;

  constructor(seed: number, cfg: FuzzConfig) {
    this.cfg = cfg;
    this.k = new Kernel({ seed, timing: false, premap: cfg.premap });
    this.host = attachNvme(this.k, {
      iommu: cfg.iommu,
      namespaces: [{ lbaSize: 512, sizeBytes: 64n << 20n }],
    });
    for (let i = 0; i < NR_BUFS; i++) this.bufs.push(this.k.mm.mmap(BUF_BYTES));
    this.aux = this.k.mm.mmap(AUX_BYTES);
    const av = new DataView(this.aux.bytes.buffer, this.aux.bytes.byteOffset);
    TIMESPECS_NS.forEach((ns, i) => {
      av.setBigInt64(AUX.ts + 16 * i, ns / 1_000_000_000n, true);
      av.setBigInt64(AUX.ts + 16 * i + 8, ns % 1_000_000_000n, true);
    });
    for (let i = 0; i < NR_TAGS; i++) av.setBigUint64(AUX.tags + 8 * i, TAG_BASE + BigInt(i), true);
    for (let i = 0; i < NR_RINGS; i++) this.rings.push(this.#newRing(8, 0));
  }

  #newRing(entries: number, flags: number): FuzzRing | null {
    const p = new Uint8Array(PARAMS.SIZE);
    const v = new DataView(p.buffer);
    v.setUint32(PARAMS.flags, flags, true);
    v.setUint32(PARAMS.cqEntries, 2 * entries, true);
    const r = SimRing.setup(this.k, entries, p);
    return typeof r === "number" ? null : new FuzzRing(r);
  }

  path(file: number): string {
    return file === 1 ? this.host.namespaces[0].path : `/fuzz${file}`;
  }

  addr(a: AddrRef): bigint {
    if ("raw" in a) return BigInt(a.raw);
    if ("ts" in a) return this.aux.start + BigInt(AUX.ts + 16 * a.ts);
    if ("tag" in a) return this.aux.start + BigInt(AUX.tags + 8 * a.tag);
    if ("fds" in a) {
      const av = new DataView(this.aux.bytes.buffer, this.aux.bytes.byteOffset);
      for (let i = 0; i < NR_FILES; i++) av.setInt32(AUX.fds + 4 * i, this.fds[i], true);
      return this.aux.start + BigInt(AUX.fds);
    }
    if ("prevUd" in a) return this.#uds[this.#uds.length - a.prevUd] ?? 0n;
    const v = this.bufs[a.buf];
    // An unmapped buffer's address stays what it was: a use after munmap.
    return (v?.start ?? BigInt(0x7f00_0000_0000 + a.buf * (BUF_BYTES + 4096))) + BigInt(a.off);
  }

  fd(ref: FdRef): number {
    if ("file" in ref) return this.fds[ref.file];
    if ("ring" in ref) return this.rings[ref.ring]?.ring.fd ?? -1;
    return ref.raw;
  }

  run(op: FuzzOp, index: number): void {
    switch (op.k) {
      case "sqe":
        return this.#sqe(op.ring, op.s, index);
      case "submit": {
        const fr = this.rings[op.ring];
        if (!fr) return;
        // A link open at the end of a submission ends there, but a submission that stops
        // at a failed SQE leaves the rest queued: chains are tracked in push order, which
        // can only join more SQEs into a chain (a lenient bound on the skipped CQEs).
        fr.ring.submit(op.wait);
        return;
      }
      case "reap": {
        const fr = this.rings[op.ring];
        if (fr) this.#reap(fr, op.max);
        return;
      }
      case "reg":
        return this.#reg(op);
      case "open": {
        if (this.fds[op.file] >= 0) sysClose(this.k, this.fds[op.file]);
        this.fds[op.file] = -1;
        let flags = op.flags;
        if (op.file === 1) flags |= O.DIRECT; // the block device takes O_DIRECT only
        else flags |= O.CREAT;
        const fd = doSysOpen(this.k, this.path(op.file), flags);
        if (fd >= 0) {
          this.fds[op.file] = fd;
          this.files.add(this.k.files.lookup(fd)!);
        }
        return;
      }
      case "close":
        if (this.fds[op.file] >= 0) sysClose(this.k, this.fds[op.file]);
        this.fds[op.file] = -1;
        return;
      case "munmap": {
        const v = this.bufs[op.buf];
        if (v) this.k.mm.munmap(v.start);
        this.bufs[op.buf] = null;
        return;
      }
      case "mmap":
        if (!this.bufs[op.buf]) this.bufs[op.buf] = this.k.mm.mmap(BUF_BYTES);
        return;
      case "fill":
        this.bufs[op.buf]?.bytes.fill(op.byte);
        return;
      case "teardown": {
        const fr = this.rings[op.ring];
        if (fr) {
          // Half the time drain and account first; otherwise tear down with I/O in flight.
          if (index % 2 === 0) this.checkpoint(fr);
          fr.ring[Symbol.dispose]();
          if (fr.ring.inflight !== 0) {
            throw new Violation("teardown", `${fr.ring.inflight} requests in flight after close`);
          }
        }
        this.rings[op.ring] = this.#newRing(op.entries, op.flags) ?? this.#newRing(8, 0);
        return;
      }
    }
  }

  #sqe(ringIx: number, s: SqeSpec, index: number): void {
    const fr = this.rings[ringIx];
    if (!fr) return;
    const ud = this.#ud++;
    let off = s.off.startsWith("ts:") ? this.addr({ ts: Number(s.off.slice(3)) }) : BigInt(s.off);
    if (s.opcode === IORING_OP.MSG_RING) off = MSG_UD_BASE + ud;
    const fixed = (s.flags & IOSQE.FIXED_FILE) !== 0;
    const fd = fixed && "file" in s.fd ? s.fd.file : this.fd(s.fd);
    const bytes = new Uint8Array(SQE.SIZE);
    writeSqe(new DataView(bytes.buffer), 0, {
      opcode: s.opcode,
      flags: s.flags,
      ioprio: s.ioprio,
      fd,
      off,
      addr: this.#sqeAddr(s),
      len: s.len,
      rwFlags: s.rwFlags,
      userData: ud,
      bufIndex: s.bufIndex,
      personality: s.personality,
      fileIndex: s.fileIndex,
      addr3: this.addr(s.addr3),
      pad2: BigInt(s.pad2),
    });
    if (!fr.ring.pushSqe(bytes)) return; // SQ full: not queued, not counted
    this.#uds.push(ud);
    if (this.#uds.length > 64) this.#uds.shift();
    if (s.badIndex && fr.ring.sqArrayOff) {
      const v = new DataView(fr.ring.ringBytes.buffer);
      const tail = v.getUint32(IO_RINGS.sqTail, true) - 1;
      v.setUint32(fr.ring.sqArrayOff + 4 * (tail & (fr.ring.sqEntries - 1)), 0xffff_fff0, true);
    }
    if (!fr.linkOpen) fr.chain++;
    fr.linkOpen = (s.flags & (IOSQE.IO_LINK | IOSQE.IO_HARDLINK)) !== 0;
    if (s.flags & IOSQE.CQE_SKIP_SUCCESS) fr.skipChains.add(fr.chain);
    fr.sqes.set(ud, {
      op: index,
      opcode: s.opcode,
      flags: s.flags,
      chain: fr.chain,
      dropped: !!s.badIndex && fr.ring.sqArrayOff !== 0,
      cqes: 0,
      endless: s.opcode === IORING_OP.TIMEOUT && (s.rwFlags & IORING_TIMEOUT.MULTISHOT) !== 0,
    });
    this.sqes++;
  }

  /** READV/WRITEV take an iovec array: build one in buffer 3's tail when addr names a buffer. */
  #sqeAddr(s: SqeSpec): bigint {
    if ((s.opcode === IORING_OP.READV || s.opcode === IORING_OP.WRITEV) && "buf" in s.addr) {
      const v = this.bufs[3];
      if (v && s.len >= 1 && s.len <= 4) {
        const dv = new DataView(v.bytes.buffer, v.bytes.byteOffset);
        const at = BUF_BYTES - 64;
        for (let i = 0; i < s.len; i++) {
          dv.setBigUint64(
            at + 16 * i,
            this.addr({ buf: (s.addr.buf + i) % NR_BUFS, off: s.addr.off }),
            true,
          );
          dv.setBigUint64(at + 16 * i + 8, BigInt(4096 >> i), true);
        }
        return v.start + BigInt(at);
      }
    }
    return this.addr(s.addr);
  }

  #reg(op: Extract<FuzzOp, { k: "reg" }>): void {
    const fr = this.rings[op.ring];
    if (!fr) return;
    let arg: Uint8Array | null = null;
    if (op.arg) {
      arg = new Uint8Array(op.arg.len);
      const v = new DataView(arg.buffer);
      for (const [at, x] of op.arg.u32) if (at + 4 <= arg.length) v.setUint32(at, x >>> 0, true);
      for (const [at, p] of op.arg.ptrs) {
        if (at + 8 <= arg.length) v.setBigUint64(at, this.addr(p), true);
      }
      const f = op.arg.fill;
      if (f && "buf" in f.at) {
        const vma = this.bufs[f.at.buf];
        if (vma) {
          const dv = new DataView(vma.bytes.buffer, vma.bytes.byteOffset);
          const base = Math.min(f.at.off, BUF_BYTES - 16 * f.n);
          for (let i = 0; i < f.n; i++) {
            if (f.kind === "fds") dv.setInt32(base + 4 * i, i < NR_FILES ? this.fds[i] : -1, true);
            else {
              dv.setBigUint64(base + 16 * i, this.bufs[i]?.start ?? 0n, true);
              dv.setBigUint64(
                base + 16 * i + 8,
                BigInt(this.bufs[i] ? BUF_BYTES >> (i & 1) : 0),
                true,
              );
            }
          }
        }
        // A direct array (shape 2) is the argument itself.
        if (op.arg.ptrs.length === 0 && op.arg.u32.length === 0 && vma) {
          arg.set(
            vma.bytes.subarray(Math.min(f.at.off, BUF_BYTES - arg.length)).subarray(0, arg.length),
          );
        }
      }
    }
    fr.ring.register(op.opcode, arg, op.nr);
  }

  #reap(fr: FuzzRing, max: number): void {
    for (const c of fr.ring.reap(max)) {
      this.cqes++;
      const key = c.res >= 0 ? "ok" : `${-c.res}`;
      this.outcomes.set(key, (this.outcomes.get(key) ?? 0) + 1);
      if (c.userData >= MSG_UD_BASE && c.userData < MSG_UD_BASE + (1n << 48n)) continue;
      if (c.userData >= TAG_BASE && c.userData < TAG_BASE + BigInt(NR_TAGS)) {
        // A tagged file or buffer left its table and its last user is done: (tag, 0, 0).
        if (c.res !== 0 || c.flags !== 0) {
          throw new Violation(
            "tag CQE",
            `tag ${c.userData - TAG_BASE} res ${c.res} flags ${c.flags}`,
          );
        }
        this.tagCqes++;
        continue;
      }
      let p: Pending | undefined;
      for (const r of this.rings) if (r && (p = r.sqes.get(c.userData))) break;
      if (!p) throw new Violation("unknown CQE", `user_data ${c.userData} res ${c.res}`);
      // IORING_CQE_F_MORE: a multishot timeout's expiry; the request goes on.
      if (c.flags & IORING_CQE_F.MORE) {
        if (p.opcode !== IORING_OP.TIMEOUT) {
          throw new Violation("F_MORE", `user_data ${c.userData} opcode ${p.opcode}`);
        }
        continue;
      }
      if (++p.cqes > 1) {
        throw new Violation("completed twice", `user_data ${c.userData} (op ${p.op}) res ${c.res}`);
      }
      if ((p.flags & IOSQE.CQE_SKIP_SUCCESS) && c.res >= 0 && !isRw(p.opcode)) {
        throw new Violation(
          "CQE_SKIP_SUCCESS",
          `user_data ${c.userData} (op ${p.op}) posted res ${c.res}`,
        );
      }
    }
  }

  /** The ring invariants that hold after every operation. */
  checkRings(): void {
    for (const fr of this.rings) {
      if (!fr || fr.ring.fd < 0) continue;
      const r = fr.ring;
      const v = new DataView(r.ringBytes.buffer);
      const sq = (v.getUint32(IO_RINGS.sqTail, true) - v.getUint32(IO_RINGS.sqHead, true)) >>> 0;
      if (sq > r.sqEntries) throw new Violation("sq head/tail", `${sq} queued in ${r.sqEntries}`);
      if (r.cqReady > r.cqEntries) {
        throw new Violation("cq head/tail", `${r.cqReady} in ${r.cqEntries}`);
      }
      if (v.getUint32(IO_RINGS.cqOverflow, true) !== 0) {
        throw new Violation("NODROP", `cq_overflow ${v.getUint32(IO_RINGS.cqOverflow, true)}`);
      }
      const flag = (v.getUint32(IO_RINGS.sqFlags, true) & IORING_SQ.CQ_OVERFLOW) !== 0;
      if (flag !== r.overflowPending > 0) {
        throw new Violation("overflow flag", `flag ${flag}, ${r.overflowPending} waiting`);
      }
    }
  }

  /** Submit what is queued, wait for everything in flight, reap, and account for every SQE. */
  checkpoint(fr: FuzzRing): void {
    const r = fr.ring;
    for (let i = 0; i < 64 && r.sqSpace < r.sqEntries; i++) r.submit(0);
    fr.linkOpen = false;
    for (let i = 0; i < 1024 && (r.inflight > 0 || r.cqReady > 0 || r.overflowPending > 0); i++) {
      // A multishot TIMEOUT whose CQEs are reaped may not end for ages: remove it by
      // user_data (it completes with -ECANCELED), as a user would.
      if (i === 64) this.#removeEndless(fr);
      r.submit(r.inflight > 0 ? 1 : 0);
      this.#reap(fr, Infinity);
    }
    // A multishot TIMEOUT ahead of an IOSQE_IO_DRAIN holds the drain, and everything queued
    // after the drain (the TIMEOUT_REMOVE too), for as long as it runs: the kernel does the
    // same. That is pending on something the fuzzer can name; teardown cancels it.
    const heldByMultishot = [...fr.sqes.values()].some((p) => p.endless && !p.cqes);
    if (r.inflight !== 0 && !heldByMultishot) {
      throw new Violation("drain", `${r.inflight} still in flight`);
    }
    const v = new DataView(r.ringBytes.buffer);
    const head = v.getUint32(IO_RINGS.sqHead, true);
    const tail = v.getUint32(IO_RINGS.sqTail, true);
    const unconsumed = (tail - head) >>> 0; // left in the SQ (the ring never took them)
    let left = 0;
    const all = [...fr.sqes.entries()];
    for (let i = all.length - unconsumed; i < all.length; i++) if (i >= 0) left++;
    for (let i = 0; i < all.length - left; i++) {
      const [ud, p] = all[i];
      if (p.cqes === 1 || p.dropped || (heldByMultishot && r.inflight)) continue;
      if ((p.flags & IOSQE.CQE_SKIP_SUCCESS) || fr.skipChains.has(p.chain)) continue;
      throw new Violation(
        "lost CQE",
        `user_data ${ud} (op ${p.op}, opcode ${p.opcode}) never completed`,
      );
    }
    const dropped = v.getUint32(IO_RINGS.sqDropped, true);
    const expectDropped = all.filter(([, p]) => p.dropped).length;
    if (dropped > expectDropped) throw new Violation("sq_dropped", `${dropped} > ${expectDropped}`);
    fr.sqes.clear();
    fr.skipChains.clear();
  }

  /** Queue a TIMEOUT_REMOVE for every endless multishot TIMEOUT still pending on `fr`. */
  #removeEndless(fr: FuzzRing): void {
    for (const [ud, p] of fr.sqes) {
      if (p.opcode !== IORING_OP.TIMEOUT || p.cqes || !p.endless) continue;
      const rud = this.#ud++;
      const bytes = new Uint8Array(SQE.SIZE);
      writeSqe(new DataView(bytes.buffer), 0, {
        opcode: IORING_OP.TIMEOUT_REMOVE,
        addr: ud,
        userData: rud,
      });
      if (!fr.ring.pushSqe(bytes)) return;
      fr.sqes.set(rud, {
        op: -1,
        opcode: IORING_OP.TIMEOUT_REMOVE,
        flags: 0,
        chain: ++fr.chain,
        dropped: false,
        cqes: 0,
        endless: false,
      });
    }
  }

  /** Tear everything down and check nothing is left behind. */
  finish(): void {
    for (const fr of this.rings) {
      if (!fr) continue;
      this.checkpoint(fr);
      fr.ring[Symbol.dispose]();
      if (fr.ring.inflight) throw new Violation("teardown", `${fr.ring.inflight} in flight`);
    }
    for (let f = 0; f < NR_FILES; f++) if (this.fds[f] >= 0) sysClose(this.k, this.fds[f]);
    this.fds.fill(-1);
    for (const file of this.files) {
      if (file.refcount !== 0) {
        throw new Violation("file refs", `${file.path} keeps ${file.refcount} references`);
      }
    }
    for (const v of this.bufs) if (v) this.k.mm.munmap(v.start);
    this.bufs.fill(null);
    const c = this.k.stats.counters;
    if (c.pagesPinned !== c.pagesUnpinned) {
      throw new Violation("pins", `${c.pagesPinned} pinned, ${c.pagesUnpinned} unpinned`);
    }
    if (this.cfg.premap === "hardened" && (c.iommuFaults || c.dmaDebugErrors)) {
      throw new Violation(
        "hardened",
        `${c.iommuFaults} IOMMU faults, ${c.dmaDebugErrors} DMA-API debug reports`,
      );
    }
  }

  [Symbol.dispose](): void {
    try {
      for (const fr of this.rings) fr?.ring[Symbol.dispose]();
      this.host[Symbol.dispose]();
    } catch {
      // A broken world is reported by the invariant that broke it.
    }
  }
}

/** Execute `ops` on a fresh host; the first invariant that breaks, if any. */
export function execute(seed: number, ops: readonly FuzzOp[], cfg: FuzzConfig): FuzzResult {
  const res: FuzzResult = {
    seed,
    ops: 0,
    sqes: 0,
    cqes: 0,
    outcomes: new Map(),
    nvmeCommands: 0,
    failure: null,
  };
  let w: World | undefined;
  let i = -1;
  try {
    w = new World(seed, cfg);
    for (i = 0; i < ops.length; i++) {
      w.run(ops[i], i);
      w.checkRings();
      res.ops++;
    }
    i = ops.length;
    w.finish();
  } catch (e) {
    const invariant = e instanceof Violation ? e.invariant : "exception";
    const detail = e instanceof Error
      ? `${e.message}${e instanceof Violation ? "" : `\n${e.stack}`}`
      : String(e);
    res.failure = { op: i, invariant, detail };
  } finally {
    if (w) {
      res.sqes = w.sqes;
      res.cqes = w.cqes;
      res.outcomes = w.outcomes;
      res.nvmeCommands = w.k.stats.counters.nvmeCommands;
      w[Symbol.dispose]();
    }
  }
  return res;
}

/** The configuration a seed runs with: both premap variants, every IOMMU mode. */
export function configFor(seed: number): FuzzConfig {
  const modes: IommuMode[] = ["off", "passthrough", "lazy", "strict", "bounce"];
  return { premap: seed % 2 ? "hardened" : "v2", iommu: modes[(seed >>> 1) % modes.length] };
}

/**
 * Shrink a failing run: drop chunks of operations while the same invariant
 * still breaks (bounded in executions).
 */
export function minimize(
  seed: number,
  ops: FuzzOp[],
  cfg: FuzzConfig,
  invariant: string,
  maxRuns = 300,
): FuzzOp[] {
  return shrinkByChunks(
    ops,
    (cand) => execute(seed, cand, cfg).failure?.invariant === invariant,
    maxRuns,
  );
}

/** JSON for a case: bigints are already strings in the specs. */
export function describeOps(ops: readonly FuzzOp[]): string {
  return ops.map((o, i) => `  ${i}: ${JSON.stringify(o)}`).join("\n");
}
