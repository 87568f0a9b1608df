/**
 * io_uring_register(2) (io_uring/register.c __io_uring_register): the
 * register opcodes the mirror implements, each with the kernel's argument
 * checks in the kernel's order, plus the proposal's
 * IORING_REGISTER_MAP_BUFFERS / IORING_REGISTER_UNMAP_BUFFERS.
 *
 * `arg` holds the bytes user space passes at the `arg` pointer (null for a
 * NULL pointer). Pointers inside it (an fd array, an iovec array) are user
 * addresses in `kernel.mm`. Results the kernel copies back to user space
 * (PROBE) are written into `arg`.
 *
 * Implemented: REGISTER/UNREGISTER_BUFFERS, REGISTER/UNREGISTER_FILES,
 * REGISTER_FILES_UPDATE, REGISTER_PROBE, REGISTER_ENABLE_RINGS,
 * REGISTER_FILES2, REGISTER_FILES_UPDATE2, REGISTER_BUFFERS2,
 * REGISTER_BUFFERS_UPDATE, MAP/UNMAP_BUFFERS. Every other opcode returns
 * -EINVAL (unknown ones as the kernel does; known ones are not modelled).
 * Resource tags (the `tags` arrays of REGISTER_FILES2/BUFFERS2 and the
 * UPDATE2 calls) are kept on each file slot and buffer; a tagged resource
 * posts a CQE with its tag as user_data (res 0) once it leaves the table and
 * its last in-flight user is done.
 *
 * @module
 */

import { Errno } from "../uapi/errno.ts";
import {
  IO_URING_OP_SUPPORTED,
  IORING_MAX_FIXED_FILES,
  IORING_MAX_REG_BUFFERS,
  IORING_REGISTER,
  IORING_REGISTER_LAST,
  IORING_RSRC_REGISTER_SPARSE,
  IOVEC,
  MAP_BUFFERS,
  PROBE,
  RSRC_REGISTER,
  RSRC_UPDATE,
  RSRC_UPDATE2,
} from "../uapi/io_uring.ts";
import type { IoRingCtx } from "./io_uring_types.ts";
import { IORING_OP_LAST, ioUringOpSupported } from "./opdef.ts";
import {
  copyFds,
  copyIovecs,
  copyTags,
  decodeIovecs,
  ioMapBuffers,
  ioMapBuffersCheck,
  ioRegisterRsrcUpdate as rsrcUpdate,
  ioUnmapBuffers,
  unmapWhen,
  view,
} from "./rsrc.ts";

/** io_register_rsrc(): REGISTER_FILES2 / REGISTER_BUFFERS2. */
function registerRsrc(
  ctx: IoRingCtx,
  arg: Uint8Array | null,
  size: number,
  type: "file" | "buffer",
): number {
  if (size !== RSRC_REGISTER.SIZE) return -Errno.EINVAL;
  if (!arg || arg.length < RSRC_REGISTER.SIZE) return -Errno.EFAULT;
  const v = view(arg);
  const nr = v.getUint32(RSRC_REGISTER.nr, true);
  const flags = v.getUint32(RSRC_REGISTER.flags, true);
  const resv2 = v.getBigUint64(RSRC_REGISTER.resv2, true);
  const data = v.getBigUint64(RSRC_REGISTER.data, true);
  const tags = v.getBigUint64(RSRC_REGISTER.tags, true);
  if (!nr || resv2) return -Errno.EINVAL;
  if (flags & ~IORING_RSRC_REGISTER_SPARSE) return -Errno.EINVAL;
  const sparse = (flags & IORING_RSRC_REGISTER_SPARSE) !== 0;
  if (sparse && data) return -Errno.EINVAL;
  // A NULL data pointer is all-sparse with or without the flag: the kernel
  // passes it on as a NULL array and reads nothing from it.
  // io_sqe_files_register() / io_sqe_buffers_register() check the table and
  // the count before they read a single entry: a huge nr is -EMFILE/-EINVAL,
  // never a fault. A tag on a sparse slot is -EINVAL.
  if (type === "file") {
    if (ctx.fileTable.nr) return -Errno.EBUSY;
    if (nr > IORING_MAX_FIXED_FILES || nr > ctx.fdt.maxFds) return -Errno.EMFILE;
    const tagArr = copyTags(ctx, tags, nr);
    if (typeof tagArr === "number") return tagArr;
    if (sparse || !data) return ctx.fileTable.register(ctx.fdt, null, nr, tagArr);
    const fds = copyFds(ctx, data, nr);
    if (typeof fds === "number") return fds;
    return ctx.fileTable.register(ctx.fdt, fds, nr, tagArr);
  }
  if (ctx.bufTable.nr) return -Errno.EBUSY;
  if (nr > IORING_MAX_REG_BUFFERS) return -Errno.EINVAL;
  const tagArr = copyTags(ctx, tags, nr);
  if (typeof tagArr === "number") return tagArr;
  if (sparse || !data) return ctx.bufTable.register(null, nr, tagArr);
  const iovs = copyIovecs(ctx, data, nr);
  if (typeof iovs === "number") return iovs;
  return ctx.bufTable.register(iovs, nr, tagArr);
}

/** io_register_rsrc_update(): REGISTER_FILES_UPDATE2 / REGISTER_BUFFERS_UPDATE. */
function registerRsrcUpdate(
  ctx: IoRingCtx,
  arg: Uint8Array | null,
  size: number,
  type: "file" | "buffer",
): number {
  if (size !== RSRC_UPDATE2.SIZE) return -Errno.EINVAL;
  if (!arg || arg.length < RSRC_UPDATE2.SIZE) return -Errno.EFAULT;
  const v = view(arg);
  const nr = v.getUint32(RSRC_UPDATE2.nr, true);
  if (!nr || v.getUint32(RSRC_UPDATE2.resv, true) || v.getUint32(RSRC_UPDATE2.resv2, true)) {
    return -Errno.EINVAL;
  }
  return rsrcUpdate(
    ctx,
    type,
    v.getUint32(RSRC_UPDATE2.offset, true),
    v.getBigUint64(RSRC_UPDATE2.data, true),
    v.getBigUint64(RSRC_UPDATE2.tags, true),
    nr,
  );
}

/** io_probe() */
function ioProbe(arg: Uint8Array, nrArgs: number): number {
  if (nrArgs > IORING_OP_LAST) nrArgs = IORING_OP_LAST;
  const size = PROBE.SIZE + PROBE.OP_SIZE * nrArgs;
  if (arg.length < size) return -Errno.EFAULT;
  if (arg.subarray(0, size).some((b) => b !== 0)) return -Errno.EINVAL;
  const v = view(arg);
  v.setUint8(PROBE.lastOp, IORING_OP_LAST - 1);
  for (let i = 0; i < nrArgs; i++) {
    const at = PROBE.SIZE + i * PROBE.OP_SIZE;
    v.setUint8(at + PROBE.opOp, i);
    v.setUint16(at + PROBE.opFlags, ioUringOpSupported(i) ? IO_URING_OP_SUPPORTED : 0, true);
  }
  v.setUint8(PROBE.opsLen, nrArgs);
  return 0;
}

/**
 * io_register_map_buffers() / io_register_unmap_buffers() (the proposal, v2),
 * entered from the dispatch once `arg` is non-NULL and `nr_args` is 1:
 * CAP_SYS_ADMIN (-EPERM), then get_map_range(): copy the 32-byte argument
 * (-EFAULT), then the range checks of {@link ioMapBuffersCheck}.
 */
function ioRegisterMapBuffers(ctx: IoRingCtx, arg: Uint8Array, map: boolean): number {
  if (!ctx.kernel.capSysAdmin) return -Errno.EPERM;
  if (arg.length < MAP_BUFFERS.SIZE) return -Errno.EFAULT;
  const a = ioMapBuffersCheck(arg, ctx.fileTable.nr, ctx.bufTable.nr);
  if (typeof a === "number") return a;
  if (!map) return ioUnmapBuffers(ctx.bufTable, a, unmapWhen(ctx.kernel.premap));
  return ioMapBuffers(ctx.bufTable, ctx.fileTable.get(a.fd), a);
}

/** __io_uring_register(): dispatch one register opcode. */
export function ioUringRegister(
  ctx: IoRingCtx,
  opcode: number,
  arg: Uint8Array | null,
  nrArgs: number,
): number {
  if (!Number.isInteger(opcode) || opcode < 0 || opcode >= IORING_REGISTER_LAST) {
    return -Errno.EINVAL;
  }
  nrArgs = nrArgs >>> 0;
  const R = IORING_REGISTER;
  switch (opcode) {
    case R.REGISTER_BUFFERS: {
      if (!arg) return -Errno.EFAULT;
      const n = Math.min(nrArgs, Math.floor(arg.length / IOVEC.SIZE));
      return ctx.bufTable.register(decodeIovecs(arg, n), nrArgs);
    }
    case R.UNREGISTER_BUFFERS:
      if (arg || nrArgs) return -Errno.EINVAL;
      return ctx.bufTable.unregister();
    case R.REGISTER_FILES: {
      if (!arg) return -Errno.EFAULT;
      if (arg.length < 4 * Math.min(nrArgs, ctx.fdt.maxFds + 1)) {
        if (ctx.fileTable.nr) return -Errno.EBUSY;
        if (!nrArgs) return -Errno.EINVAL;
        if (nrArgs > ctx.fdt.maxFds) return -Errno.EMFILE;
        return -Errno.EFAULT;
      }
      const v = view(arg);
      const fds = Array.from(
        { length: Math.min(nrArgs, ctx.fdt.maxFds + 1) },
        (_, i) => v.getInt32(4 * i, true),
      );
      return ctx.fileTable.register(ctx.fdt, fds, nrArgs);
    }
    case R.UNREGISTER_FILES:
      if (arg || nrArgs) return -Errno.EINVAL;
      return ctx.fileTable.unregister();
    case R.REGISTER_FILES_UPDATE: {
      if (!nrArgs) return -Errno.EINVAL;
      if (!arg || arg.length < RSRC_UPDATE.SIZE) return -Errno.EFAULT;
      const v = view(arg);
      if (v.getUint32(RSRC_UPDATE.resv, true)) return -Errno.EINVAL;
      const off = v.getUint32(RSRC_UPDATE.offset, true);
      return rsrcUpdate(ctx, "file", off, v.getBigUint64(RSRC_UPDATE.data, true), 0n, nrArgs);
    }
    case R.REGISTER_PROBE:
      if (!arg || nrArgs > 256) return -Errno.EINVAL;
      return ioProbe(arg, nrArgs);
    case R.REGISTER_ENABLE_RINGS:
      if (arg || nrArgs) return -Errno.EINVAL;
      return -Errno.EBADFD;
    case R.REGISTER_FILES2:
      return registerRsrc(ctx, arg, nrArgs, "file");
    case R.REGISTER_FILES_UPDATE2:
      return registerRsrcUpdate(ctx, arg, nrArgs, "file");
    case R.REGISTER_BUFFERS2:
      return registerRsrc(ctx, arg, nrArgs, "buffer");
    case R.REGISTER_BUFFERS_UPDATE:
      return registerRsrcUpdate(ctx, arg, nrArgs, "buffer");
    // The proposal's dispatch checks these before the handler's CAP_SYS_ADMIN check.
    case R.REGISTER_MAP_BUFFERS:
      if (!arg || nrArgs !== 1) return -Errno.EINVAL;
      return ioRegisterMapBuffers(ctx, arg, true);
    case R.REGISTER_UNMAP_BUFFERS:
      if (!arg || nrArgs !== 1) return -Errno.EINVAL;
      return ioRegisterMapBuffers(ctx, arg, false);
    default:
      return -Errno.EINVAL;
  }
}
