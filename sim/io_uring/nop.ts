/**
 * IORING_OP_NOP (io_uring/nop.c), with the nop_flags of 6.18: inject a
 * result, look up a file (normal or fixed), look up a registered buffer.
 *
 * @module
 */

import { fput } from "../fs/file.ts";
import { Errno } from "../uapi/errno.ts";
import type { IoKiocb } from "./io_uring_types.ts";

/** IORING_NOP_* flags (sqe->nop_flags, at the rw_flags offset). */
export const IORING_NOP = {
  INJECT_RESULT: 1 << 0,
  FILE: 1 << 1,
  FIXED_FILE: 1 << 2,
  FIXED_BUFFER: 1 << 3,
  TW: 1 << 4,
  CQE32: 1 << 5,
} as const;

const NOP_FLAGS = 0x3f;

interface IoNop {
  flags: number;
  result: number;
  fd: number;
}

/** io_nop_prep() */
export function ioNopPrep(req: IoKiocb): number {
  const flags = req.sqe.rwFlags;
  if (flags & ~NOP_FLAGS) return -Errno.EINVAL;
  // No CQE32 or CQE_MIXED ring is modelled, so a 32-byte CQE cannot be asked for.
  if (flags & IORING_NOP.CQE32) return -Errno.EINVAL;
  const result = flags & IORING_NOP.INJECT_RESULT ? req.sqe.len | 0 : 0;
  const fd = flags & IORING_NOP.FILE ? req.sqe.fd : -1;
  req.op = { flags, result, fd } satisfies IoNop;
  return 0;
}

/** io_nop() */
export function ioNop(req: IoKiocb): number {
  const nop = req.op as IoNop;
  let ret = nop.result;
  if (nop.flags & IORING_NOP.FILE) {
    const f = nop.flags & IORING_NOP.FIXED_FILE
      ? req.ctx.fileTable.get(nop.fd)
      : req.ctx.fdt.lookup(nop.fd) ?? null;
    if (!f) return -Errno.EBADF;
  }
  if (nop.flags & IORING_NOP.FIXED_BUFFER) {
    if (!req.ctx.bufTable.get(req.sqe.bufIndex)) ret = -Errno.EFAULT;
  }
  return ret;
}

/** Drop the file reference a request holds (shared by opcodes). */
export function ioPutFile(req: IoKiocb): void {
  if (req.file) fput(req.file);
  req.file = null;
}
