/**
 * Block layer types (include/linux/blk_types.h, include/linux/blkdev.h):
 * `blk_status_t` and its errno table (block/blk-core.c `blk_errors[]`),
 * request operations, sector units and the queue limits (`struct
 * queue_limits`) that splitting and merging obey.
 *
 * @module
 */

import { Errno } from "../uapi/errno.ts";

/** 512-byte sectors, as bi_sector counts them whatever the logical block size. */
export const SECTOR_SHIFT = 9;
/** 512. */
export const SECTOR_SIZE = 1 << SECTOR_SHIFT;
/** BIO_MAX_VECS: bio_vecs one bio holds at most. */
export const BIO_MAX_VECS = 256;
/** BLK_MAX_REQUEST_COUNT: a plug is flushed once it holds this many requests. */
export const BLK_MAX_REQUEST_COUNT = 32;
/** BLK_PLUG_FLUSH_SIZE: a plug is flushed once a request of this size is added. */
export const BLK_PLUG_FLUSH_SIZE = 128 * 1024;

/** blk_status_t values (include/linux/blk_types.h). */
export const BlkStatus = {
  OK: 0,
  NOTSUPP: 1,
  TIMEOUT: 2,
  NOSPC: 3,
  TRANSPORT: 4,
  TARGET: 5,
  RESV_CONFLICT: 6,
  MEDIUM: 7,
  PROTECTION: 8,
  RESOURCE: 9,
  IOERR: 10,
  DM_REQUEUE: 11,
  AGAIN: 12,
  DEV_RESOURCE: 13,
  ZONE_OPEN_RESOURCE: 14,
  ZONE_ACTIVE_RESOURCE: 15,
  OFFLINE: 16,
  DURATION_LIMIT: 17,
  INVAL: 19,
} as const;
/** One blk_status_t. */
export type BlkStatusT = number;

// errno values the table needs that uapi/errno.ts does not name.
const EBADE = 52;
const EREMCHG = 78;
const ETOOMANYREFS = 109;

/** blk_errors[] (block/blk-core.c): status -> errno and its name. */
const BLK_ERRORS: Record<number, { errno: number; name: string }> = {
  [BlkStatus.OK]: { errno: 0, name: "" },
  [BlkStatus.NOTSUPP]: { errno: -Errno.EOPNOTSUPP, name: "operation not supported" },
  [BlkStatus.TIMEOUT]: { errno: -Errno.ETIMEDOUT, name: "timeout" },
  [BlkStatus.NOSPC]: { errno: -Errno.ENOSPC, name: "critical space allocation" },
  [BlkStatus.TRANSPORT]: { errno: -Errno.ENOLINK, name: "recoverable transport" },
  [BlkStatus.TARGET]: { errno: -Errno.EREMOTEIO, name: "critical target" },
  [BlkStatus.RESV_CONFLICT]: { errno: -EBADE, name: "reservation conflict" },
  [BlkStatus.MEDIUM]: { errno: -Errno.ENODATA, name: "critical medium" },
  [BlkStatus.PROTECTION]: { errno: -Errno.EILSEQ, name: "protection" },
  [BlkStatus.RESOURCE]: { errno: -Errno.ENOMEM, name: "kernel resource" },
  [BlkStatus.DEV_RESOURCE]: { errno: -Errno.EBUSY, name: "device resource" },
  [BlkStatus.AGAIN]: { errno: -Errno.EAGAIN, name: "nonblocking retry" },
  [BlkStatus.OFFLINE]: { errno: -Errno.ENODEV, name: "device offline" },
  [BlkStatus.DM_REQUEUE]: { errno: -EREMCHG, name: "dm internal retry" },
  [BlkStatus.ZONE_OPEN_RESOURCE]: { errno: -ETOOMANYREFS, name: "open zones exceeded" },
  [BlkStatus.ZONE_ACTIVE_RESOURCE]: { errno: -Errno.EOVERFLOW, name: "active zones exceeded" },
  [BlkStatus.DURATION_LIMIT]: { errno: -Errno.ETIME, name: "duration limit exceeded" },
  [BlkStatus.INVAL]: { errno: -Errno.EINVAL, name: "invalid" },
  [BlkStatus.IOERR]: { errno: -Errno.EIO, name: "I/O" },
};

/** blk_status_to_errno(): unknown values are -EIO. */
export function blkStatusToErrno(status: BlkStatusT): number {
  return BLK_ERRORS[status]?.errno ?? -Errno.EIO;
}

/** blk_status_to_str() */
export function blkStatusToStr(status: BlkStatusT): string {
  return BLK_ERRORS[status]?.name ?? "<null>";
}

/** errno_to_blk_status(): unknown errnos are BLK_STS_IOERR. */
export function errnoToBlkStatus(errno: number): BlkStatusT {
  for (const [k, v] of Object.entries(BLK_ERRORS)) if (v.errno === errno) return Number(k);
  return BlkStatus.IOERR;
}

/** enum req_op (the subset the testbed issues). */
export type ReqOp = "read" | "write" | "flush";

/** struct queue_limits: what one request may carry. */
export interface QueueLimits {
  /** logical_block_size in bytes (512 or 4096). */
  logicalBlockSize: number;
  /** physical_block_size. */
  physicalBlockSize: number;
  /** max_sectors (512-byte units) for one request. */
  maxSectors: number;
  /** max_hw_sectors. */
  maxHwSectors: number;
  /** max_segments for one request. */
  maxSegments: number;
  /** max_segment_size in bytes. */
  maxSegmentSize: number;
  /** seg_boundary_mask: no segment may cross an address with these bits changing. */
  segBoundaryMask: bigint;
  /** virt_boundary_mask: gaps between segments must be aligned to this (NVMe: ctrl page - 1). */
  virtBoundaryMask: number;
  /** dma_alignment: memory alignment mask for O_DIRECT buffers. */
  dmaAlignment: number;
}

/** Sanity-check a set of limits; throws on a configuration no driver would set. */
export function checkQueueLimits(l: QueueLimits): void {
  const pow2 = (x: number) => x > 0 && (x & (x - 1)) === 0;
  if (l.logicalBlockSize !== 512 && l.logicalBlockSize !== 4096) {
    throw new RangeError(`queue limits: logical_block_size ${l.logicalBlockSize}`);
  }
  if (!pow2(l.physicalBlockSize) || l.physicalBlockSize < l.logicalBlockSize) {
    throw new RangeError(`queue limits: physical_block_size ${l.physicalBlockSize}`);
  }
  if (!Number.isInteger(l.maxSectors) || l.maxSectors < l.logicalBlockSize >> SECTOR_SHIFT) {
    throw new RangeError(`queue limits: max_sectors ${l.maxSectors}`);
  }
  if (l.maxSectors > l.maxHwSectors) throw new RangeError("queue limits: max_sectors > max_hw");
  if (!Number.isInteger(l.maxSegments) || l.maxSegments < 1) {
    throw new RangeError(`queue limits: max_segments ${l.maxSegments}`);
  }
  if (l.maxSegmentSize < 4096) throw new RangeError(`max_segment_size ${l.maxSegmentSize}`);
  if (l.virtBoundaryMask !== 0 && !pow2(l.virtBoundaryMask + 1)) {
    throw new RangeError(`queue limits: virt_boundary_mask ${l.virtBoundaryMask}`);
  }
  if (!pow2(l.dmaAlignment + 1)) throw new RangeError(`dma_alignment ${l.dmaAlignment}`);
}
