/**
 * IORING_OP_FSYNC (io_uring/sync.c): vfs_fsync_range() on the request's file.
 *
 * @module
 */

import { Errno } from "../uapi/errno.ts";
import { IORING_FSYNC_DATASYNC } from "../uapi/io_uring.ts";
import { type IoKiocb, IOU_ISSUE_QUEUED } from "./io_uring_types.ts";

interface IoSync {
  datasync: boolean;
  off: bigint;
  len: number;
}

/** io_fsync_prep() */
export function ioFsyncPrep(req: IoKiocb): number {
  const s = req.sqe;
  if (s.addr || s.bufIndex || s.fileIndex) return -Errno.EINVAL;
  if (s.rwFlags & ~IORING_FSYNC_DATASYNC) return -Errno.EINVAL;
  // A negative offset fails prep (observed on 6.18: off -1, -4096 and 2^63 end the
  // submission like any prep failure, whatever len).
  if (BigInt.asIntN(64, s.off) < 0n) return -Errno.EINVAL;
  req.op = {
    datasync: (s.rwFlags & IORING_FSYNC_DATASYNC) !== 0,
    off: s.off,
    len: s.len,
  } satisfies IoSync;
  return 0;
}

/**
 * io_fsync() -> vfs_fsync_range(): 0, -errno, or queued until the device
 * flushes. The range is `[off, off + len)`, to LLONG_MAX when that sum is not
 * positive.
 */
export function ioFsync(req: IoKiocb): number {
  const sync = req.op as IoSync;
  const f = req.file!;
  if (!f.fOp.fsync) return -Errno.EINVAL;
  let queued = false;
  let early: number | null = null;
  const ret = f.fOp.fsync(f, sync.datasync, (res) => {
    if (!queued) early = res;
    else req.ctx.completeReq(req, res);
  });
  if (ret === -Errno.EIOCBQUEUED) {
    if (early !== null) return early;
    queued = true;
    return IOU_ISSUE_QUEUED;
  }
  return ret;
}
