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
import { IOCB, type Kiocb } from "../fs/file.ts";
import { Errno } from "../uapi/errno.ts";
import { IORING_OP, IOVEC, O } from "../uapi/io_uring.ts";
import { type IoKiocb, IOU_ISSUE_QUEUED } from "./io_uring_types.ts";
import { ioImportFixed, putDmaUser } from "./rsrc.ts";

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
const RWF_SUPPORTED = 0xff;

interface IoRw {
  write: boolean;
  fixed: boolean;
  addr: bigint;
  len: number;
  pos: bigint;
  rwFlags: number;
  iter: IovIter | null;
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
  };
  req.op = rw;
  if (fixed) return 0;
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
      if (rw.addr + BigInt(len) > 0x7fff_ffff_f000n) return -Errno.EFAULT;
      rw.iter = iovIterUbuf(dir, rw.addr, len);
    }
    req.ctx.kernel.stats.add("iovIters");
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
  if (rw.rwFlags & ~RWF_SUPPORTED) return -Errno.EOPNOTSUPP;
  if (rw.rwFlags & RWF.ATOMIC) return -Errno.EOPNOTSUPP;
  if (rw.rwFlags & RWF.DONTCACHE) return -Errno.EOPNOTSUPP;
  if (rw.rwFlags & RWF.HIPRI) flags |= IOCB.HIPRI;
  if (rw.rwFlags & RWF.DSYNC) flags |= IOCB.DSYNC;
  if (rw.rwFlags & RWF.SYNC) flags |= IOCB.DSYNC | IOCB.SYNC;
  if (rw.rwFlags & RWF.NOWAIT) flags |= IOCB.NOWAIT;
  if (rw.rwFlags & RWF.APPEND) flags |= IOCB.APPEND;
  if (rw.rwFlags & RWF.NOAPPEND) {
    if (f.flags & O.APPEND) return -Errno.EPERM;
    flags &= ~IOCB.APPEND;
  }
  return flags;
}

/** io_read() / io_write() and io_read_fixed() / io_write_fixed(). */
export function ioRw(req: IoKiocb): number {
  const rw = req.op as IoRw;
  const ctx = req.ctx;
  const f = req.file!;
  if (rw.fixed) {
    const t0 = ctx.kernel.stats.begin();
    const imp = ioImportFixed(
      ctx.bufTable,
      rw.write ? "write" : "read",
      req.sqe.bufIndex,
      rw.addr,
      Math.min(rw.len, MAX_RW_COUNT),
      f,
    );
    ctx.kernel.stats.end("iov_iter", t0);
    if (typeof imp === "number") return imp;
    ctx.kernel.stats.add("iovIters");
    rw.iter = imp.iter;
    req.res = imp.iter.count;
    req.cleanup = () => {
      if (imp.dma) putDmaUser(imp.dma);
      ctx.bufTable.put(imp.imu);
    };
  }
  const flags = rwInitFile(req, rw);
  if (flags < 0) return flags;
  // io_kiocb_update_pos(): offset -1 means the file position (IORING_FEAT_RW_CUR_POS).
  const curPos = rw.pos === -1n;
  const pos = curPos ? f.pos : rw.pos;
  // rw_verify_area()
  if (pos < 0n || pos + BigInt(rw.iter!.count) < 0n) return -Errno.EINVAL;
  const handler = rw.write ? f.fOp.writeIter : f.fOp.readIter;
  if (!handler) return -Errno.EINVAL;
  let queued = false;
  let early: number | null = null;
  const kiocb: Kiocb = {
    file: f,
    pos,
    flags,
    complete: (res: number) => {
      if (!queued) {
        early = res;
        return;
      }
      if (curPos && res > 0) f.pos = pos + BigInt(res);
      ctx.completeReq(req, res);
    },
  };
  const ret = handler.call(f.fOp, kiocb, rw.iter!);
  if (ret === -Errno.EIOCBQUEUED) {
    if (early !== null) {
      if (curPos && early > 0) f.pos = pos + BigInt(early);
      return early;
    }
    queued = true;
    return IOU_ISSUE_QUEUED;
  }
  if (curPos && ret > 0) f.pos = pos + BigInt(ret);
  return ret;
}
