/**
 * Identify data structures (NVMe Base Spec 2.0, 5.17.2; NVM Command Set
 * Spec 4.1.5): the controller (CNS 01h), a namespace (CNS 00h) and the
 * active namespace list (CNS 02h), built as the 4096 bytes the controller
 * transfers. Byte offsets follow struct nvme_id_ctrl / nvme_id_ns in
 * include/linux/nvme.h.
 *
 * @module
 */

import { NVME_IDENTIFY_DATA_SIZE } from "./nvme_spec.ts";

/** Byte offsets in the Identify Controller structure (struct nvme_id_ctrl). */
export const ID_CTRL = {
  VID: 0,
  SSVID: 2,
  SN: 4,
  MN: 24,
  FR: 64,
  RAB: 72,
  CMIC: 76,
  MDTS: 77,
  CNTLID: 78,
  VER: 80,
  OACS: 256,
  ACL: 258,
  AERL: 259,
  FRMW: 260,
  LPA: 261,
  ELPE: 262,
  SQES: 512,
  CQES: 513,
  MAXCMD: 514,
  NN: 516,
  ONCS: 520,
  VWC: 525,
  SGLS: 536,
  SUBNQN: 768,
} as const;

/** Identify SGLS bits. */
export const SGLS = {
  /** Bits 1:0 = 01b: SGLs supported, no alignment or granularity requirement. */
  SUPPORTED: 0x1,
  /** Bit 2: Keyed SGL Data Block descriptor supported. */
  KEYED: 1 << 2,
  /** Bit 16: SGL Bit Bucket descriptor supported. */
  BIT_BUCKET: 1 << 16,
  /** Bit 18: data longer than the transfer allowed (excess length). */
  EXCESS_LENGTH: 1 << 18,
  /** Bit 20: Address field may be an offset. */
  OFFSET: 1 << 20,
} as const;

/** Byte offsets in the Identify Namespace structure (struct nvme_id_ns). */
export const ID_NS = {
  NSZE: 0,
  NCAP: 8,
  NUSE: 16,
  NSFEAT: 24,
  NLBAF: 25,
  FLBAS: 26,
  LBAF: 128,
} as const;

/** What the Identify Controller structure reports. */
export interface IdCtrlInfo {
  /** MDTS, log2 of the max transfer in CAP.MPSMIN pages (0: no limit). */
  mdts: number;
  /** Number of namespaces. */
  nn: number;
  /** Whether SGLs are supported. */
  sgls: boolean;
  /** Controller version (VS register value). */
  ver: number;
  /** AERL: outstanding Asynchronous Event Requests allowed, 0-based. */
  aerl: number;
  /** VWC bit 0: a volatile write cache is present (Flush then matters). */
  vwc?: boolean;
}

function putAscii(b: Uint8Array, off: number, len: number, s: string): void {
  for (let i = 0; i < len; i++) b[off + i] = i < s.length ? s.charCodeAt(i) & 0x7f : 0x20;
}

/** nvme_identify_ctrl(): the 4096-byte Identify Controller data structure. */
export function buildIdCtrl(info: IdCtrlInfo): Uint8Array {
  const b = new Uint8Array(NVME_IDENTIFY_DATA_SIZE);
  const v = new DataView(b.buffer);
  v.setUint16(ID_CTRL.VID, 0x1b36, true);
  v.setUint16(ID_CTRL.SSVID, 0x1af4, true);
  putAscii(b, ID_CTRL.SN, 20, "PREMAPSIM0001");
  putAscii(b, ID_CTRL.MN, 40, "premap testbed NVMe controller");
  putAscii(b, ID_CTRL.FR, 8, "1.0");
  b[ID_CTRL.RAB] = 6;
  b[ID_CTRL.MDTS] = info.mdts;
  v.setUint16(ID_CTRL.CNTLID, 1, true);
  v.setUint32(ID_CTRL.VER, info.ver, true);
  b[ID_CTRL.ACL] = 3;
  b[ID_CTRL.AERL] = info.aerl;
  b[ID_CTRL.FRMW] = 0x3;
  b[ID_CTRL.SQES] = (6 << 4) | 6; // required and maximum 64 bytes
  b[ID_CTRL.CQES] = (4 << 4) | 4; // required and maximum 16 bytes
  v.setUint32(ID_CTRL.NN, info.nn, true);
  b[ID_CTRL.VWC] = info.vwc ? 1 : 0;
  v.setUint32(ID_CTRL.SGLS, info.sgls ? SGLS.SUPPORTED | SGLS.BIT_BUCKET : 0, true);
  const nqn = "nqn.2022-08.dev.premap:nvme-sim";
  for (let i = 0; i < 256; i++) b[ID_CTRL.SUBNQN + i] = i < nqn.length ? nqn.charCodeAt(i) : 0;
  return b;
}

/** nvme_identify_ns(): the Identify Namespace data structure for one format. */
export function buildIdNs(nlb: bigint, lbaSize: number): Uint8Array {
  const b = new Uint8Array(NVME_IDENTIFY_DATA_SIZE);
  const v = new DataView(b.buffer);
  v.setBigUint64(ID_NS.NSZE, nlb, true);
  v.setBigUint64(ID_NS.NCAP, nlb, true);
  v.setBigUint64(ID_NS.NUSE, nlb, true);
  b[ID_NS.NLBAF] = 0; // one format, 0-based
  b[ID_NS.FLBAS] = 0;
  // LBA Format 0: MS 15:0 = 0, LBADS 23:16, RP 25:24 = 0 (best)
  v.setUint32(ID_NS.LBAF, Math.log2(lbaSize) << 16, true);
  return b;
}

/** nvme_identify_nslist(): active NSIDs greater than `after`, ascending, at most 1024. */
export function buildActiveNsList(nsids: number[], after: number): Uint8Array {
  const b = new Uint8Array(NVME_IDENTIFY_DATA_SIZE);
  const v = new DataView(b.buffer);
  let j = 0;
  for (const id of [...nsids].sort((x, y) => x - y)) {
    if (id <= after) continue;
    if (j === NVME_IDENTIFY_DATA_SIZE / 4) break;
    v.setUint32(4 * j++, id, true);
  }
  return b;
}
