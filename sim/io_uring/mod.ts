/**
 * The io_uring mirror: {@link SimRing} (setup, submit, reap, register) and
 * the pieces a caller may want to inspect.
 *
 * @module
 */

export {
  IO_RINGS,
  IORING_SETUP_FLAGS,
  SIM_FEATURES,
  SIM_SETUP_FLAGS,
  SimRing,
  type SimRingOptions,
} from "./io_uring.ts";
export { IORING_OP_LAST, ioUringOpSupported } from "./opdef.ts";
export { IORING_NOP } from "./nop.ts";
export { FileTable } from "./filetable.ts";
export { BufTable, type BufTableOptions, type IoBufDma, type IoMappedUbuf } from "./rsrc.ts";
export type { IoKiocb, IoOpDef, IoRingCtx } from "./io_uring_types.ts";
