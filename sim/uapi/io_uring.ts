/**
 * The io_uring uAPI (include/uapi/linux/io_uring.h): opcodes, flags, register
 * opcodes and the byte layouts of the structures that cross the user/kernel
 * boundary. Both backends share these numbers; the sim mirror and the live
 * kernel binding read and write the same bytes.
 *
 * The proposal's `IORING_REGISTER_MAP_BUFFERS`/`UNMAP_BUFFERS` were 28/29 in
 * the 2022 series. Mainline has since used 28 (`IORING_UNREGISTER_NAPI`) and
 * 29 (`IORING_REGISTER_CLOCK`) and grown to `IORING_REGISTER_BPF_FILTER = 37`,
 * so they are rebased here to the next free values, 38 and 39. They are never
 * forwarded to a live kernel.
 *
 * @module
 */

/** SQE opcodes (enum io_uring_op). */
export const IORING_OP = {
  NOP: 0,
  READV: 1,
  WRITEV: 2,
  FSYNC: 3,
  READ_FIXED: 4,
  WRITE_FIXED: 5,
  POLL_ADD: 6,
  POLL_REMOVE: 7,
  SYNC_FILE_RANGE: 8,
  SENDMSG: 9,
  RECVMSG: 10,
  TIMEOUT: 11,
  TIMEOUT_REMOVE: 12,
  ACCEPT: 13,
  ASYNC_CANCEL: 14,
  LINK_TIMEOUT: 15,
  CONNECT: 16,
  FALLOCATE: 17,
  OPENAT: 18,
  CLOSE: 19,
  FILES_UPDATE: 20,
  STATX: 21,
  READ: 22,
  WRITE: 23,
  FADVISE: 24,
  MADVISE: 25,
  SEND: 26,
  RECV: 27,
  OPENAT2: 28,
  EPOLL_CTL: 29,
  SPLICE: 30,
  PROVIDE_BUFFERS: 31,
  REMOVE_BUFFERS: 32,
  TEE: 33,
  SHUTDOWN: 34,
  RENAMEAT: 35,
  UNLINKAT: 36,
  MKDIRAT: 37,
  SYMLINKAT: 38,
  LINKAT: 39,
  MSG_RING: 40,
} as const;

/** SQE flags (IOSQE_*). */
export const IOSQE = {
  FIXED_FILE: 1 << 0,
  IO_DRAIN: 1 << 1,
  IO_LINK: 1 << 2,
  IO_HARDLINK: 1 << 3,
  ASYNC: 1 << 4,
  BUFFER_SELECT: 1 << 5,
  CQE_SKIP_SUCCESS: 1 << 6,
} as const;

/** io_uring_setup() flags (IORING_SETUP_*). */
export const IORING_SETUP = {
  IOPOLL: 1 << 0,
  SQPOLL: 1 << 1,
  SQ_AFF: 1 << 2,
  CQSIZE: 1 << 3,
  CLAMP: 1 << 4,
  ATTACH_WQ: 1 << 5,
  R_DISABLED: 1 << 6,
  SUBMIT_ALL: 1 << 7,
  COOP_TASKRUN: 1 << 8,
  TASKRUN_FLAG: 1 << 9,
  SQE128: 1 << 10,
  CQE32: 1 << 11,
  SINGLE_ISSUER: 1 << 12,
  DEFER_TASKRUN: 1 << 13,
  NO_MMAP: 1 << 14,
  REGISTERED_FD_ONLY: 1 << 15,
  NO_SQARRAY: 1 << 16,
} as const;

/** io_uring_enter() flags (IORING_ENTER_*). */
export const IORING_ENTER = {
  GETEVENTS: 1 << 0,
  SQ_WAKEUP: 1 << 1,
  SQ_WAIT: 1 << 2,
  EXT_ARG: 1 << 3,
  REGISTERED_RING: 1 << 4,
} as const;

/** Feature bits reported in io_uring_params.features (IORING_FEAT_*). */
export const IORING_FEAT = {
  SINGLE_MMAP: 1 << 0,
  NODROP: 1 << 1,
  SUBMIT_STABLE: 1 << 2,
  RW_CUR_POS: 1 << 3,
  CUR_PERSONALITY: 1 << 4,
  FAST_POLL: 1 << 5,
  POLL_32BITS: 1 << 6,
  SQPOLL_NONFIXED: 1 << 7,
  EXT_ARG: 1 << 8,
  NATIVE_WORKERS: 1 << 9,
  RSRC_TAGS: 1 << 10,
  CQE_SKIP: 1 << 11,
  LINKED_FILE: 1 << 12,
} as const;

/** SQ ring flags (IORING_SQ_*). */
export const IORING_SQ = {
  NEED_WAKEUP: 1 << 0,
  CQ_OVERFLOW: 1 << 1,
  TASKRUN: 1 << 2,
} as const;

/** CQE flags (IORING_CQE_F_*). */
export const IORING_CQE_F = {
  BUFFER: 1 << 0,
  MORE: 1 << 1,
  SOCK_NONEMPTY: 1 << 2,
  NOTIF: 1 << 3,
} as const;

/** sqe->timeout_flags (IORING_TIMEOUT_*, at the rw_flags offset) for TIMEOUT, LINK_TIMEOUT, TIMEOUT_REMOVE. */
export const IORING_TIMEOUT = {
  ABS: 1 << 0,
  UPDATE: 1 << 1,
  BOOTTIME: 1 << 2,
  REALTIME: 1 << 3,
  LINK_TIMEOUT_UPDATE: 1 << 4,
  ETIME_SUCCESS: 1 << 5,
  MULTISHOT: 1 << 6,
} as const;
/** IORING_TIMEOUT_CLOCK_MASK */
export const IORING_TIMEOUT_CLOCK_MASK = IORING_TIMEOUT.BOOTTIME | IORING_TIMEOUT.REALTIME;
/** IORING_TIMEOUT_UPDATE_MASK */
export const IORING_TIMEOUT_UPDATE_MASK = IORING_TIMEOUT.UPDATE |
  IORING_TIMEOUT.LINK_TIMEOUT_UPDATE;
/** struct __kernel_timespec (16 bytes): tv_sec s64, tv_nsec s64. */
export const KERNEL_TIMESPEC = { SIZE: 16, tvSec: 0, tvNsec: 8 } as const;

/** fsync_flags. */
export const IORING_FSYNC_DATASYNC = 1 << 0;

/** MSG_RING commands (sqe->addr) and flags (sqe->msg_ring_flags). */
export const IORING_MSG = { DATA: 0, SEND_FD: 1 } as const;
/** MSG_RING flags. */
export const IORING_MSG_RING = { CQE_SKIP: 1 << 0, FLAGS_PASS: 1 << 1 } as const;

/** mmap offsets of the rings. */
export const IORING_OFF = {
  SQ_RING: 0,
  CQ_RING: 0x8000000,
  SQES: 0x10000000,
} as const;

/** Ring size limits (io_uring/io_uring.c). */
export const IORING_MAX_ENTRIES = 32768;
/** Largest CQ ring (io_uring/io_uring.c). */
export const IORING_MAX_CQ_ENTRIES = 2 * IORING_MAX_ENTRIES;
/** Largest fixed file table (IORING_MAX_FIXED_FILES, io_uring/rsrc.h). */
export const IORING_MAX_FIXED_FILES = 1 << 20;
/** Largest number of registered buffers (io_uring/rsrc.c). */
export const IORING_MAX_REG_BUFFERS = 1 << 14;
/** Largest registered buffer: SZ_1G (io_uring/rsrc.c io_buffer_validate). */
export const IORING_MAX_BUF_SIZE = 1 << 30;
/** Sparse registration flag in io_uring_rsrc_register.flags. */
export const IORING_RSRC_REGISTER_SPARSE = 1 << 0;
/** Probe op flag. */
export const IO_URING_OP_SUPPORTED = 1 << 0;

/** The newest register opcode in mainline, from which the proposal's are rebased. */
export const IORING_REGISTER_BPF_FILTER = 37;

/**
 * io_uring_register() opcode flag: `fd` is an index into the calling task's
 * registered ring fds (IORING_REGISTER_RING_FDS), not a file descriptor.
 */
export const IORING_REGISTER_USE_REGISTERED_RING = 0x8000_0000;
/** IO_RINGFD_REG_MAX (io_uring/tctx.h): slots in a task's registered-ring table. */
export const IO_RINGFD_REG_MAX = 16;

/** io_uring_register() opcodes (enum io_uring_register_op), plus the proposal's two. */
export const IORING_REGISTER = {
  REGISTER_BUFFERS: 0,
  UNREGISTER_BUFFERS: 1,
  REGISTER_FILES: 2,
  UNREGISTER_FILES: 3,
  REGISTER_EVENTFD: 4,
  UNREGISTER_EVENTFD: 5,
  REGISTER_FILES_UPDATE: 6,
  REGISTER_EVENTFD_ASYNC: 7,
  REGISTER_PROBE: 8,
  REGISTER_PERSONALITY: 9,
  UNREGISTER_PERSONALITY: 10,
  REGISTER_RESTRICTIONS: 11,
  REGISTER_ENABLE_RINGS: 12,
  REGISTER_FILES2: 13,
  REGISTER_FILES_UPDATE2: 14,
  REGISTER_BUFFERS2: 15,
  REGISTER_BUFFERS_UPDATE: 16,
  REGISTER_IOWQ_AFF: 17,
  UNREGISTER_IOWQ_AFF: 18,
  REGISTER_IOWQ_MAX_WORKERS: 19,
  REGISTER_RING_FDS: 20,
  UNREGISTER_RING_FDS: 21,
  REGISTER_PBUF_RING: 22,
  UNREGISTER_PBUF_RING: 23,
  REGISTER_SYNC_CANCEL: 24,
  REGISTER_FILE_ALLOC_RANGE: 25,
  REGISTER_PBUF_STATUS: 26,
  REGISTER_NAPI: 27,
  UNREGISTER_NAPI: 28,
  REGISTER_CLOCK: 29,
  REGISTER_CLONE_BUFFERS: 30,
  REGISTER_SEND_MSG_RING: 31,
  REGISTER_ZCRX_IFQ: 32,
  REGISTER_RESIZE_RINGS: 33,
  REGISTER_MEM_REGION: 34,
  REGISTER_QUERY: 35,
  REGISTER_ZCRX_CTRL: 36,
  REGISTER_BPF_FILTER: IORING_REGISTER_BPF_FILTER,
  /** The proposal's map opcode (28 in the 2022 series), rebased past REGISTER_BPF_FILTER. */
  REGISTER_MAP_BUFFERS: IORING_REGISTER_BPF_FILTER + 1,
  /** The proposal's unmap opcode (29 in the 2022 series), rebased. */
  REGISTER_UNMAP_BUFFERS: IORING_REGISTER_BPF_FILTER + 2,
} as const;

/** `IORING_REGISTER_MAP_BUFFERS` (38): map registered buffers for DMA on a fixed file. */
export const IORING_REGISTER_MAP_BUFFERS: number = IORING_REGISTER.REGISTER_MAP_BUFFERS;
/** `IORING_REGISTER_UNMAP_BUFFERS` (39): undo {@link IORING_REGISTER_MAP_BUFFERS}. */
export const IORING_REGISTER_UNMAP_BUFFERS: number = IORING_REGISTER.REGISTER_UNMAP_BUFFERS;
/** One past the last register opcode the sim accepts. */
export const IORING_REGISTER_LAST: number = IORING_REGISTER_UNMAP_BUFFERS + 1;

/** open(2) flags used by the testbed (x86_64 values). */
export const O = {
  RDONLY: 0,
  WRONLY: 1,
  RDWR: 2,
  ACCMODE: 3,
  CREAT: 0o100,
  EXCL: 0o200,
  TRUNC: 0o1000,
  APPEND: 0o2000,
  NONBLOCK: 0o4000,
  DSYNC: 0o10000,
  DIRECT: 0o40000,
  LARGEFILE: 0o100000,
  DIRECTORY: 0o200000,
  CLOEXEC: 0o2000000,
  PATH: 0o10000000,
} as const;

/** Byte layout of struct io_uring_sqe (64 bytes). */
export const SQE = {
  SIZE: 64,
  opcode: 0, // u8
  flags: 1, // u8
  ioprio: 2, // u16
  fd: 4, // s32
  off: 8, // u64 (also addr2)
  addr: 16, // u64
  len: 24, // u32
  rwFlags: 28, // u32: rw_flags, fsync_flags, msg_ring_flags, ...
  userData: 32, // u64
  bufIndex: 40, // u16 (buf_index / buf_group)
  personality: 42, // u16
  fileIndex: 44, // u32: splice_fd_in / file_index
  addr3: 48, // u64
  pad2: 56, // u64
} as const;

/** Byte layout of struct io_uring_cqe (16 bytes; CQE32 doubles it). */
export const CQE = { SIZE: 16, userData: 0, res: 8, flags: 12 } as const;

/** Byte layout of struct io_uring_params (120 bytes) and its sq_off/cq_off. */
export const PARAMS = {
  SIZE: 120,
  sqEntries: 0,
  cqEntries: 4,
  flags: 8,
  sqThreadCpu: 12,
  sqThreadIdle: 16,
  features: 20,
  wqFd: 24,
  resv: 28, // u32[3]
  sqOff: 40, // struct io_sqring_offsets (40 bytes)
  cqOff: 80, // struct io_cqring_offsets (40 bytes)
} as const;

/** struct io_sqring_offsets field offsets (relative to PARAMS.sqOff). */
export const SQ_OFF = {
  head: 0,
  tail: 4,
  ringMask: 8,
  ringEntries: 12,
  flags: 16,
  dropped: 20,
  array: 24,
  resv1: 28,
  userAddr: 32,
} as const;

/** struct io_cqring_offsets field offsets (relative to PARAMS.cqOff). */
export const CQ_OFF = {
  head: 0,
  tail: 4,
  ringMask: 8,
  ringEntries: 12,
  overflow: 16,
  cqes: 20,
  flags: 24,
  resv1: 28,
  userAddr: 32,
} as const;

/** struct io_uring_rsrc_register (32 bytes): nr, flags, resv2, data, tags. */
export const RSRC_REGISTER = { SIZE: 32, nr: 0, flags: 4, resv2: 8, data: 16, tags: 24 } as const;

/** struct io_uring_rsrc_update (16 bytes): offset, resv, data. */
export const RSRC_UPDATE = { SIZE: 16, offset: 0, resv: 4, data: 8 } as const;

/** struct io_uring_rsrc_update2 (32 bytes): offset, resv, data, tags, nr, resv2. */
export const RSRC_UPDATE2 = {
  SIZE: 32,
  offset: 0,
  resv: 4,
  data: 8,
  tags: 16,
  nr: 24,
  resv2: 28,
} as const;

/** struct iovec (16 bytes). */
export const IOVEC = { SIZE: 16, base: 0, len: 8 } as const;

/** struct io_uring_probe header (16 bytes) and struct io_uring_probe_op (8 bytes). */
export const PROBE = {
  SIZE: 16,
  lastOp: 0,
  opsLen: 1,
  OP_SIZE: 8,
  opOp: 0,
  opFlags: 2,
} as const;

/**
 * struct io_uring_map_buffers (32 bytes), the proposal's argument:
 * `{ s32 fd; s32 buf_start; s32 buf_end; u32 flags; u64 rsvd[2]; }`.
 * `fd` is an index into the ring's fixed file table.
 */
export const MAP_BUFFERS = {
  SIZE: 32,
  fd: 0,
  bufStart: 4,
  bufEnd: 8,
  flags: 12,
  rsvd: 16,
} as const;

/** Write a struct io_uring_map_buffers into a fresh 32-byte array. */
export function encodeMapBuffers(
  fd: number,
  bufStart: number,
  bufEnd: number,
  flags = 0,
): Uint8Array {
  const b = new Uint8Array(MAP_BUFFERS.SIZE);
  const v = new DataView(b.buffer);
  v.setInt32(MAP_BUFFERS.fd, fd, true);
  v.setInt32(MAP_BUFFERS.bufStart, bufStart, true);
  v.setInt32(MAP_BUFFERS.bufEnd, bufEnd, true);
  v.setUint32(MAP_BUFFERS.flags, flags, true);
  return b;
}

/** Fields of an SQE, for building one with {@link encodeSqe}. Missing fields are zero. */
export interface SqeFields {
  /** IORING_OP_* */
  opcode: number;
  /** IOSQE_* */
  flags?: number;
  /** I/O priority. */
  ioprio?: number;
  /** File descriptor, or fixed-file index with IOSQE_FIXED_FILE. */
  fd?: number;
  /** File offset (or addr2). */
  off?: bigint;
  /** Buffer address, iovec array address, or MSG_RING command. */
  addr?: bigint;
  /** Length in bytes, or number of iovecs. */
  len?: number;
  /** rw_flags / fsync_flags / msg_ring_flags. */
  rwFlags?: number;
  /** Returned in the CQE. */
  userData?: bigint;
  /** Registered buffer index for READ_FIXED/WRITE_FIXED. */
  bufIndex?: number;
  /** Personality id. */
  personality?: number;
  /** file_index / splice_fd_in. */
  fileIndex?: number;
  /** addr3 (attr_ptr for read/write). */
  addr3?: bigint;
  /** The last eight bytes: __pad2[0], attr_type_mask for read/write (6.18). */
  pad2?: bigint;
}

/** Encode SQE fields into `out` (64 bytes at `offset`), zeroing unspecified fields. */
export function writeSqe(out: DataView, offset: number, s: SqeFields): void {
  for (let i = 0; i < SQE.SIZE; i += 8) out.setBigUint64(offset + i, 0n, true);
  out.setUint8(offset + SQE.opcode, s.opcode);
  out.setUint8(offset + SQE.flags, s.flags ?? 0);
  out.setUint16(offset + SQE.ioprio, s.ioprio ?? 0, true);
  out.setInt32(offset + SQE.fd, s.fd ?? 0, true);
  out.setBigUint64(offset + SQE.off, BigInt.asUintN(64, s.off ?? 0n), true);
  out.setBigUint64(offset + SQE.addr, BigInt.asUintN(64, s.addr ?? 0n), true);
  out.setUint32(offset + SQE.len, s.len ?? 0, true);
  out.setUint32(offset + SQE.rwFlags, s.rwFlags ?? 0, true);
  out.setBigUint64(offset + SQE.userData, BigInt.asUintN(64, s.userData ?? 0n), true);
  out.setUint16(offset + SQE.bufIndex, s.bufIndex ?? 0, true);
  out.setUint16(offset + SQE.personality, s.personality ?? 0, true);
  out.setUint32(offset + SQE.fileIndex, s.fileIndex ?? 0, true);
  out.setBigUint64(offset + SQE.addr3, BigInt.asUintN(64, s.addr3 ?? 0n), true);
  out.setBigUint64(offset + SQE.pad2, BigInt.asUintN(64, s.pad2 ?? 0n), true);
}

/**
 * Encode an SQE into a fresh 64-byte array in the kernel layout.
 *
 * @example
 * ```ts
 * import { encodeSqe, IORING_OP } from "./io_uring.ts";
 * const sqe = encodeSqe({ opcode: IORING_OP.NOP, userData: 7n });
 * console.log(sqe.length); // 64
 * ```
 */
export function encodeSqe(s: SqeFields): Uint8Array {
  const b = new Uint8Array(SQE.SIZE);
  writeSqe(new DataView(b.buffer), 0, s);
  return b;
}

/** Decode the 64 bytes of an SQE into named fields. */
export function decodeSqe(b: Uint8Array): Required<SqeFields> {
  // Only the SQE's own bytes: a shorter view must not read what follows it in the buffer.
  if (b.length < SQE.SIZE) {
    throw new RangeError(`decodeSqe: an SQE is ${SQE.SIZE} bytes, got ${b.length}`);
  }
  return readSqe(new DataView(b.buffer, b.byteOffset, SQE.SIZE), 0);
}

/**
 * Decode the SQE at `offset` of `v` into named fields (a copy: later writes
 * to the bytes do not change it), without making a view of its own.
 */
export function readSqe(v: DataView, offset: number): Required<SqeFields> {
  return {
    opcode: v.getUint8(offset + SQE.opcode),
    flags: v.getUint8(offset + SQE.flags),
    ioprio: v.getUint16(offset + SQE.ioprio, true),
    fd: v.getInt32(offset + SQE.fd, true),
    off: getU64(v, offset + SQE.off),
    addr: getU64(v, offset + SQE.addr),
    len: v.getUint32(offset + SQE.len, true),
    rwFlags: v.getUint32(offset + SQE.rwFlags, true),
    userData: getU64(v, offset + SQE.userData),
    bufIndex: v.getUint16(offset + SQE.bufIndex, true),
    personality: v.getUint16(offset + SQE.personality, true),
    fileIndex: v.getUint32(offset + SQE.fileIndex, true),
    addr3: getU64(v, offset + SQE.addr3),
    pad2: getU64(v, offset + SQE.pad2),
  };
}

/** A little-endian u64 as a bigint; a zero (most of an SQE's u64s) without allocating one. */
function getU64(v: DataView, at: number): bigint {
  if (v.getUint32(at, true) === 0 && v.getUint32(at + 4, true) === 0) return 0n;
  return v.getBigUint64(at, true);
}

/** A reaped completion. */
export interface Cqe {
  /** The SQE's user_data. */
  userData: bigint;
  /** Result: bytes transferred, 0, or a negative errno. */
  res: number;
  /** IORING_CQE_F_* */
  flags: number;
}

/** Encode a struct io_uring_rsrc_register (32 bytes). */
export function encodeRsrcRegister(nr: number, flags: number, data: bigint, tags = 0n): Uint8Array {
  const b = new Uint8Array(RSRC_REGISTER.SIZE);
  const v = new DataView(b.buffer);
  v.setUint32(RSRC_REGISTER.nr, nr, true);
  v.setUint32(RSRC_REGISTER.flags, flags, true);
  v.setBigUint64(RSRC_REGISTER.data, data, true);
  v.setBigUint64(RSRC_REGISTER.tags, tags, true);
  return b;
}

/** Encode a struct io_uring_rsrc_update2 (32 bytes). */
export function encodeRsrcUpdate2(offset: number, data: bigint, nr: number, tags = 0n): Uint8Array {
  const b = new Uint8Array(RSRC_UPDATE2.SIZE);
  const v = new DataView(b.buffer);
  v.setUint32(RSRC_UPDATE2.offset, offset, true);
  v.setBigUint64(RSRC_UPDATE2.data, data, true);
  v.setBigUint64(RSRC_UPDATE2.tags, tags, true);
  v.setUint32(RSRC_UPDATE2.nr, nr, true);
  return b;
}
