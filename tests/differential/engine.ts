/**
 * Differential engine: run one sequence of io_uring operations on the `sim`
 * backend and on the live kernel (`real`), and report the first step where
 * they disagree: a register result, a submit result, the set of CQEs of a
 * batch, the bytes of a buffer after a batch, or a file's final contents.
 *
 * Operations name files and buffers by small indexes, so the same sequence
 * means the same thing on both backends although descriptors and addresses
 * differ.
 *
 * @module
 */

import { openTestbed } from "../../mod.ts";
import { RingWrapper } from "../../ffi/ring_wrapper.ts";
import { describeResult } from "../../sim/uapi/errno.ts";
import {
  encodeRsrcRegister,
  encodeRsrcUpdate2,
  IORING_OP,
  IORING_REGISTER,
  IORING_TIMEOUT,
  IOSQE,
  O,
  type SqeFields,
} from "../../sim/uapi/io_uring.ts";
import { SimTestbed } from "../../sim/testbed.ts";
import { encodeIovecs, type Ring, type UserBuffer } from "../../sim/uapi/ring_api.ts";
import type { Testbed } from "../../sim/uapi/testbed.ts";
import { LiveRing } from "../../ffi/liburing.ts";
import { processNofileLimit } from "../../ffi/libc.ts";
import { IO_RINGS, SimRing } from "../../sim/io_uring/io_uring.ts";

/** Size of each test buffer. */
export const BUF_BYTES = 64 * 1024;
/** Number of test buffers per testbed. */
export const NR_BUFS = 4;
/** Number of scratch files. */
export const NR_FILES = 3;

/** A reference to a file for an SQE: a descriptor (by file index) or a fixed slot. */
export type FileRef = { fd: number } | { slot: number } | { rawFd: number };

/**
 * A file for a register or update array: a file index (0..NR_FILES-1), -1
 * (a sparse slot, or removal), -2 (IORING_REGISTER_FILES_SKIP), or a raw
 * descriptor number.
 */
export type FdSel = number | { raw: number };

/** A timespec for a timeout SQE; `abs` makes it that far after now on the timeout's clock. */
export interface Ts {
  /** tv_sec */
  sec: number;
  /** tv_nsec */
  nsec: number;
  /** IORING_TIMEOUT_ABS: the expiry is now (read from the backend's clock) plus sec/nsec. */
  abs?: boolean;
}

/** A buffer range: buffer index, offset, length. */
export interface BufRange {
  /** Which of the NR_BUFS buffers. */
  buf: number;
  /** Byte offset into it. */
  off: number;
  /** Length. */
  len: number;
}

/** An iovec given as is (a NULL base with a length, a garbage address). */
export interface RawIov {
  /** iov_base */
  addr: bigint;
  /** iov_len */
  len: number;
}

/** A buffer for a register or update array: a range, null (a sparse slot), or a raw iovec. */
export type IovSel = BufRange | null | RawIov;

/** One step of a sequence. */
export type Step =
  | { t: "open"; file: number; flags: number }
  | { t: "close"; file: number }
  | { t: "fill"; buf: number; seed: number; byte?: number }
  /**
   * Register files; with `tags`, through IORING_REGISTER_FILES2 (one u64 tag
   * per slot). `ring` names an extra ring (see the `ring` step), default the
   * main one.
   */
  | { t: "regFiles"; files: FdSel[]; tags?: (number | bigint)[]; ring?: number }
  | { t: "regFilesSparse"; nr: number }
  /** Update file slots; with `tags`, through IORING_REGISTER_FILES_UPDATE2. */
  | { t: "updFiles"; offset: number; files: FdSel[]; tags?: (number | bigint)[]; ring?: number }
  | { t: "unregFiles"; ring?: number }
  /** Register buffers (null: a sparse slot); with `tags`, through IORING_REGISTER_BUFFERS2. */
  | { t: "regBufs"; bufs: IovSel[]; tags?: (number | bigint)[] }
  /** Update buffers; with `tags`, through IORING_REGISTER_BUFFERS_UPDATE with a tag array. */
  | { t: "updBufs"; offset: number; bufs: IovSel[]; tags?: (number | bigint)[] }
  | { t: "unregBufs" }
  /** Open extra ring `ring` (1, 2, ...) with `entries` SQEs. */
  | { t: "ring"; ring: number; entries: number }
  /** Let `ms` milliseconds pass (the virtual clock on sim, a sleep on real), reaping nothing. */
  | { t: "sleep"; ms: number }
  /** Store `n` in the ring's sq dropped counter (user space can write it: liburing's kdropped). */
  | { t: "setSqDropped"; n: number }
  /** Like `drain`, but the CQEs in the order the CQ ring holds them. */
  | { t: "drainOrdered"; expect?: number }
  | {
    t: "sqe";
    op:
      | "nop"
      | "read"
      | "write"
      | "readv"
      | "writev"
      | "readFixed"
      | "writeFixed"
      | "fsync"
      | "timeout"
      | "linkTimeout"
      | "timeoutRemove"
      | "filesUpdate";
    file?: FileRef;
    range?: BufRange;
    iov?: BufRange[];
    pos?: number;
    bufIndex?: number;
    flags?: number;
    /** Raw overrides applied after the op's fields (misuse: reserved fields, bad opcode). */
    raw?: Partial<SqeFields>;
    /** addr3 (attr_ptr) as a buffer address, applied after `raw`. */
    attr?: BufRange;
    /** TIMEOUT/LINK_TIMEOUT: the timespec (addr); TIMEOUT_REMOVE with UPDATE: the new one (addr2). */
    ts?: Ts;
    /** TIMEOUT: completion count (sqe->off). */
    count?: number;
    /** timeout_flags (IORING_TIMEOUT_*). */
    tflags?: number;
    /** TIMEOUT_REMOVE: the step whose SQE's user_data it names. */
    target?: number;
    /** FILES_UPDATE: the fds written to memory at addr, and the offset (0xffffffff: allocate). */
    files?: FdSel[];
    /** FILES_UPDATE offset. */
    offset?: number;
  }
  /**
   * Submit `n` NOPs one enter each without reaping (the CQ overflows), then
   * reap everything, flushing the backlog; observes the overflow counter and
   * whether every CQE arrived, in order.
   */
  | { t: "flood"; n: number }
  | { t: "submit"; wait: number }
  | { t: "reapAll" }
  /**
   * Submit until the SQ is empty, wait (bounded) for every queued request, reap.
   * With `expect`, wait for that many CQEs (skipped ones never come), then
   * briefly for any more.
   */
  | { t: "drain"; expect?: number }
  /** Read the ring's shared flags word and CQ overflow counter (what liburing reads). */
  | { t: "ringState" }
  /** io_uring_enter(to_submit, min_complete 0) without reaping (CQEs stay in the ring). */
  | { t: "enter" }
  /** Reap at most `max` CQEs, in CQ order (no sorting). */
  | { t: "reapOrdered"; max: number }
  /**
   * ring.raw.register with an `argLen`-byte argument: u32 fields and u64
   * pointers written at byte offsets (a pointer is a buffer range's address,
   * or a raw number for garbage). Misuse the register guard must answer alike.
   */
  | {
    t: "rawRegister";
    opcode: number;
    nrArgs: number;
    argLen: number;
    u32?: [number, number][];
    ptrs?: [number, BufRange | bigint][];
  };

/** What one step produced, in comparable form. */
export type Observation = string;

/** One backend's state while running a sequence. */
class Runner implements Disposable {
  readonly tb: Testbed;
  readonly ring: Ring;
  readonly bufs: UserBuffer[] = [];
  readonly fds: number[] = new Array(NR_FILES).fill(-1);
  readonly paths: string[] = [];
  #ud = 0n;
  /** user_data -> step index, to name CQEs independently of order. */
  readonly pending = new Map<bigint, number>();
  readonly #iovs: UserBuffer[] = [];
  /** Extra rings by index (index 0 is `ring`). */
  readonly rings = new Map<number, Ring>();
  /** Step index -> user_data of the SQE it queued. */
  readonly udOf = new Map<number, bigint>();
  /** Memory for FILES_UPDATE fd arrays, read back after completion. */
  readonly #updArrays: { step: number; mem: UserBuffer; files: FdSel[] }[] = [];
  /** CQE results seen: "ok" or the errno, with counts. */
  readonly histogram: Map<string, number>;

  constructor(
    backend: "sim" | "real",
    entries: number,
    histogram = new Map<string, number>(),
    cqEntries?: number,
  ) {
    this.histogram = histogram;
    // RLIMIT_NOFILE comes from the process on both sides, as the kernel takes it.
    this.tb = openTestbed({ backend, seed: 7, rlimitNofile: processNofileLimit() });
    this.ring = this.tb.ring({ entries, cqEntries });
    for (let i = 0; i < NR_BUFS; i++) this.bufs.push(this.tb.allocBuffer(BUF_BYTES));
    for (let i = 0; i < NR_FILES; i++) this.paths.push(this.tb.tempPath(`diff-${i}.dat`));
  }

  addr(r: BufRange): bigint {
    return this.bufs[r.buf].addr + BigInt(r.off);
  }

  fdOf(ref: FileRef): { fd: number; fixed: boolean } {
    if ("slot" in ref) return { fd: ref.slot, fixed: true };
    if ("rawFd" in ref) return { fd: ref.rawFd, fixed: false };
    return { fd: this.fds[ref.fd], fixed: false };
  }

  fileFd(i: FdSel): number {
    if (typeof i !== "number") return i.raw;
    return i < 0 ? i : this.fds[i];
  }

  ringOf(i?: number): Ring {
    if (!i) return this.ring;
    const r = this.rings.get(i);
    if (!r) throw new Error(`differential: no ring ${i}`);
    return r;
  }

  /** Memory the kernel reads an array from (kept until the testbed goes). */
  #array(bytes: Uint8Array): bigint {
    const mem = this.tb.allocBuffer(Math.max(16, bytes.length));
    mem.bytes.set(bytes);
    this.#iovs.push(mem);
    return mem.addr;
  }

  #fdArray(files: FdSel[]): Uint8Array {
    const b = new Uint8Array(4 * files.length);
    const v = new DataView(b.buffer);
    files.forEach((f, i) => v.setInt32(4 * i, this.fileFd(f), true));
    return b;
  }

  #tagArray(tags: (number | bigint)[]): Uint8Array {
    const b = new Uint8Array(8 * tags.length);
    const v = new DataView(b.buffer);
    tags.forEach((t, i) => v.setBigUint64(8 * i, BigInt(t), true));
    return b;
  }

  iov(r: IovSel): { addr: bigint; len: number } {
    if (r === null) return { addr: 0n, len: 0 };
    if ("addr" in r) return r;
    return { addr: this.addr(r), len: r.len };
  }

  #iovArray(bufs: IovSel[]): Uint8Array {
    return encodeIovecs(bufs.map((r) => this.iov(r)));
  }

  /** REGISTER_FILES2 / BUFFERS2 / FILES_UPDATE2 / BUFFERS_UPDATE with a tag array. */
  #rsrc(
    ring: Ring,
    opcode: number,
    nr: number,
    data: Uint8Array,
    tags: (number | bigint)[],
    offset?: number,
  ): number {
    const arg = offset === undefined
      ? encodeRsrcRegister(nr, 0, this.#array(data), this.#array(this.#tagArray(tags)))
      : encodeRsrcUpdate2(offset, this.#array(data), nr, this.#array(this.#tagArray(tags)));
    return ring.raw.register(opcode, arg, 32);
  }

  /** A timespec in testbed memory (absolute ones read the backend's clock now). */
  #timespec(ts: Ts, tflags: number): bigint {
    let ns = BigInt(ts.sec) * 1_000_000_000n + BigInt(ts.nsec);
    if (ts.abs) {
      const clock = tflags & IORING_TIMEOUT.REALTIME
        ? "realtime"
        : tflags & IORING_TIMEOUT.BOOTTIME
        ? "boottime"
        : "monotonic";
      ns += this.tb.clockNs(clock);
    }
    const b = new Uint8Array(16);
    const v = new DataView(b.buffer);
    if (ts.abs) {
      v.setBigInt64(0, ns / 1_000_000_000n, true);
      v.setBigInt64(8, ns % 1_000_000_000n, true);
    } else {
      v.setBigInt64(0, BigInt(ts.sec), true);
      v.setBigInt64(8, BigInt(ts.nsec), true);
    }
    return this.#array(b);
  }

  run(step: Step, index: number): Observation {
    switch (step.t) {
      case "open": {
        if (this.fds[step.file] >= 0) this.tb.close(this.fds[step.file]);
        const fd = this.tb.open(this.paths[step.file], step.flags, 0o644);
        this.fds[step.file] = fd;
        return fd >= 0 ? "fd" : describeResult(fd);
      }
      case "close": {
        const r = this.tb.close(this.fds[step.file]);
        this.fds[step.file] = -1;
        return describeResult(r);
      }
      case "fill": {
        let x = step.seed >>> 0 || 1;
        const b = this.bufs[step.buf].bytes;
        if (step.byte !== undefined) {
          b.fill(step.byte);
          return "filled";
        }
        for (let i = 0; i < b.length; i++) {
          x ^= x << 13;
          x ^= x >>> 17;
          x ^= x << 5;
          b[i] = x;
        }
        return "filled";
      }
      case "regFiles": {
        const ring = this.ringOf(step.ring);
        if (step.tags) {
          const r = this.#rsrc(
            ring,
            IORING_REGISTER.REGISTER_FILES2,
            step.files.length,
            this.#fdArray(step.files),
            step.tags,
          );
          return describeResult(r);
        }
        return describeResult(ring.registerFiles(step.files.map((f) => this.fileFd(f))).res);
      }
      case "regFilesSparse":
        return describeResult(this.ring.registerFilesSparse(step.nr).res);
      case "updFiles": {
        const ring = this.ringOf(step.ring);
        if (step.tags) {
          const r = this.#rsrc(
            ring,
            IORING_REGISTER.REGISTER_FILES_UPDATE2,
            step.files.length,
            this.#fdArray(step.files),
            step.tags,
            step.offset,
          );
          return describeResult(r);
        }
        return describeResult(
          ring.updateFiles(step.offset, step.files.map((f) => this.fileFd(f))).res,
        );
      }
      case "unregFiles":
        return describeResult(this.ringOf(step.ring).unregisterFiles().res);
      case "regBufs":
        if (step.tags) {
          return describeResult(
            this.#rsrc(
              this.ring,
              IORING_REGISTER.REGISTER_BUFFERS2,
              step.bufs.length,
              this.#iovArray(step.bufs),
              step.tags,
            ),
          );
        }
        return describeResult(
          this.ring.registerBuffers(
            step.bufs.map((r) => this.iov(r)),
          ).res,
        );
      case "updBufs":
        if (step.tags) {
          return describeResult(
            this.#rsrc(
              this.ring,
              IORING_REGISTER.REGISTER_BUFFERS_UPDATE,
              step.bufs.length,
              this.#iovArray(step.bufs),
              step.tags,
              step.offset,
            ),
          );
        }
        return describeResult(
          this.ring.updateBuffers(
            step.offset,
            step.bufs.map((r) => this.iov(r)),
          ).res,
        );
      case "unregBufs":
        return describeResult(this.ring.unregisterBuffers().res);
      case "sqe":
        return this.#sqe(step, index);
      case "submit": {
        const r = this.ring.submit(step.wait);
        return describeResult(r.res);
      }
      case "reapAll":
        return this.reapAll();
      case "drain":
        return this.drain(false, step.expect);
      case "drainOrdered":
        return this.drain(true, step.expect);
      case "ring": {
        this.rings.get(step.ring)?.[Symbol.dispose]();
        this.rings.set(step.ring, this.tb.ring({ entries: step.entries }));
        return "ring";
      }
      case "sleep": {
        if (this.tb instanceof SimTestbed) {
          const k = this.tb.kernel;
          k.waitEvent(() => false, step.ms * 1e6);
        } else {
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, step.ms);
        }
        return "slept";
      }
      case "setSqDropped": {
        let raw = this.ring.raw;
        if (raw instanceof RingWrapper) raw = raw.live;
        if (raw instanceof LiveRing) Atomics.store(raw.sqKdropped, 0, step.n);
        else if (raw instanceof SimRing) {
          new DataView(raw.ringBytes.buffer, raw.ringBytes.byteOffset).setUint32(
            IO_RINGS.sqDropped,
            step.n,
            true,
          );
        } else throw new Error("setSqDropped: unknown ring");
        return "set";
      }
      case "ringState": {
        let raw = this.ring.raw;
        if (raw instanceof RingWrapper) raw = raw.live; // the kernel ring under the real wrapper
        if (raw instanceof LiveRing) return `sq_flags=${raw.sqFlags} cq_overflow=${raw.cqOverflow}`;
        if (raw instanceof SimRing) {
          const v = new DataView(raw.ringBytes.buffer, raw.ringBytes.byteOffset);
          return `sq_flags=${v.getUint32(IO_RINGS.sqFlags, true)} cq_overflow=${
            v.getUint32(IO_RINGS.cqOverflow, true)
          }`;
        }
        throw new Error("ringState: unknown ring");
      }
      case "enter":
        return describeResult(this.ring.submit(0).res);
      case "rawRegister": {
        const arg = new Uint8Array(step.argLen);
        const v = new DataView(arg.buffer);
        for (const [at, x] of step.u32 ?? []) v.setUint32(at, x, true);
        for (const [at, p] of step.ptrs ?? []) {
          v.setBigUint64(at, typeof p === "bigint" ? p : this.addr(p), true);
        }
        return describeResult(this.ring.raw.register(step.opcode, arg, step.nrArgs));
      }
      case "flood":
        return this.flood(step.n);
      case "reapOrdered":
        return this.ring.reap(step.max).map((c) => {
          const at = this.pending.get(c.userData);
          this.pending.delete(c.userData);
          return `#${at}=${describeResult(c.res)}`;
        }).join(" ");
    }
  }

  /** See the `flood` step. */
  flood(n: number): Observation {
    const base = this.#ud + 1n;
    this.#ud += BigInt(n);
    let errs = 0;
    for (let i = 0; i < n; i++) {
      if (!this.ring.prep({ opcode: IORING_OP.NOP, userData: base + BigInt(i) })) errs++;
      if (this.ring.submit(0).res !== 1) errs++;
    }
    const overflowed = this.run({ t: "ringState" }, -1);
    let next = base;
    let bad = 0;
    for (let round = 0; round < 4 * n; round++) {
      const got = this.ring.reap();
      for (const c of got) if (c.userData !== next++) bad++;
      if (got.length === 0) break;
      this.ring.submit(0); // GETEVENTS while the overflow flag is up: flush the backlog
    }
    return `${overflowed}; submit errors ${errs}; reaped ${
      next - base
    } of ${n}, ${bad} out of order`;
  }

  /** Submit everything, wait for all outstanding CQEs without ever blocking forever. */
  drain(ordered = false, expect?: number): Observation {
    const subs: string[] = [];
    for (let i = 0; i < 8; i++) {
      const r = this.ring.submit(0).res;
      subs.push(describeResult(r));
      if (r <= 0) break;
    }
    const want = this.pending.size;
    const items: string[] = [];
    let raw = this.ring.raw;
    if (raw instanceof RingWrapper && !raw.engaged) raw = raw.live;
    if (expect !== undefined) {
      for (let round = 0; round < 16 && items.length < expect; round++) {
        const n = expect - items.length;
        if (raw instanceof LiveRing) raw.waitCqes(n, 2e9);
        else raw.submit(n);
        const got = this.reapItems();
        items.push(...got);
        if (got.length === 0) break;
      }
      // Anything beyond what was expected (a CQE that should have been skipped).
      if (raw instanceof LiveRing) raw.waitCqes(1, 3e7);
      else raw.submit(0);
      items.push(...this.reapItems());
    }
    for (let round = 0; expect === undefined && round < 8 && this.pending.size > 0; round++) {
      // Bounded waits: a CQE_SKIP_SUCCESS request never posts, so `pending` may never empty.
      if (raw instanceof LiveRing) raw.waitCqes(this.pending.size, round === 0 ? 1e9 : 2e8);
      else raw.submit(this.pending.size);
      const got = this.reapItems();
      items.push(...got);
      if (got.length === 0) break;
    }
    // What is still pending posted nothing (skipped): accounted for by the comparison.
    this.pending.clear();
    if (!ordered) items.sort();
    const cqes = items.join(" ");
    return `submit[${subs.join(",")}] want ${want} cqes ${cqes}`;
  }

  #sqe(step: Extract<Step, { t: "sqe" }>, index: number): Observation {
    const ud = ++this.#ud;
    this.pending.set(ud, index);
    this.udOf.set(index, ud);
    const f: SqeFields = { opcode: IORING_OP.NOP, userData: ud, flags: step.flags ?? 0 };
    if (step.file) {
      const { fd, fixed } = this.fdOf(step.file);
      f.fd = fd;
      if (fixed) f.flags = (f.flags ?? 0) | IOSQE.FIXED_FILE;
    }
    const r = step.range;
    switch (step.op) {
      case "nop":
        break;
      case "read":
      case "write":
        f.opcode = step.op === "read" ? IORING_OP.READ : IORING_OP.WRITE;
        f.addr = this.addr(r!);
        f.len = r!.len;
        f.off = BigInt(step.pos ?? 0);
        break;
      case "readFixed":
      case "writeFixed":
        f.opcode = step.op === "readFixed" ? IORING_OP.READ_FIXED : IORING_OP.WRITE_FIXED;
        f.addr = this.addr(r!);
        f.len = r!.len;
        f.off = BigInt(step.pos ?? 0);
        f.bufIndex = step.bufIndex ?? 0;
        break;
      case "readv":
      case "writev": {
        f.opcode = step.op === "readv" ? IORING_OP.READV : IORING_OP.WRITEV;
        const iov = step.iov!;
        const enc = encodeIovecs(iov.map((x) => ({ addr: this.addr(x), len: x.len })));
        const mem = this.tb.allocBuffer(Math.max(16, enc.length));
        mem.bytes.set(enc);
        this.#iovs.push(mem);
        f.addr = mem.addr;
        f.len = iov.length;
        f.off = BigInt(step.pos ?? 0);
        break;
      }
      case "fsync":
        f.opcode = IORING_OP.FSYNC;
        break;
      case "timeout":
      case "linkTimeout":
        f.opcode = step.op === "timeout" ? IORING_OP.TIMEOUT : IORING_OP.LINK_TIMEOUT;
        f.addr = this.#timespec(step.ts ?? { sec: 0, nsec: 0 }, step.tflags ?? 0);
        f.len = 1;
        f.off = BigInt(step.count ?? 0);
        f.rwFlags = step.tflags ?? 0;
        break;
      case "timeoutRemove":
        f.opcode = IORING_OP.TIMEOUT_REMOVE;
        f.addr = step.target === undefined ? 0xdeadn : this.udOf.get(step.target) ?? 0xdeadn;
        f.rwFlags = step.tflags ?? 0;
        if (step.ts) f.off = this.#timespec(step.ts, step.tflags ?? 0);
        break;
      case "filesUpdate": {
        f.opcode = IORING_OP.FILES_UPDATE;
        const files = step.files ?? [];
        const mem = this.tb.allocBuffer(Math.max(16, 4 * files.length));
        mem.bytes.set(this.#fdArray(files));
        this.#updArrays.push({ step: index, mem, files });
        f.addr = mem.addr;
        f.len = files.length;
        f.off = BigInt(step.offset ?? 0);
        break;
      }
    }
    Object.assign(f, step.raw ?? {});
    if (step.attr) f.addr3 = this.addr(step.attr);
    return this.ring.prep(f) ? "queued" : "sq-full";
  }

  /** Reap every CQE; describe each by the step that queued it. */
  reapItems(): string[] {
    return this.ring.reap().map((c) => {
      const at = this.pending.get(c.userData);
      this.pending.delete(c.userData);
      const key = c.res >= 0 ? "ok" : describeResult(c.res);
      this.histogram.set(key, (this.histogram.get(key) ?? 0) + 1);
      return `#${at ?? `?${c.userData}`}=${describeResult(c.res)}`;
    });
  }

  /** Reap every CQE; describe them sorted by the step that queued them. */
  reapAll(): Observation {
    return this.reapItems().sort().join(" ");
  }

  /** Free iovec arrays once their requests completed. */
  dropIovecs(): void {
    for (const m of this.#iovs) m[Symbol.dispose]();
    this.#iovs.length = 0;
  }

  /**
   * FILES_UPDATE fd arrays after completion, as slot numbers where the kernel
   * wrote allocated slots back (descriptors are not comparable across backends).
   */
  updArrays(): string {
    const out = this.#updArrays.map(({ step, mem, files }) => {
      const v = new DataView(mem.bytes.buffer, mem.bytes.byteOffset);
      const vals = Array.from({ length: files.length }, (_, i) => {
        // Descriptors differ across backends: one left as written shows as its file.
        const x = v.getInt32(4 * i, true);
        const f = files[i];
        return x === this.fileFd(f) && typeof f === "number" && f >= 0 ? `f${f}` : String(x);
      });
      mem[Symbol.dispose]();
      return `#${step}:[${vals.join(",")}]`;
    });
    this.#updArrays.length = 0;
    return out.join(" ");
  }

  bufferDigest(): string {
    return this.bufs.map((b) => digest(b.bytes)).join(",");
  }

  fileDigest(i: number): string {
    try {
      const d = this.tb.readFile(this.paths[i]);
      return `${d.length}:${digest(d)}`;
    } catch {
      return "absent";
    }
  }

  [Symbol.dispose](): void {
    this.dropIovecs();
    for (const r of this.rings.values()) r[Symbol.dispose]();
    this.ring[Symbol.dispose]();
    for (const fd of this.fds) if (fd >= 0) this.tb.close(fd);
    this.tb[Symbol.dispose]();
  }
}

/** DIFF_TRACE=1 prints every step's observation on both backends. */
const TRACE = (() => {
  try {
    return Deno.env.get("DIFF_TRACE") === "1";
  } catch {
    return false;
  }
})();

/** FNV-1a over the bytes, as hex. */
export function digest(b: Uint8Array): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < b.length; i++) h = Math.imul(h ^ b[i], 0x01000193);
  return (h >>> 0).toString(16);
}

/** The first disagreement, if any. */
export interface Mismatch {
  /** Index of the step. */
  step: number;
  /** What was compared. */
  what: string;
  /** The sim's observation. */
  sim: string;
  /** The live kernel's observation. */
  real: string;
}

/**
 * Run `steps` on both backends; returns the first mismatch or null
 * (`histogram`, if given, collects the sim's CQE results by errno). After
 * every submit with a wait, CQEs are reaped and buffers compared; at the end,
 * the files' contents.
 */
export function runDifferential(
  steps: readonly Step[],
  entries = 64,
  histogram?: Map<string, number>,
  cqEntries?: number,
): Mismatch | null {
  using sim = new Runner("sim", entries, histogram, cqEntries);
  using real = new Runner("real", entries, undefined, cqEntries);
  for (let i = 0; i < steps.length; i++) {
    const s = steps[i];
    const a = sim.run(s, i);
    const b = real.run(s, i);
    if (TRACE) {
      console.log(
        `${i} ${
          JSON.stringify(s, (_k, v) => typeof v === "bigint" ? `${v}n` : v)
        }\n   sim:  ${a}\n   real: ${b}`,
      );
    }
    if (a !== b) return { step: i, what: s.t, sim: a, real: b };
    if (s.t === "submit" || s.t === "reapAll" || s.t === "drain" || s.t === "drainOrdered") {
      const ca = s.t === "submit" ? sim.reapAll() : "";
      const cb = s.t === "submit" ? real.reapAll() : "";
      if (ca !== cb) return { step: i, what: "cqes", sim: ca, real: cb };
      if (sim.pending.size === 0) sim.dropIovecs();
      if (real.pending.size === 0) real.dropIovecs();
      const ba = sim.bufferDigest();
      const bb = real.bufferDigest();
      if (ba !== bb) return { step: i, what: "buffers", sim: ba, real: bb };
      if (sim.pending.size === 0 && real.pending.size === 0) {
        const ua = sim.updArrays();
        const ub = real.updArrays();
        if (ua !== ub) return { step: i, what: "FILES_UPDATE arrays", sim: ua, real: ub };
      }
    }
  }
  for (let f = 0; f < NR_FILES; f++) {
    const a = sim.fileDigest(f);
    const b = real.fileDigest(f);
    if (a !== b) return { step: steps.length, what: `file ${f}`, sim: a, real: b };
  }
  return null;
}

/** Open flags used by sequences. */
export const FLAGS = {
  rwCreate: O.RDWR | O.CREAT,
  rwCreateDirect: O.RDWR | O.CREAT | O.DIRECT,
  rdonly: O.RDONLY,
} as const;
