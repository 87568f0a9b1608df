/**
 * IORING_OP_MSG_RING (io_uring/msg_ring.c): post a CQE on another ring
 * (IORING_MSG_DATA) or pass a fixed file to another ring's fixed table
 * (IORING_MSG_SEND_FD). The target is a ring descriptor.
 *
 * @module
 */

import { fput, getFile } from "../fs/file.ts";
import { Errno } from "../uapi/errno.ts";
import { IORING_MSG, IORING_MSG_RING } from "../uapi/io_uring.ts";
import type { IoKiocb } from "./io_uring_types.ts";
import { ioUringCtxOf } from "./ring_file.ts";

/** IORING_FILE_INDEX_ALLOC: let the target pick a free slot. */
export const IORING_FILE_INDEX_ALLOC = 0xffffffff;
const IORING_MSG_RING_MASK = IORING_MSG_RING.CQE_SKIP | IORING_MSG_RING.FLAGS_PASS;

interface IoMsg {
  userData: bigint;
  len: number;
  cmd: bigint;
  srcFd: bigint;
  dstFd: number;
  flags: number;
}

/** io_msg_ring_prep() */
export function ioMsgRingPrep(req: IoKiocb): number {
  const s = req.sqe;
  if (s.bufIndex || s.personality) return -Errno.EINVAL;
  const msg: IoMsg = {
    userData: s.off,
    len: s.len | 0,
    cmd: s.addr,
    srcFd: s.addr3,
    dstFd: s.fileIndex,
    flags: s.rwFlags,
  };
  if (msg.flags & ~IORING_MSG_RING_MASK) return -Errno.EINVAL;
  req.op = msg;
  return 0;
}

/** io_msg_ring() */
export function ioMsgRing(req: IoKiocb): number {
  const msg = req.op as IoMsg;
  const target = ioUringCtxOf(req.file!);
  if (!target) return -Errno.EBADFD;
  if (msg.cmd === BigInt(IORING_MSG.DATA)) {
    // __io_msg_ring_data()
    if (msg.srcFd || (msg.flags & ~IORING_MSG_RING.FLAGS_PASS)) return -Errno.EINVAL;
    if (!(msg.flags & IORING_MSG_RING.FLAGS_PASS) && msg.dstFd) return -Errno.EINVAL;
    if (target.disabled) return -Errno.EBADFD;
    const cflags = msg.flags & IORING_MSG_RING.FLAGS_PASS ? msg.dstFd : 0;
    target.postAuxCqe(msg.userData, msg.len, cflags);
    return 0;
  }
  if (msg.cmd === BigInt(IORING_MSG.SEND_FD)) {
    // io_msg_send_fd()
    if (msg.len) return -Errno.EINVAL;
    if (target === req.ctx) return -Errno.EINVAL;
    if (target.disabled) return -Errno.EBADFD;
    const src = msg.srcFd > 0xffffffffn ? null : req.ctx.fileTable.get(Number(msg.srcFd));
    if (!src) return -Errno.EBADF;
    const f = getFile(src);
    const ret = target.fileTable.installFixed(f, msg.dstFd);
    if (ret < 0) {
      fput(f);
      return ret;
    }
    if (!(msg.flags & IORING_MSG_RING.CQE_SKIP)) target.postAuxCqe(msg.userData, ret, 0);
    return 0;
  }
  return -Errno.EINVAL;
}
