/**
 * Controller register fields (NVMe Base Spec 2.0, 3.1.4 "Controller
 * Properties"): CAP, CC, CSTS, AQA bit positions and the helpers that build
 * and take them apart. Mirrors the NVME_CAP_*, NVME_CC_*, NVME_CSTS_* macros
 * of include/linux/nvme.h.
 *
 * @module
 */

/** CAP fields. */
export interface CapFields {
  /** Maximum Queue Entries Supported, 0-based. */
  mqes: number;
  /** Contiguous Queues Required. */
  cqr: boolean;
  /** Timeout, 500 ms units. */
  to: number;
  /** Doorbell Stride (2 ^ (2 + DSTRD) bytes). */
  dstrd: number;
  /** Command Sets Supported bitmap (bit 0: NVM). */
  css: number;
  /** Memory Page Size Minimum (2 ^ (12 + MPSMIN)). */
  mpsmin: number;
  /** Memory Page Size Maximum. */
  mpsmax: number;
}

/** Build the 64-bit CAP register. */
export function encodeCap(f: CapFields): bigint {
  return BigInt(f.mqes & 0xffff) |
    (f.cqr ? 1n << 16n : 0n) |
    (BigInt(f.to & 0xff) << 24n) |
    (BigInt(f.dstrd & 0xf) << 32n) |
    (BigInt(f.css & 0xff) << 37n) |
    (BigInt(f.mpsmin & 0xf) << 48n) |
    (BigInt(f.mpsmax & 0xf) << 52n);
}

/** Decode the 64-bit CAP register (NVME_CAP_MQES() etc.). */
export function decodeCap(cap: bigint): CapFields {
  return {
    mqes: Number(cap & 0xffffn),
    cqr: ((cap >> 16n) & 1n) === 1n,
    to: Number((cap >> 24n) & 0xffn),
    dstrd: Number((cap >> 32n) & 0xfn),
    css: Number((cap >> 37n) & 0xffn),
    mpsmin: Number((cap >> 48n) & 0xfn),
    mpsmax: Number((cap >> 52n) & 0xfn),
  };
}

/** CC bits and shifts (NVME_CC_*). */
export const CC = {
  ENABLE: 1 << 0,
  CSS_SHIFT: 4,
  CSS_MASK: 0x7 << 4,
  MPS_SHIFT: 7,
  MPS_MASK: 0xf << 7,
  AMS_SHIFT: 11,
  SHN_SHIFT: 14,
  SHN_MASK: 0x3 << 14,
  IOSQES_SHIFT: 16,
  IOCQES_SHIFT: 20,
} as const;

/** CSTS bits (NVME_CSTS_*). */
export const CSTS = {
  RDY: 1 << 0,
  CFS: 1 << 1,
  SHST_CMPLT: 2 << 2,
  SHST_MASK: 3 << 2,
  NSSRO: 1 << 4,
} as const;

/** Version 1.4.0 (NVME_VS(1, 4, 0)). */
export const NVME_VS_1_4 = 0x0001_0400;

/** CC fields a host sets at enable. */
export interface CcFields {
  /** Enable */
  en: boolean;
  /** I/O Command Set Selected */
  css: number;
  /** Memory Page Size (2 ^ (12 + MPS)) */
  mps: number;
  /** Shutdown Notification */
  shn: number;
  /** I/O SQ entry size, log2 */
  iosqes: number;
  /** I/O CQ entry size, log2 */
  iocqes: number;
}

/** Build a CC value. */
export function encodeCc(f: CcFields): number {
  return ((f.en ? CC.ENABLE : 0) |
    ((f.css & 7) << CC.CSS_SHIFT) |
    ((f.mps & 0xf) << CC.MPS_SHIFT) |
    ((f.shn & 3) << CC.SHN_SHIFT) |
    ((f.iosqes & 0xf) << CC.IOSQES_SHIFT) |
    ((f.iocqes & 0xf) << CC.IOCQES_SHIFT)) >>> 0;
}

/** Decode a CC value. */
export function decodeCc(cc: number): CcFields {
  return {
    en: (cc & CC.ENABLE) !== 0,
    css: (cc >>> CC.CSS_SHIFT) & 7,
    mps: (cc >>> CC.MPS_SHIFT) & 0xf,
    shn: (cc >>> CC.SHN_SHIFT) & 3,
    iosqes: (cc >>> CC.IOSQES_SHIFT) & 0xf,
    iocqes: (cc >>> CC.IOCQES_SHIFT) & 0xf,
  };
}

/** Build AQA from 1-based admin queue sizes (stored 0-based). */
export function encodeAqa(sqEntries: number, cqEntries: number): number {
  return (((cqEntries - 1) & 0xfff) << 16 | ((sqEntries - 1) & 0xfff)) >>> 0;
}

/** Byte offset in BAR0 of a queue's doorbell (NVMe 3.1.4.x SQyTDBL/CQyHDBL), DSTRD 0. */
export function doorbellOffset(qid: number, isCq: boolean): number {
  return 0x1000 + (2 * qid + (isCq ? 1 : 0)) * 4;
}
