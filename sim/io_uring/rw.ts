/**
 * IORING_OP_READ/WRITE/READV/WRITEV/READ_FIXED/WRITE_FIXED (io_uring/rw.c).
 *
 * prep copies the SQE fields and, for READ/WRITE/READV/WRITEV, imports the
 * user memory into an iov_iter (ubuf or iovec). READ_FIXED/WRITE_FIXED
 * import the registered buffer at issue (io_import_reg_buf), where the
 * proposal's dma-tag iterator is chosen when the buffer is premapped on the
 * request's file. Issue builds a kiocb and calls the file's read_iter or
 * write_iter; -EIOCBQUEUED means ki_complete() comes later. A result other
 * than the bytes asked for (short transfer or error) fails the request,
 * which breaks an IOSQE_IO_LINK chain.
 *
 * @module
 */

import { type IovIter, iovIterIovec, iovIterUbuf, type UserRange } from "../block/iov_iter.ts";
import { type File, IOCB, type Kiocb } from "../fs/file.ts";
import { Errno } from "../uapi/errno.ts";
import { IORING_OP, IOSQE, IOVEC, O } from "../uapi/io_uring.ts";
import { type IoKiocb, IOU_ISSUE_QUEUED } from "./io_uring_types.ts";
import { type FixedImport, ioImportFixed, putDmaUser } from "./rsrc.ts";
import { COUNTER } from "../stats.ts";

/** Positions above which adding a byte count below 2^32 may pass LLONG_MAX. */
const LOFF_WRAP_FLOOR = (1n << 63n) - 1n - (1n << 32n);

/** MAX_RW_COUNT: INT_MAX & PAGE_MASK. */
export const MAX_RW_COUNT = 0x7ffff000;
/** UIO_MAXIOV */
export const UIO_MAXIOV = 1024;
/** RWF_* accepted by kiocb_set_rw_flags() (RWF_SUPPORTED, 6.18). */
export const RWF = {
  HIPRI: 0x1,
  DSYNC: 0x2,
  SYNC: 0x4,
  NOWAIT: 0x8,
  APPEND: 0x10,
  NOAPPEND: 0x20,
  ATOMIC: 0x40,
  DONTCACHE: 0x80,
} as const;
/** RWF_NOSIGNAL (6.17): no SIGPIPE on a broken pipe; accepted and inert on files. */
export const RWF_NOSIGNAL = 0x100;
/** RWF_SUPPORTED on Linux 6.18: every flag above (observed: 0x1ff accepted, 0x200 and up not). */
const RWF_SUPPORTED = 0x1ff;

/** TASK_SIZE_MAX on x86_64 (4-level paging): access_ok() fails at or past it. */
export const TASK_SIZE_MAX = 0x7fff_ffff_f000n;

/** IOPRIO_* (include/uapi/linux/ioprio.h): class in bits 15..13, level in bits 2..0. */
export const IOPRIO = {
  CLASS_SHIFT: 13,
  CLASS_NONE: 0,
  CLASS_RT: 1,
  CLASS_BE: 2,
  CLASS_IDLE: 3,
  LEVEL_MASK: 7,
  NR_LEVELS: 8,
} as const;

/** IORING_RW_ATTR_FLAG_PI: sqe->attr_type_mask asking for a protection-information attribute. */
export const IORING_RW_ATTR_FLAG_PI = 1n;
/** struct io_uring_attr_pi (32 bytes): flags u16, app_tag u16, len u32, addr u64, seed u64, rsvd u64. */
export const ATTR_PI = { SIZE: 32, len: 4, addr: 8, rsvd: 24 } as const;

/**
 * ioprio_check_cap() (block/ioprio.c): 0 or -errno. RT needs CAP_SYS_ADMIN or
 * CAP_SYS_NICE (the testbed's process is root, as the differential's is);
 * hint bits (12..3) are not checked.
 */
export function ioprioCheckCap(ioprio: number, capable = true): number {
  const cls = (ioprio >> IOPRIO.CLASS_SHIFT) & 7;
  const level = ioprio & IOPRIO.LEVEL_MASK;
  switch (cls) {
    case IOPRIO.CLASS_RT:
      if (!capable) return -Errno.EPERM;
    // falls through: RT has a level too
    case IOPRIO.CLASS_BE:
      return level >= IOPRIO.NR_LEVELS ? -Errno.EINVAL : 0;
    case IOPRIO.CLASS_IDLE:
      return 0;
    case IOPRIO.CLASS_NONE:
      return level ? -Errno.EINVAL : 0;
    default:
      return -Errno.EINVAL;
  }
}

interface IoRw extends FixedImport {
  write: boolean;
  fixed: boolean;
  addr: bigint;
  len: number;
  pos: bigint;
  rwFlags: number;
  iter: IovIter | null;
  /** REQ_F_HAS_METADATA: a PI attribute was attached (no modelled file takes one). */
  hasMetadata: boolean;
}

function isWrite(op: number): boolean {
  return op === IORING_OP.WRITE || op === IORING_OP.WRITEV || op === IORING_OP.WRITE_FIXED;
}

/** import_iovec(): copy in `nr` iovecs from user memory. */
function importIovec(req: IoKiocb, addr: bigint, nr: number): UserRange[] | number {
  if (nr > UIO_MAXIOV) return -Errno.EINVAL;
  if (nr === 0) return [];
  const raw = req.ctx.kernel.mm.copyFromUser(addr, nr * IOVEC.SIZE);
  if (typeof raw === "number") return raw;
  const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const out: UserRange[] = [];
  let total = 0;
  for (let i = 0; i < nr; i++) {
    const base = v.getBigUint64(i * IOVEC.SIZE + IOVEC.base, true);
    const len64 = v.getBigInt64(i * IOVEC.SIZE + IOVEC.len, true);
    if (len64 < 0n) return -Errno.EINVAL;
    // iov_iter_init clamps the total at MAX_RW_COUNT.
    let len = len64 > BigInt(MAX_RW_COUNT) ? MAX_RW_COUNT : Number(len64);
    if (total + len > MAX_RW_COUNT) len = MAX_RW_COUNT - total;
    total += len;
    out.push({ base, len });
  }
  return out;
}

/** import_ubuf(): access_ok() on `[addr, addr + min(len, MAX_RW_COUNT))`; 0 or -EFAULT. */
function importUbufOk(addr: bigint, len: number): number {
  const n = BigInt(Math.min(len, MAX_RW_COUNT));
  return addr + n > TASK_SIZE_MAX || addr > TASK_SIZE_MAX ? -Errno.EFAULT : 0;
}

/** io_prep_rw_pi(): copy in the PI attribute at attr_ptr and import its buffer. */
function ioPrepRwPi(req: IoKiocb, rw: IoRw): number {
  const raw = req.ctx.kernel.mm.copyFromUser(req.sqe.addr3, ATTR_PI.SIZE);
  if (typeof raw === "number") return -Errno.EFAULT;
  const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  if (v.getBigUint64(ATTR_PI.rsvd, true)) return -Errno.EINVAL;
  const err = importUbufOk(v.getBigUint64(ATTR_PI.addr, true), v.getUint32(ATTR_PI.len, true));
  if (err) return err;
  rw.hasMetadata = true;
  return 0;
}

/** __io_prep_rw(): position, ioprio, flags and the attribute mask, in the kernel's order. */
function ioPrepRwCommon(req: IoKiocb, rw: IoRw): number {
  const ioprio = req.sqe.ioprio;
  if (ioprio) {
    const err = ioprioCheckCap(ioprio);
    if (err) return err;
  }
  // sqe->attr_type_mask: only the PI attribute exists.
  const mask = req.sqe.pad2;
  if (mask) {
    if (mask !== IORING_RW_ATTR_FLAG_PI) return -Errno.EINVAL;
    return ioPrepRwPi(req, rw);
  }
  return 0;
}

/** io_prep_rw() and, for the non-fixed opcodes, io_import_rw_buffer(). */
export function ioPrepRw(req: IoKiocb): number {
  const op = req.sqe.opcode;
  const write = isWrite(op);
  const fixed = op === IORING_OP.READ_FIXED || op === IORING_OP.WRITE_FIXED;
  const rw: IoRw = {
    write,
    fixed,
    addr: req.sqe.addr,
    len: req.sqe.len,
    pos: BigInt.asIntN(64, req.sqe.off),
    rwFlags: req.sqe.rwFlags,
    iter: null,
    imu: null,
    dma: null,
    hasMetadata: false,
  };
  req.op = rw;
  const common = ioPrepRwCommon(req, rw);
  if (common) return common;
  if (fixed) return 0;
  // REQ_F_BUFFER_SELECT: nothing is imported at prep (the buffer comes from a group at
  // issue, and no provided-buffer group is modelled: -ENOBUFS then); io_prep_rwv() still
  // wants exactly one iovec and reads it (io_iov_buffer_select_prep).
  if (req.flags & IOSQE.BUFFER_SELECT) {
    if (op !== IORING_OP.READV) return 0;
    if (rw.len !== 1) return -Errno.EINVAL;
    const iov = req.ctx.kernel.mm.copyFromUser(rw.addr, IOVEC.SIZE);
    return typeof iov === "number" ? -Errno.EFAULT : 0;
  }
  const dir = write ? "write" : "read";
  const t0 = req.ctx.kernel.stats.begin();
  try {
    if (op === IORING_OP.READV || op === IORING_OP.WRITEV) {
      const iov = importIovec(req, rw.addr, rw.len);
      if (typeof iov === "number") return iov;
      rw.iter = iovIterIovec(dir, iov);
    } else {
      // import_ubuf(): access_ok() only; an unmapped page faults at copy time.
      const len = Math.min(rw.len, MAX_RW_COUNT);
      const err = importUbufOk(rw.addr, len);
      if (err) return err;
      rw.iter = iovIterUbuf(dir, rw.addr, len);
    }
    req.ctx.kernel.stats.add(COUNTER.iovIters);
    req.res = rw.iter.count;
    return 0;
  } finally {
    req.ctx.kernel.stats.end("iov_iter", t0);
  }
}

/** io_rw_init_file() + kiocb_set_rw_flags(): the kiocb flags, or -errno. */
function rwInitFile(req: IoKiocb, rw: IoRw): number {
  const f = req.file!;
  if (rw.write ? !f.canWrite : !f.canRead) return -Errno.EBADF;
  let flags = 0;
  if (f.flags & O.DIRECT) flags |= IOCB.DIRECT;
  if (f.flags & O.APPEND) flags |= IOCB.APPEND;
  if (f.flags & O.DSYNC) flags |= IOCB.DSYNC;
  if (rw.write) flags |= IOCB.WRITE;
  // kiocb_set_rw_flags()
  const rwf = rw.rwFlags;
  if (rwf) {
    if (rwf & ~RWF_SUPPORTED) return -Errno.EOPNOTSUPP;
    if ((rwf & RWF.APPEND) && (rwf & RWF.NOAPPEND)) return -Errno.EINVAL;
    // Every modelled file has FMODE_NOWAIT (ext4 regular files, block devices).
    // No modelled file can write atomically (FMODE_CAN_ATOMIC_WRITE).
    if (rwf & RWF.ATOMIC) return -Errno.EOPNOTSUPP;
    if ((rwf & RWF.DONTCACHE) && !f.fOp.dontcache) return -Errno.EOPNOTSUPP;
    if (rwf & RWF.HIPRI) flags |= IOCB.HIPRI;
    if (rwf & RWF.DSYNC) flags |= IOCB.DSYNC;
    if (rwf & RWF.SYNC) flags |= IOCB.DSYNC | IOCB.SYNC;
    if (rwf & RWF.NOWAIT) flags |= IOCB.NOWAIT;
    if (rwf & RWF.APPEND) flags |= IOCB.APPEND;
    // No inode is append-only (S_APPEND, -EPERM): RWF_NOAPPEND just drops O_APPEND.
    if (rwf & RWF.NOAPPEND) flags &= ~IOCB.APPEND;
  }
  // IOPOLL is not modelled: RWF_HIPRI on a ring without it is refused.
  if (flags & IOCB.HIPRI) return -Errno.EINVAL;
  // REQ_F_HAS_METADATA: no modelled file has FMODE_HAS_METADATA.
  if (rw.hasMetadata) return -Errno.EINVAL;
  return flags;
}

/**
 * The kiocb of a read/write request (struct io_rw's kiocb) and its
 * ki_complete, io_complete_rw(): a completion before issue returned
 * -EIOCBQUEUED is kept for issue to return (`early`); after, it moves the
 * file position (offset -1) and completes the request from task work.
 */
class RwKiocb implements Kiocb {
  /** Issue returned -EIOCBQUEUED: the completion goes to the ring. */
  queued = false;
  /** A result that arrived before issue returned. */
  early: number | null = null;
  /** ki_pos at issue (the file position moves from here). */
  readonly #startPos: bigint;

  constructor(
    public file: File,
    public pos: bigint,
    public flags: number,
    readonly req: IoKiocb,
    readonly curPos: boolean,
  ) {
    this.#startPos = pos;
  }

  complete(res: number): void {
    if (!this.queued) {
      this.early = res;
      return;
    }
    if (this.curPos && res > 0) this.file.pos = this.#startPos + BigInt(res);
    this.req.ctx.completeReq(this.req, res);
  }
}

/** What io_import_fixed() took for a fixed read/write: the tag's user, then the buffer. */
function ioRwFixedCleanup(req: IoKiocb): void {
  const rw = req.op as IoRw;
  if (rw.dma) putDmaUser(rw.dma);
  req.ctx.bufTable.put(rw.imu!);
}

/** io_read() / io_write() and io_read_fixed() / io_write_fixed(). */
export function ioRw(req: IoKiocb): number {
  const rw = req.op as IoRw;
  const ctx = req.ctx;
  const f = req.file!;
  if (rw.fixed) {
    const t0 = ctx.kernel.stats.begin();
    const err = ioImportFixed(
      ctx.bufTable,
      rw.write ? "write" : "read",
      req.sqe.bufIndex,
      rw.addr,
      Math.min(rw.len, MAX_RW_COUNT),
      f,
      rw,
    );
    ctx.kernel.stats.end("iov_iter", t0);
    if (err) return err;
    ctx.kernel.stats.add(COUNTER.iovIters);
    req.res = rw.iter!.count;
    req.cleanup = ioRwFixedCleanup;
  }
  const flags = rwInitFile(req, rw);
  if (flags < 0) return flags;
  // io_write(): a buffered NOWAIT write to a regular file without FOP_BUFFER_WASYNC (ext4)
  // cannot be done without blocking, and REQ_F_NOWAIT forbids the io-wq retry.
  if (rw.write && (flags & IOCB.NOWAIT) && !(flags & IOCB.DIRECT) && f.inode.kind === "reg") {
    return -Errno.EAGAIN;
  }
  // io_kiocb_update_pos(): offset -1 means the file position (IORING_FEAT_RW_CUR_POS).
  const curPos = rw.pos === -1n;
  const pos = curPos ? f.pos : rw.pos;
  // rw_verify_area(): pos + count is a loff_t and may wrap negative (a count is below 2^32,
  // so only from a pos above 2^63 - 2^32; the sum is formed only then).
  if (pos < 0n) return -Errno.EINVAL;
  if (pos > LOFF_WRAP_FLOOR && BigInt.asIntN(64, pos + BigInt(rw.iter!.count)) < 0n) {
    return -Errno.EINVAL;
  }
  const handler = rw.write ? f.fOp.writeIter : f.fOp.readIter;
  if (!handler) return -Errno.EINVAL;
  const kiocb = new RwKiocb(f, pos, flags, req, curPos);
  const ret = handler.call(f.fOp, kiocb, rw.iter!);
  if (ret === -Errno.EIOCBQUEUED) {
    const early = kiocb.early;
    if (early !== null) {
      if (curPos && early > 0) f.pos = pos + BigInt(early);
      return early;
    }
    kiocb.queued = true;
    return IOU_ISSUE_QUEUED;
  }
  if (curPos && ret > 0) f.pos = pos + BigInt(ret);
  return ret;
}
