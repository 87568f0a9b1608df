/**
 * NVMe wire formats shared by the host driver, the controller model and the
 * tests: the 64-byte submission queue entry (`struct nvme_command`), the
 * 16-byte completion queue entry (`struct nvme_completion`), SGL descriptors,
 * opcodes and status codes.
 *
 * Mirrors include/linux/nvme.h. Status values use the kernel's convention:
 * the CQE status field shifted right by one (dropping the phase tag), so
 * `SC` is bits 7:0, `SCT` bits 10:8, `CRD` bits 12:11, `M` bit 13 and `DNR`
 * bit 14 ({@link NVME_STATUS_DNR}). In the raw CQE status halfword the phase
 * tag is bit 0, SC bits 8:1, SCT bits 11:9, DNR bit 15 (NVMe Base Spec 2.0,
 * 4.2.3 "Completion Queue Entry: Status Field").
 *
 * @module
 */

/** Size of a submission queue entry (CC.IOSQES = 6). */
export const NVME_SQE_SIZE = 64;
/** Size of a completion queue entry (CC.IOCQES = 4). */
export const NVME_CQE_SIZE = 16;
/** Size of an SGL descriptor. */
export const NVME_SGL_DESC_SIZE = 16;
/** Size of an Identify data structure. */
export const NVME_IDENTIFY_DATA_SIZE = 4096;
/** NSID that addresses all namespaces. */
export const NVME_NSID_ALL = 0xffff_ffff;

/** Read/Write CDW12 bit 30, Force Unit Access (NVME_RW_FUA, bit 14 of the `control` halfword). */
export const NVME_RW_FUA_CDW12 = 1 << 30;

/** enum nvme_admin_opcode */
export const NVME_ADMIN = {
  DELETE_SQ: 0x00,
  CREATE_SQ: 0x01,
  GET_LOG_PAGE: 0x02,
  DELETE_CQ: 0x04,
  CREATE_CQ: 0x05,
  IDENTIFY: 0x06,
  ABORT_CMD: 0x08,
  SET_FEATURES: 0x09,
  GET_FEATURES: 0x0a,
  ASYNC_EVENT: 0x0c,
} as const;

/** enum nvme_opcode (NVM command set I/O opcodes) */
export const NVME_CMD = {
  FLUSH: 0x00,
  WRITE: 0x01,
  READ: 0x02,
  WRITE_UNCOR: 0x04,
  COMPARE: 0x05,
  WRITE_ZEROES: 0x08,
  DSM: 0x09,
} as const;

/** Identify CNS values (NVME_ID_CNS_*). */
export const NVME_ID_CNS = { NS: 0x00, CTRL: 0x01, NS_ACTIVE_LIST: 0x02 } as const;

/** Feature identifiers (NVME_FEAT_*). */
export const NVME_FEAT = { NUM_QUEUES: 0x07 } as const;

/** Command flags byte: FUSE bits 1:0, PSDT bits 7:6 (NVME_CMD_SGL_*). */
export const NVME_CMD_FUSE_MASK = 0x03;
/** PSDT = 00b: PRPs. */
export const NVME_PSDT_PRP = 0;
/** PSDT = 01b: SGL, MPTR a contiguous buffer (NVME_CMD_SGL_METABUF). */
export const NVME_PSDT_SGL_MPTR_CONTIG = 1;
/** PSDT = 10b: SGL, MPTR an SGL segment (NVME_CMD_SGL_METASEG). */
export const NVME_PSDT_SGL_MPTR_SGL = 2;

/** SGL descriptor types (upper nibble of the identifier byte). */
export const NVME_SGL_TYPE = {
  DATA_BLOCK: 0x0,
  BIT_BUCKET: 0x1,
  SEGMENT: 0x2,
  LAST_SEGMENT: 0x3,
  KEYED_DATA_BLOCK: 0x4,
  TRANSPORT_DATA_BLOCK: 0x5,
} as const;
/** SGL descriptor subtypes (lower nibble). */
export const NVME_SGL_SUBTYPE = { ADDRESS: 0x0, OFFSET: 0x1 } as const;

/** Queue flags in Create I/O SQ/CQ (NVME_QUEUE_PHYS_CONTIG, NVME_CQ_IRQ_ENABLED). */
export const NVME_QUEUE_PHYS_CONTIG = 1 << 0;
/** CQ flag: interrupts enabled. */
export const NVME_CQ_IRQ_ENABLED = 1 << 1;

/** Do Not Retry (kernel status convention, i.e. CQE status >> 1). */
export const NVME_STATUS_DNR = 0x4000;
/** More information in the error log. */
export const NVME_STATUS_MORE = 0x2000;
/** Command Retry Delay field. */
export const NVME_STATUS_CRD = 0x1800;

/** Status code types. */
export const NVME_SCT = { GENERIC: 0, CMD_SPECIFIC: 1, MEDIA: 2, PATH: 3, VENDOR: 7 } as const;

/** Status values, `(SCT << 8) | SC` (NVME_SC_*, NVMe Base Spec 2.0 figures 100-104). */
export const NVME_SC = {
  SUCCESS: 0x000,
  INVALID_OPCODE: 0x001,
  INVALID_FIELD: 0x002,
  CMDID_CONFLICT: 0x003,
  DATA_XFER_ERROR: 0x004,
  POWER_LOSS: 0x005,
  INTERNAL: 0x006,
  ABORT_REQ: 0x007,
  ABORT_QUEUE: 0x008,
  FUSED_FAIL: 0x009,
  FUSED_MISSING: 0x00a,
  INVALID_NS: 0x00b,
  CMD_SEQ_ERROR: 0x00c,
  SGL_INVALID_LAST: 0x00d,
  SGL_INVALID_COUNT: 0x00e,
  SGL_INVALID_DATA: 0x00f,
  SGL_INVALID_METADATA: 0x010,
  SGL_INVALID_TYPE: 0x011,
  CMB_INVALID_USE: 0x012,
  PRP_INVALID_OFFSET: 0x013,
  ATOMIC_WU_EXCEEDED: 0x014,
  OP_DENIED: 0x015,
  SGL_INVALID_OFFSET: 0x016,
  HOST_ID_INCONSIST: 0x018,
  KA_TIMEOUT_EXPIRED: 0x019,
  KA_TIMEOUT_INVALID: 0x01a,
  ABORTED_PREEMPT_ABORT: 0x01b,
  SANITIZE_FAILED: 0x01c,
  SANITIZE_IN_PROGRESS: 0x01d,
  SGL_INVALID_GRANULARITY: 0x01e,
  CMD_NOT_SUP_CMB_QUEUE: 0x01f,
  NS_WRITE_PROTECTED: 0x020,
  CMD_INTERRUPTED: 0x021,
  TRANSIENT_TR_ERR: 0x022,
  ADMIN_COMMAND_MEDIA_NOT_READY: 0x024,
  INVALID_IO_CMD_SET: 0x02c,
  LBA_RANGE: 0x080,
  CAP_EXCEEDED: 0x081,
  NS_NOT_READY: 0x082,
  RESERVATION_CONFLICT: 0x083,
  FORMAT_IN_PROGRESS: 0x084,
  // SCT 1: command specific
  CQ_INVALID: 0x100,
  QID_INVALID: 0x101,
  QUEUE_SIZE: 0x102,
  ABORT_LIMIT: 0x103,
  ASYNC_LIMIT: 0x105,
  FIRMWARE_SLOT: 0x106,
  FIRMWARE_IMAGE: 0x107,
  INVALID_VECTOR: 0x108,
  INVALID_LOG_PAGE: 0x109,
  INVALID_FORMAT: 0x10a,
  FW_NEEDS_CONV_RESET: 0x10b,
  INVALID_QUEUE: 0x10c,
  FEATURE_NOT_SAVEABLE: 0x10d,
  FEATURE_NOT_CHANGEABLE: 0x10e,
  FEATURE_NOT_PER_NS: 0x10f,
  CONFLICTING_ATTRS: 0x180,
  INVALID_PI: 0x181,
  READ_ONLY: 0x182,
  // SCT 2: media and data integrity errors
  WRITE_FAULT: 0x280,
  READ_ERROR: 0x281,
  GUARD_CHECK: 0x282,
  APPTAG_CHECK: 0x283,
  REFTAG_CHECK: 0x284,
  COMPARE_FAILED: 0x285,
  ACCESS_DENIED: 0x286,
  UNWRITTEN_BLOCK: 0x287,
} as const;

/** One status value name. */
export type NvmeScName = keyof typeof NVME_SC;

const STATUS_TEXT: Record<number, string> = {
  0x000: "Successful Completion",
  0x001: "Invalid Command Opcode",
  0x002: "Invalid Field in Command",
  0x003: "Command ID Conflict",
  0x004: "Data Transfer Error",
  0x005: "Commands Aborted due to Power Loss Notification",
  0x006: "Internal Error",
  0x007: "Command Abort Requested",
  0x008: "Command Aborted due to SQ Deletion",
  0x009: "Command Aborted due to Failed Fused Command",
  0x00a: "Command Aborted due to Missing Fused Command",
  0x00b: "Invalid Namespace or Format",
  0x00c: "Command Sequence Error",
  0x00d: "Invalid SGL Segment Descriptor",
  0x00e: "Invalid Number of SGL Descriptors",
  0x00f: "Data SGL Length Invalid",
  0x010: "Metadata SGL Length Invalid",
  0x011: "SGL Descriptor Type Invalid",
  0x012: "Invalid Use of Controller Memory Buffer",
  0x013: "PRP Offset Invalid",
  0x014: "Atomic Write Unit Exceeded",
  0x015: "Operation Denied",
  0x016: "SGL Offset Invalid",
  0x018: "Host Identifier Inconsistent Format",
  0x019: "Keep Alive Timer Expired",
  0x01a: "Keep Alive Timeout Invalid",
  0x01b: "Command Aborted due to Preempt and Abort",
  0x01c: "Sanitize Failed",
  0x01d: "Sanitize In Progress",
  0x01e: "SGL Data Block Granularity Invalid",
  0x01f: "Command Not Supported for Queue in CMB",
  0x020: "Namespace is Write Protected",
  0x021: "Command Interrupted",
  0x022: "Transient Transport Error",
  0x024: "Admin Command Media Not Ready",
  0x02c: "Invalid I/O Command Set",
  0x080: "LBA Out of Range",
  0x081: "Capacity Exceeded",
  0x082: "Namespace Not Ready",
  0x083: "Reservation Conflict",
  0x084: "Format In Progress",
  0x100: "Completion Queue Invalid",
  0x101: "Invalid Queue Identifier",
  0x102: "Invalid Queue Size",
  0x103: "Abort Command Limit Exceeded",
  0x105: "Asynchronous Event Request Limit Exceeded",
  0x106: "Invalid Firmware Slot",
  0x107: "Invalid Firmware Image",
  0x108: "Invalid Interrupt Vector",
  0x109: "Invalid Log Page",
  0x10a: "Invalid Format",
  0x10b: "Firmware Activation Requires Conventional Reset",
  0x10c: "Invalid Queue Deletion",
  0x10d: "Feature Identifier Not Saveable",
  0x10e: "Feature Not Changeable",
  0x10f: "Feature Not Namespace Specific",
  0x180: "Conflicting Attributes",
  0x181: "Invalid Protection Information",
  0x182: "Attempted Write to Read Only Range",
  0x280: "Write Fault",
  0x281: "Unrecovered Read Error",
  0x282: "End-to-end Guard Check Error",
  0x283: "End-to-end Application Tag Check Error",
  0x284: "End-to-end Reference Tag Check Error",
  0x285: "Compare Failure",
  0x286: "Access Denied",
  0x287: "Deallocated or Unwritten Logical Block",
};

/**
 * Name of a status code type and status code, e.g. `nvmeStatusName(0, 0x13)`
 * is `"PRP Offset Invalid"`. Unknown values are named by their numbers.
 */
export function nvmeStatusName(sct: number, sc: number): string {
  const key = ((sct & 7) << 8) | (sc & 0xff);
  return STATUS_TEXT[key] ?? `Unknown status (SCT ${sct & 7}, SC 0x${(sc & 0xff).toString(16)})`;
}

/** Split a kernel-convention status into its fields. */
export function nvmeStatusFields(
  status: number,
): { sct: number; sc: number; crd: number; more: boolean; dnr: boolean } {
  return {
    sct: (status >> 8) & 7,
    sc: status & 0xff,
    crd: (status >> 11) & 3,
    more: (status & NVME_STATUS_MORE) !== 0,
    dnr: (status & NVME_STATUS_DNR) !== 0,
  };
}

/** Human text for a kernel-convention status, e.g. `"LBA Out of Range (0x0/0x80, DNR)"`. */
export function nvmeStatusString(status: number): string {
  const f = nvmeStatusFields(status);
  const dnr = f.dnr ? ", DNR" : "";
  return `${nvmeStatusName(f.sct, f.sc)} (0x${f.sct.toString(16)}/0x${f.sc.toString(16)}${dnr})`;
}

/** An SGL descriptor (struct nvme_sgl_desc / nvme_keyed_sgl_desc), 16 bytes. */
export interface SglDescriptor {
  /** Address (bytes 7:0). */
  addr: bigint;
  /** Length (bytes 11:8). */
  length: number;
  /** Descriptor type (byte 15 bits 7:4). */
  type: number;
  /** Descriptor subtype (byte 15 bits 3:0). */
  subtype?: number;
}

/** Write one SGL descriptor at `off`. */
export function encodeSglDescriptor(d: SglDescriptor, out: Uint8Array, off = 0): void {
  writeSglDescriptor(new DataView(out.buffer, out.byteOffset + off, NVME_SGL_DESC_SIZE), 0, d);
}

/** {@link encodeSglDescriptor} into the 16 bytes at `off` of an existing view. */
export function writeSglDescriptor(v: DataView, off: number, d: SglDescriptor): void {
  v.setBigUint64(off, BigInt.asUintN(64, d.addr), true);
  v.setUint32(off + 8, d.length >>> 0, true);
  v.setUint8(off + 12, 0);
  v.setUint16(off + 13, 0, true);
  v.setUint8(off + 15, ((d.type & 0xf) << 4) | ((d.subtype ?? 0) & 0xf));
}

/** Read one SGL descriptor at `off`. */
export function decodeSglDescriptor(b: Uint8Array, off = 0): Required<SglDescriptor> {
  checkSpan("decodeSglDescriptor", b, off, NVME_SGL_DESC_SIZE);
  const v = new DataView(b.buffer, b.byteOffset + off, NVME_SGL_DESC_SIZE);
  const id = v.getUint8(15);
  return {
    addr: v.getBigUint64(0, true),
    length: v.getUint32(8, true),
    type: id >> 4,
    subtype: id & 0xf,
  };
}

/** struct nvme_command, decoded into its common fields and command dwords. */
export interface NvmeCommand {
  /** CDW0 bits 7:0 */
  opcode: number;
  /** CDW0 bits 15:8: FUSE 1:0, PSDT 7:6. */
  flags: number;
  /** CDW0 bits 31:16 */
  commandId: number;
  /** CDW1 */
  nsid: number;
  /** CDW2 */
  cdw2: number;
  /** CDW3 */
  cdw3: number;
  /** MPTR (bytes 23:16) */
  mptr: bigint;
  /** DPTR first half (PRP1, or the SGL descriptor's address). */
  prp1: bigint;
  /** DPTR second half (PRP2, or the SGL descriptor's length/type). */
  prp2: bigint;
  /** CDW10 */
  cdw10: number;
  /** CDW11 */
  cdw11: number;
  /** CDW12 */
  cdw12: number;
  /** CDW13 */
  cdw13: number;
  /** CDW14 */
  cdw14: number;
  /** CDW15 */
  cdw15: number;
}

/** What {@link encodeNvmeCommand} accepts: any field may be left out (zero). */
export interface NvmeCommandInit extends Partial<NvmeCommand> {
  /** Opcode (required). */
  opcode: number;
  /** Command identifier (required). */
  commandId: number;
  /** PSDT, placed in flags bits 7:6. */
  psdt?: number;
  /** An SGL descriptor for DPTR (overrides prp1/prp2; sets PSDT to 01b unless given). */
  sgl?: SglDescriptor;
  /** Read/Write: starting LBA (CDW11:CDW10). */
  slba?: bigint;
  /** Read/Write: number of logical blocks, 0-based (CDW12 bits 15:0). */
  nlb0?: number;
}

/**
 * Encode a 64-byte submission queue entry (struct nvme_command).
 *
 * @example
 * ```ts
 * const sqe = encodeNvmeCommand({ opcode: NVME_CMD.READ, commandId: 7, nsid: 1,
 *   prp1: 0x1000n, slba: 0n, nlb0: 0 });
 * ```
 */
export function encodeNvmeCommand(init: NvmeCommandInit, out?: Uint8Array): Uint8Array {
  const b = out ?? new Uint8Array(NVME_SQE_SIZE);
  if (b.length < NVME_SQE_SIZE) throw new RangeError("encodeNvmeCommand: buffer < 64 bytes");
  b.fill(0, 0, NVME_SQE_SIZE);
  writeNvmeCommand(new DataView(b.buffer, b.byteOffset, NVME_SQE_SIZE), 0, init);
  return b;
}

/**
 * {@link encodeNvmeCommand} into the 64 bytes at `off` of an existing view
 * (every byte is written: unset fields are zero).
 */
export function writeNvmeCommand(v: DataView, off: number, init: NvmeCommandInit): void {
  let flags = init.flags ?? 0;
  const psdt = init.psdt ?? (init.sgl ? NVME_PSDT_SGL_MPTR_CONTIG : undefined);
  if (psdt !== undefined) flags = (flags & 0x3f) | ((psdt & 3) << 6);
  v.setUint8(off, init.opcode & 0xff);
  v.setUint8(off + 1, flags & 0xff);
  v.setUint16(off + 2, init.commandId & 0xffff, true);
  v.setUint32(off + 4, (init.nsid ?? 0) >>> 0, true);
  v.setUint32(off + 8, (init.cdw2 ?? 0) >>> 0, true);
  v.setUint32(off + 12, (init.cdw3 ?? 0) >>> 0, true);
  v.setBigUint64(off + 16, BigInt.asUintN(64, init.mptr ?? 0n), true);
  v.setBigUint64(off + 24, BigInt.asUintN(64, init.prp1 ?? 0n), true);
  v.setBigUint64(off + 32, BigInt.asUintN(64, init.prp2 ?? 0n), true);
  v.setUint32(off + 40, (init.cdw10 ?? 0) >>> 0, true);
  v.setUint32(off + 44, (init.cdw11 ?? 0) >>> 0, true);
  v.setUint32(off + 48, (init.cdw12 ?? 0) >>> 0, true);
  v.setUint32(off + 52, (init.cdw13 ?? 0) >>> 0, true);
  v.setUint32(off + 56, (init.cdw14 ?? 0) >>> 0, true);
  v.setUint32(off + 60, (init.cdw15 ?? 0) >>> 0, true);
  if (init.slba !== undefined) v.setBigUint64(off + 40, BigInt.asUintN(64, init.slba), true);
  if (init.nlb0 !== undefined) v.setUint16(off + 48, init.nlb0 & 0xffff, true);
  if (init.sgl) writeSglDescriptor(v, off + 24, init.sgl);
}

/** Decode a 64-byte submission queue entry. */
export function decodeNvmeCommand(b: Uint8Array, off = 0): NvmeCommand {
  checkSpan("decodeNvmeCommand", b, off, NVME_SQE_SIZE);
  return decodeNvmeCommandView(new DataView(b.buffer, b.byteOffset + off, NVME_SQE_SIZE));
}

/** {@link decodeNvmeCommand} from a view whose byte 0 is the entry's. */
export function decodeNvmeCommandView(v: DataView): NvmeCommand {
  return {
    opcode: v.getUint8(0),
    flags: v.getUint8(1),
    commandId: v.getUint16(2, true),
    nsid: v.getUint32(4, true),
    cdw2: v.getUint32(8, true),
    cdw3: v.getUint32(12, true),
    mptr: v.getBigUint64(16, true),
    prp1: v.getBigUint64(24, true),
    prp2: v.getBigUint64(32, true),
    cdw10: v.getUint32(40, true),
    cdw11: v.getUint32(44, true),
    cdw12: v.getUint32(48, true),
    cdw13: v.getUint32(52, true),
    cdw14: v.getUint32(56, true),
    cdw15: v.getUint32(60, true),
  };
}

/** PSDT of a command (flags bits 7:6). */
export function nvmeCmdPsdt(cmd: NvmeCommand): number {
  return (cmd.flags >> 6) & 3;
}

/** Starting LBA of a Read/Write command (CDW11:CDW10). */
export function nvmeCmdSlba(cmd: NvmeCommand): bigint {
  return (BigInt(cmd.cdw11 >>> 0) << 32n) | BigInt(cmd.cdw10 >>> 0);
}

/** struct nvme_completion, decoded. */
export interface NvmeCqe {
  /** Command specific DW0 (result). */
  result: number;
  /** DW1 */
  dw1: number;
  /** SQ Head Pointer. */
  sqHead: number;
  /** SQ Identifier. */
  sqId: number;
  /** Command Identifier. */
  commandId: number;
  /** Status in the kernel convention (raw status field >> 1). */
  status: number;
  /** Phase tag. */
  phase: 0 | 1;
  /** Status Code Type. */
  sct: number;
  /** Status Code. */
  sc: number;
  /** Do Not Retry. */
  dnr: boolean;
}

/** The fields {@link encodeCqe} takes. */
export interface NvmeCqeInit {
  /** DW0 */
  result?: number;
  /** DW1 */
  dw1?: number;
  /** SQ head pointer */
  sqHead: number;
  /** SQ identifier */
  sqId: number;
  /** Command identifier */
  commandId: number;
  /** Kernel-convention status (SC | SCT << 8 | DNR ...). */
  status: number;
  /** Phase tag */
  phase: 0 | 1;
}

/** Encode a 16-byte completion queue entry. */
export function encodeCqe(c: NvmeCqeInit, out?: Uint8Array, off = 0): Uint8Array {
  const b = out ?? new Uint8Array(NVME_CQE_SIZE);
  checkSpan("encodeCqe", b, off, NVME_CQE_SIZE);
  // Little-endian, byte by byte (no DataView to make per entry).
  const result = (c.result ?? 0) >>> 0;
  const dw1 = (c.dw1 ?? 0) >>> 0;
  const sqHead = c.sqHead & 0xffff;
  const sqId = c.sqId & 0xffff;
  const cid = c.commandId & 0xffff;
  const st = (((c.status & 0x7fff) << 1) | (c.phase & 1)) & 0xffff;
  b[off] = result;
  b[off + 1] = result >>> 8;
  b[off + 2] = result >>> 16;
  b[off + 3] = result >>> 24;
  b[off + 4] = dw1;
  b[off + 5] = dw1 >>> 8;
  b[off + 6] = dw1 >>> 16;
  b[off + 7] = dw1 >>> 24;
  b[off + 8] = sqHead;
  b[off + 9] = sqHead >>> 8;
  b[off + 10] = sqId;
  b[off + 11] = sqId >>> 8;
  b[off + 12] = cid;
  b[off + 13] = cid >>> 8;
  b[off + 14] = st;
  b[off + 15] = st >>> 8;
  return b;
}

/**
 * Decode a 16-byte completion queue entry at `off`.
 *
 * @example
 * ```ts
 * const cqe = decodeCqe(cqRing, 16 * head);
 * if (cqe.phase === expectedPhase && cqe.status !== 0) console.log(nvmeStatusString(cqe.status));
 * ```
 */
export function decodeCqe(b: Uint8Array, off = 0): NvmeCqe {
  checkSpan("decodeCqe", b, off, NVME_CQE_SIZE);
  const v = new DataView(b.buffer, b.byteOffset + off, NVME_CQE_SIZE);
  const raw = v.getUint16(14, true);
  const status = raw >> 1;
  return {
    result: v.getUint32(0, true),
    dw1: v.getUint32(4, true),
    sqHead: v.getUint16(8, true),
    sqId: v.getUint16(10, true),
    commandId: v.getUint16(12, true),
    status,
    phase: (raw & 1) as 0 | 1,
    sct: (status >> 8) & 7,
    sc: status & 0xff,
    dnr: (status & NVME_STATUS_DNR) !== 0,
  };
}

/**
 * An encoder or decoder touches `size` bytes at `off` of `b` and nothing
 * beyond: a view of a shorter array must not reach the bytes after it in the
 * same buffer.
 */
function checkSpan(what: string, b: Uint8Array, off: number, size: number): void {
  if (!Number.isInteger(off) || off < 0 || off + size > b.length) {
    throw new RangeError(`${what}: ${size} bytes at ${off} of a ${b.length}-byte array`);
  }
}
