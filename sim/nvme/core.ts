/**
 * Transport-independent NVMe host pieces (drivers/nvme/host/core.c):
 * status to blk_status_t (nvme_error_status), the retry decision
 * (nvme_decide_disposition), and building Read/Write/Flush commands
 * (nvme_setup_rw, nvme_setup_flush).
 *
 * @module
 */

import { BlkStatus, type BlkStatusT, SECTOR_SHIFT } from "../block/blk_types.ts";
import type { Request } from "../block/blk-mq.ts";
import { NVME_CMD, NVME_RW_FUA_CDW12, NVME_SC, NVME_STATUS_DNR } from "../device/nvme_spec.ts";

/** nvme_max_retries module parameter (default 5). */
export const NVME_MAX_RETRIES = 5;
/** NVME_SCT_SC_MASK: status code type and status code. */
export const NVME_SCT_SC_MASK = 0x7ff;
/** NVME_SC_HOST_PATH_ERROR */
export const NVME_SC_HOST_PATH_ERROR = 0x370;
/** NVME_SC_HOST_ABORTED_CMD: what nvme_cancel_request() sets on a request a reset took back. */
export const NVME_SC_HOST_ABORTED_CMD = 0x371;

/** One namespace as the host sees it (struct nvme_ns / nvme_ns_head subset). */
export interface NvmeNsInfo {
  /** Namespace ID. */
  nsid: number;
  /** lba_shift: log2 of the logical block size. */
  lbaShift: number;
  /** Capacity in logical blocks (NSZE). */
  nlb: bigint;
}

/** nvme_error_status(): an NVMe status (kernel convention) to blk_status_t. */
export function nvmeErrorStatus(status: number): BlkStatusT {
  switch (status & NVME_SCT_SC_MASK) {
    case NVME_SC.SUCCESS:
      return BlkStatus.OK;
    case NVME_SC.CAP_EXCEEDED:
      return BlkStatus.NOSPC;
    case NVME_SC.LBA_RANGE:
    case NVME_SC.CMD_INTERRUPTED:
    case NVME_SC.NS_NOT_READY:
      return BlkStatus.TARGET;
    case NVME_SC.CONFLICTING_ATTRS: // NVME_SC_BAD_ATTRIBUTES
    case NVME_SC.INVALID_OPCODE:
    case NVME_SC.INVALID_FIELD:
    case NVME_SC.INVALID_NS:
      return BlkStatus.NOTSUPP;
    case NVME_SC.WRITE_FAULT:
    case NVME_SC.READ_ERROR:
    case NVME_SC.UNWRITTEN_BLOCK:
    case NVME_SC.ACCESS_DENIED:
    case NVME_SC.READ_ONLY:
    case NVME_SC.COMPARE_FAILED:
      return BlkStatus.MEDIUM;
    case NVME_SC.GUARD_CHECK:
    case NVME_SC.APPTAG_CHECK:
    case NVME_SC.REFTAG_CHECK:
    case NVME_SC.INVALID_PI:
      return BlkStatus.PROTECTION;
    case NVME_SC.RESERVATION_CONFLICT:
      return BlkStatus.RESV_CONFLICT;
    case NVME_SC_HOST_PATH_ERROR:
      return BlkStatus.TRANSPORT;
    default:
      return BlkStatus.IOERR;
  }
}

/** nvme_decide_disposition(): complete now, or retry a status without DNR. */
export function nvmeDecideDisposition(
  status: number,
  retries: number,
  maxRetries = NVME_MAX_RETRIES,
): "complete" | "retry" {
  if (status === 0) return "complete";
  if ((status & NVME_STATUS_DNR) !== 0 || retries >= maxRetries) return "complete";
  return "retry";
}

/** The command fields nvme_setup_cmd() fills for a block request. */
export interface RwCommand {
  /** Opcode. */
  opcode: number;
  /** Namespace. */
  nsid: number;
  /** Starting LBA (read/write). */
  slba?: bigint;
  /** Number of logical blocks, 0-based (read/write). */
  nlb0?: number;
  /** CDW12 above NLB: FUA (NVME_RW_FUA) for a REQ_FUA write. */
  cdw12?: number;
}

/** The sector-to-LBA shifts (lba_shift - 9 for 512..4096-byte blocks) as bigints, made once. */
const BIG_SHIFTS: readonly bigint[] = [0n, 1n, 2n, 3n];

/** nvme_setup_cmd(): nvme_setup_flush() or nvme_setup_rw() for `rq` on `ns`. */
export function nvmeSetupCmd(ns: NvmeNsInfo, rq: Request): RwCommand | BlkStatusT {
  if (rq.op === "flush") return { opcode: NVME_CMD.FLUSH, nsid: ns.nsid };
  const shift = ns.lbaShift - SECTOR_SHIFT;
  const slba = rq.sector >> (BIG_SHIFTS[shift] ?? BigInt(shift)); // nvme_sect_to_lba()
  const nlb = rq.dataLen >>> ns.lbaShift;
  if (nlb < 1 || nlb > 0x10000 || (rq.dataLen & ((1 << ns.lbaShift) - 1)) !== 0) {
    return BlkStatus.IOERR;
  }
  const cmd: RwCommand = {
    opcode: rq.op === "write" ? NVME_CMD.WRITE : NVME_CMD.READ,
    nsid: ns.nsid,
    slba,
    nlb0: nlb - 1,
  };
  if (rq.fua) cmd.cdw12 = NVME_RW_FUA_CDW12;
  return cmd;
}
