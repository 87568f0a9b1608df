/**
 * The application-facing ring API, the same for both backends.
 *
 * {@link RawRing} is the byte-level surface (what io_uring_enter(2) and
 * io_uring_register(2) offer): push a 64-byte SQE, submit, reap CQEs,
 * register with a raw argument. The `sim` backend implements it with the
 * TypeScript io_uring mirror, the `real` backend with the live kernel ring.
 *
 * {@link Ring} is the friendly layer on top: liburing-style prep helpers and
 * register calls whose negative results come back as named errnos.
 *
 * @module
 */

import { Errno, errnoName } from "./errno.ts";
import {
  type Cqe,
  encodeMapBuffers,
  encodeRsrcRegister,
  encodeRsrcUpdate2,
  encodeSqe,
  IO_URING_OP_SUPPORTED,
  IORING_FSYNC_DATASYNC,
  IORING_MSG,
  IORING_OP,
  IORING_REGISTER,
  IORING_RSRC_REGISTER_SPARSE,
  IOSQE,
  IOVEC,
  PROBE,
  type SqeFields,
} from "./io_uring.ts";

export type { Cqe } from "./io_uring.ts";

/** A buffer in the testbed's memory: its address (user VA) and a byte view. */
export interface UserBuffer extends Disposable {
  /** Address as the ring sees it (a user virtual address). */
  readonly addr: bigint;
  /** The bytes. */
  readonly bytes: Uint8Array;
}

/** The byte-level ring surface both backends implement. */
export interface RawRing extends Disposable {
  /** Which backend runs the ring. */
  readonly backend: "sim" | "real";
  /** The ring's file descriptor (sim: in the simulated fd table). */
  readonly fd: number;
  /** SQ entries. */
  readonly sqEntries: number;
  /** CQ entries. */
  readonly cqEntries: number;
  /** Queue a 64-byte SQE in kernel layout; false when the SQ is full. */
  pushSqe(sqe: Uint8Array): boolean;
  /**
   * Optional: fill the next SQE in place from named fields (what
   * `pushSqe(encodeSqe(fields))` does, without the intermediate array).
   */
  prepSqe?(fields: SqeFields): boolean;
  /** io_uring_enter(to_submit = queued, min_complete = waitNr): submitted count or -errno. */
  submit(waitNr?: number): number;
  /** Take up to `max` CQEs (all available by default) and advance the CQ head. */
  reap(max?: number): Cqe[];
  /**
   * io_uring_register(2): 0 (or a count) or -errno. Pointers in `arg` are
   * testbed addresses; a zero-length `arg` is passed as a NULL pointer.
   */
  register(opcode: number, arg: Uint8Array | null, nrArgs: number): number;
}

/** Result of a call: `res` as the kernel returns it, plus the errno name when negative. */
export interface CallResult {
  /** Kernel-style result: >= 0 success, negative errno on failure. */
  res: number;
  /** True when `res >= 0`. */
  ok: boolean;
  /** Errno name (e.g. "EINVAL") when `res < 0`, else null. */
  errno: string | null;
}

/** Wrap a kernel-style result. */
export function result(res: number): CallResult {
  return { res, ok: res >= 0, errno: res < 0 ? errnoName(res) : null };
}

/** A reaped completion with its errno name. */
export interface Completion extends Cqe {
  /** Errno name when `res < 0`. */
  errno: string | null;
}

/** Allocator for memory the ring can see (an iovec array, an fd array). */
export type Allocator = (len: number) => UserBuffer;

/** Common options for prep helpers. */
export interface PrepOptions {
  /** user_data for the CQE (default 0). */
  userData?: bigint;
  /** IOSQE_* flags. */
  flags?: number;
}

/**
 * The friendly ring: prep helpers, register calls with named results.
 *
 * @example
 * ```ts
 * import { openTestbed } from "../../mod.ts";
 * using tb = await openTestbed({ backend: "sim" });
 * using ring = tb.ring({ entries: 8 });
 * ring.nop({ userData: 1n });
 * ring.submit(1);
 * console.log(ring.reap()); // [{ userData: 1n, res: 0, flags: 0, errno: null }]
 * ```
 */
export class Ring implements Disposable {
  /** The byte-level ring underneath. */
  readonly raw: RawRing;
  readonly #alloc: Allocator;

  /** Wrap a raw ring; `alloc` provides memory for register arguments. */
  constructor(raw: RawRing, alloc: Allocator) {
    this.raw = raw;
    this.#alloc = alloc;
  }

  /** Queue an SQE from named fields; false when the SQ is full. */
  prep(fields: SqeFields): boolean {
    const raw = this.raw;
    return raw.prepSqe ? raw.prepSqe(fields) : raw.pushSqe(encodeSqe(fields));
  }

  /** io_uring_prep_nop */
  nop(o: PrepOptions = {}): boolean {
    return this.prep({ opcode: IORING_OP.NOP, userData: o.userData, flags: o.flags });
  }

  /** io_uring_prep_read: `fd` is a descriptor, or a fixed-file index with IOSQE_FIXED_FILE. */
  read(fd: number, addr: bigint, len: number, offset: bigint, o: PrepOptions = {}): boolean {
    return this.prep({ opcode: IORING_OP.READ, fd, addr, len, off: offset, ...o });
  }

  /** io_uring_prep_write */
  write(fd: number, addr: bigint, len: number, offset: bigint, o: PrepOptions = {}): boolean {
    return this.prep({ opcode: IORING_OP.WRITE, fd, addr, len, off: offset, ...o });
  }

  /** io_uring_prep_readv: `iovecs` is the address of an iovec array of `nr` entries. */
  readv(fd: number, iovecs: bigint, nr: number, offset: bigint, o: PrepOptions = {}): boolean {
    return this.prep({ opcode: IORING_OP.READV, fd, addr: iovecs, len: nr, off: offset, ...o });
  }

  /** io_uring_prep_writev */
  writev(fd: number, iovecs: bigint, nr: number, offset: bigint, o: PrepOptions = {}): boolean {
    return this.prep({ opcode: IORING_OP.WRITEV, fd, addr: iovecs, len: nr, off: offset, ...o });
  }

  /** io_uring_prep_read_fixed: `addr` must lie inside registered buffer `bufIndex`. */
  readFixed(
    fd: number,
    addr: bigint,
    len: number,
    offset: bigint,
    bufIndex: number,
    o: PrepOptions = {},
  ): boolean {
    return this.prep({
      opcode: IORING_OP.READ_FIXED,
      fd,
      addr,
      len,
      off: offset,
      bufIndex,
      ...o,
    });
  }

  /** io_uring_prep_write_fixed */
  writeFixed(
    fd: number,
    addr: bigint,
    len: number,
    offset: bigint,
    bufIndex: number,
    o: PrepOptions = {},
  ): boolean {
    return this.prep({
      opcode: IORING_OP.WRITE_FIXED,
      fd,
      addr,
      len,
      off: offset,
      bufIndex,
      ...o,
    });
  }

  /** io_uring_prep_fsync */
  fsync(fd: number, datasync = false, o: PrepOptions = {}): boolean {
    return this.prep({
      opcode: IORING_OP.FSYNC,
      fd,
      rwFlags: datasync ? IORING_FSYNC_DATASYNC : 0,
      ...o,
    });
  }

  /** io_uring_prep_msg_ring: post a CQE with `res` and `targetUserData` on ring `targetFd`. */
  msgRing(targetFd: number, res: number, targetUserData: bigint, o: PrepOptions = {}): boolean {
    return this.prep({
      opcode: IORING_OP.MSG_RING,
      fd: targetFd,
      addr: BigInt(IORING_MSG.DATA),
      len: res,
      off: targetUserData,
      ...o,
    });
  }

  /** Submit everything queued and wait for `waitNr` completions. */
  submit(waitNr = 0): CallResult {
    return result(this.raw.submit(waitNr));
  }

  /** Reap completions, each with its errno name. */
  reap(max?: number): Completion[] {
    return this.raw.reap(max).map((c) => ({
      ...c,
      errno: c.res < 0 ? errnoName(c.res) : null,
    }));
  }

  /** Submit, wait for `n` completions, and reap them (a wait interrupted by a signal is retried). */
  submitAndReap(n: number): Completion[] {
    const s = this.#enter(n);
    if (!s.ok) throw new Error(`io_uring_enter: ${s.res} (${s.errno})`);
    const out: Completion[] = [];
    while (out.length < n) {
      const got = this.reap(n - out.length);
      if (got.length === 0) {
        const again = this.#enter(n - out.length);
        if (!again.ok) throw new Error(`io_uring_enter: ${again.res} (${again.errno})`);
        const more = this.reap(n - out.length);
        if (more.length === 0) throw new Error(`waited for ${n} CQEs, got ${out.length}`);
        out.push(...more);
      } else out.push(...got);
    }
    return out;
  }

  #enter(waitNr: number): CallResult {
    let r = this.submit(waitNr);
    while (r.res === -Errno.EINTR) r = this.submit(waitNr);
    return r;
  }

  /** IORING_REGISTER_FILES: `fds` may contain -1 for sparse slots. */
  registerFiles(fds: readonly number[]): CallResult {
    const b = new Uint8Array(4 * fds.length);
    const v = new DataView(b.buffer);
    fds.forEach((fd, i) => v.setInt32(4 * i, fd, true));
    return result(this.raw.register(IORING_REGISTER.REGISTER_FILES, b, fds.length));
  }

  /** IORING_REGISTER_FILES2 with IORING_RSRC_REGISTER_SPARSE: `nr` empty slots. */
  registerFilesSparse(nr: number): CallResult {
    const arg = encodeRsrcRegister(nr, IORING_RSRC_REGISTER_SPARSE, 0n);
    return result(this.raw.register(IORING_REGISTER.REGISTER_FILES2, arg, arg.length));
  }

  /** IORING_REGISTER_FILES_UPDATE2: replace slots from `offset` (-1 clears a slot). */
  updateFiles(offset: number, fds: readonly number[]): CallResult {
    using arr = this.#alloc(Math.max(4 * fds.length, 4));
    const v = new DataView(arr.bytes.buffer, arr.bytes.byteOffset, arr.bytes.byteLength);
    fds.forEach((fd, i) => v.setInt32(4 * i, fd, true));
    const arg = encodeRsrcUpdate2(offset, arr.addr, fds.length);
    return result(this.raw.register(IORING_REGISTER.REGISTER_FILES_UPDATE2, arg, arg.length));
  }

  /** IORING_UNREGISTER_FILES */
  unregisterFiles(): CallResult {
    return result(this.raw.register(IORING_REGISTER.UNREGISTER_FILES, null, 0));
  }

  /** IORING_REGISTER_BUFFERS: one iovec per buffer. */
  registerBuffers(bufs: readonly { addr: bigint; len: number }[]): CallResult {
    const b = encodeIovecs(bufs);
    return result(this.raw.register(IORING_REGISTER.REGISTER_BUFFERS, b, bufs.length));
  }

  /** IORING_REGISTER_BUFFERS_UPDATE: replace buffers from `offset` (addr 0, len 0 clears). */
  updateBuffers(offset: number, bufs: readonly { addr: bigint; len: number }[]): CallResult {
    using arr = this.#alloc(Math.max(IOVEC.SIZE * bufs.length, IOVEC.SIZE));
    arr.bytes.set(encodeIovecs(bufs));
    const arg = encodeRsrcUpdate2(offset, arr.addr, bufs.length);
    return result(this.raw.register(IORING_REGISTER.REGISTER_BUFFERS_UPDATE, arg, arg.length));
  }

  /** IORING_UNREGISTER_BUFFERS */
  unregisterBuffers(): CallResult {
    return result(this.raw.register(IORING_REGISTER.UNREGISTER_BUFFERS, null, 0));
  }

  /**
   * The proposal's IORING_REGISTER_MAP_BUFFERS: premap registered buffers
   * `[bufStart, bufEnd)` for DMA on fixed file slot `fileIndex`.
   */
  mapBuffers(fileIndex: number, bufStart: number, bufEnd: number, flags = 0): CallResult {
    const arg = encodeMapBuffers(fileIndex, bufStart, bufEnd, flags);
    return result(this.raw.register(IORING_REGISTER.REGISTER_MAP_BUFFERS, arg, 1));
  }

  /** The proposal's IORING_REGISTER_UNMAP_BUFFERS. */
  unmapBuffers(fileIndex: number, bufStart: number, bufEnd: number, flags = 0): CallResult {
    const arg = encodeMapBuffers(fileIndex, bufStart, bufEnd, flags);
    return result(this.raw.register(IORING_REGISTER.REGISTER_UNMAP_BUFFERS, arg, 1));
  }

  /** IORING_REGISTER_PROBE: the set of supported opcodes, or a failed result. */
  probe(): { ops: Set<number>; lastOp: number } | CallResult {
    const nOps = 256;
    const b = new Uint8Array(PROBE.SIZE + nOps * PROBE.OP_SIZE);
    const r = this.raw.register(IORING_REGISTER.REGISTER_PROBE, b, nOps);
    return r < 0 ? result(r) : decodeProbe(b);
  }

  /** Tear the ring down. */
  [Symbol.dispose](): void {
    this.raw[Symbol.dispose]();
  }
}

/** Decode a struct io_uring_probe filled by the kernel: supported opcodes and last_op. */
export function decodeProbe(b: Uint8Array): { ops: Set<number>; lastOp: number } {
  const ops = new Set<number>();
  const opsLen = b[PROBE.opsLen];
  for (let i = 0; i < opsLen; i++) {
    const at = PROBE.SIZE + i * PROBE.OP_SIZE;
    const flags = b[at + PROBE.opFlags] | (b[at + PROBE.opFlags + 1] << 8);
    if (flags & IO_URING_OP_SUPPORTED) ops.add(b[at + PROBE.opOp]);
  }
  return { ops, lastOp: b[PROBE.lastOp] };
}

/** Encode an array of struct iovec. */
export function encodeIovecs(bufs: readonly { addr: bigint; len: number }[]): Uint8Array {
  const b = new Uint8Array(IOVEC.SIZE * bufs.length);
  const v = new DataView(b.buffer);
  bufs.forEach((x, i) => {
    v.setBigUint64(i * IOVEC.SIZE + IOVEC.base, BigInt.asUintN(64, x.addr), true);
    v.setBigUint64(i * IOVEC.SIZE + IOVEC.len, BigInt(x.len), true);
  });
  return b;
}

/** IOSQE flags re-exported for convenience with the prep helpers. */
export { IOSQE };
