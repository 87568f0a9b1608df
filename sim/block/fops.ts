/**
 * def_blk_fops (block/fops.c): direct I/O on a block device file
 * (blkdev_read_iter, blkdev_write_iter, __blkdev_direct_IO), fsync as a
 * cache flush (blkdev_fsync -> blkdev_issue_flush), and the proposal's
 * blkdev_dma_map/blkdev_dma_unmap, which hand a registered buffer to the
 * queue's blk_mq_ops.dma_map.
 *
 * Buffered I/O on a block device (through the page cache) is not modelled:
 * without O_DIRECT (IOCB_DIRECT) read and write return -EINVAL.
 *
 * @module
 */

import type { Kernel } from "../kernel.ts";
import { type File, type FileOperations, IOCB, type Kiocb } from "../fs/file.ts";
import { O } from "../uapi/io_uring.ts";
import { Errno } from "../uapi/errno.ts";
import type { BioVec, DmaTag } from "./bvec.ts";
import { type IovIter, iovIterIsAligned, iovIterTruncate } from "./iov_iter.ts";
import {
  type Bio,
  bioAlloc,
  bioEndio,
  bioInit,
  bioIovIterGetPages,
  bioIovVecsToAlloc,
  bioReleasePages,
  BLKDEV_DIO_POOL,
  FS_BIO_SET,
} from "./bio.ts";
import { BIO_MAX_VECS, BlkStatus, blkStatusToErrno, SECTOR_SHIFT } from "./blk_types.ts";
import { blkFinishPlug, blkStartPlug } from "./blk-mq.ts";
import type { BlockDevice } from "./bdev.ts";

/** The file operations of a block device file. */
export function defBlkFops(kernel: Kernel, bdev: BlockDevice): FileOperations {
  return {
    readIter: (iocb, iter) => blkdevReadIter(kernel, bdev, iocb, iter),
    writeIter: (iocb, iter) => blkdevWriteIter(kernel, bdev, iocb, iter),
    fsync: (_file, _datasync, done) => blkdevFsync(kernel, bdev, done),
    dmaMap: (_file, bvecs) => blkdevDmaMap(bdev, bvecs),
    dmaUnmap: (_file, tag) => blkdevDmaUnmap(bdev, tag),
    release: (_file: File) => {
      bdev.openers--;
    },
  };
}

function isDirect(iocb: Kiocb): boolean {
  return (iocb.flags & IOCB.DIRECT) !== 0 || (iocb.file.flags & O.DIRECT) !== 0;
}

/** blkdev_read_iter() */
export function blkdevReadIter(
  kernel: Kernel,
  bdev: BlockDevice,
  iocb: Kiocb,
  to: IovIter,
): number {
  const size = bdev.sizeBytes;
  if (iocb.pos < 0n) return -Errno.EINVAL;
  if (iocb.pos >= size) return 0;
  const left = size - iocb.pos;
  // (A count is below 2^32: compared as numbers unless the rest of the device is that short.)
  if (left < TWO_POW_32 && to.count > Number(left)) iovIterTruncate(to, Number(left));
  if (to.count === 0) return 0;
  if (!isDirect(iocb)) return -Errno.EINVAL; // buffered block device I/O: not modelled
  return blkdevDirectIO(kernel, bdev, iocb, to);
}

/** blkdev_write_iter() */
export function blkdevWriteIter(
  kernel: Kernel,
  bdev: BlockDevice,
  iocb: Kiocb,
  from: IovIter,
): number {
  const size = bdev.sizeBytes;
  if (bdev.readOnly) return -Errno.EPERM;
  if (from.count === 0) return 0;
  if (iocb.pos < 0n) return -Errno.EINVAL;
  if (iocb.pos >= size) return -Errno.ENOSPC;
  if ((iocb.flags & (IOCB.NOWAIT | IOCB.DIRECT)) === IOCB.NOWAIT && !isDirect(iocb)) {
    return -Errno.EOPNOTSUPP;
  }
  const left = size - iocb.pos;
  if (left < TWO_POW_32 && from.count > Number(left)) iovIterTruncate(from, Number(left));
  if (!isDirect(iocb)) return -Errno.EINVAL; // buffered block device I/O: not modelled
  return blkdevDirectIO(kernel, bdev, iocb, from);
}

/** blkdev_dio_invalid(): offset/length against the logical block size, memory against dma_alignment. */
export function blkdevDioInvalid(bdev: BlockDevice, pos: bigint, it: IovIter): boolean {
  const lbsMask = bdev.logicalBlockSize - 1;
  if ((Number(pos & 0xffffn) | it.count) & lbsMask) return true;
  return !iovIterIsAligned(it, bdev.dmaAlignment, lbsMask);
}

const SECTOR_SHIFT_N = BigInt(SECTOR_SHIFT);
const TWO_POW_32 = 1n << 32n;

/** struct blkdev_dio: one O_DIRECT I/O, shared by its bios (their bi_private). */
class BlkdevDio {
  /** Bytes the bios carry. */
  size = 0;
  /** The first error a bio ended with. */
  status: number = BlkStatus.OK;
  /** Bios not yet ended. */
  refs = 1;

  constructor(readonly kernel: Kernel, readonly iocb: Kiocb) {}
}

/**
 * blkdev_bio_end_io(): unpin the bio's pages; when the dio's last bio ends,
 * advance ki_pos and complete the kiocb with the bytes moved or the first error.
 */
function blkdevBioEndIo(bio: Bio): void {
  const dio = bio.privateData as BlkdevDio;
  bioReleasePages(dio.kernel, bio);
  if (bio.status !== BlkStatus.OK && dio.status === BlkStatus.OK) dio.status = bio.status;
  if (--dio.refs > 0) return;
  const res = dio.status !== BlkStatus.OK ? blkStatusToErrno(dio.status) : dio.size;
  const iocb = dio.iocb;
  if (res > 0) iocb.pos += BigInt(res);
  iocb.complete(res);
}

/**
 * blkdev_direct_IO(): an I/O whose user pages fit BIO_MAX_VECS bio_vecs (or
 * a registered buffer or dma tag, which need none) goes as one bio
 * (__blkdev_direct_IO_async); a larger one as a chain of bios of at most
 * BIO_MAX_VECS bio_vecs each (__blkdev_direct_IO), submitted under a plug.
 * The kiocb completes with the bytes moved or the first error. Returns 0
 * (nothing to do), -EINVAL (misaligned), the error of a single bio that
 * could not be built, or -EIOCBQUEUED.
 */
export function blkdevDirectIO(
  kernel: Kernel,
  bdev: BlockDevice,
  iocb: Kiocb,
  it: IovIter,
): number {
  if (it.count === 0) return 0;
  if (blkdevDioInvalid(bdev, iocb.pos, it)) return -Errno.EINVAL;
  const op = it.dir === "write" ? "write" : "read";
  const dio = new BlkdevDio(kernel, iocb);
  const nowait = (iocb.flags & IOCB.NOWAIT) !== 0;
  let pos = iocb.pos;
  let nrPages = bioIovVecsToAlloc(it, BIO_MAX_VECS + 1);
  const plug = blkStartPlug(kernel);
  try {
    if (nrPages <= BIO_MAX_VECS) {
      // __blkdev_direct_IO_async()
      const bio = bioAlloc(kernel, op, pos >> SECTOR_SHIFT_N, nrPages, BLKDEV_DIO_POOL);
      bio.nowait = nowait;
      // dio_bio_write_op(): an O_DSYNC / RWF_DSYNC direct write is REQ_FUA.
      bio.fua = op === "write" && (iocb.flags & IOCB.DSYNC) !== 0;
      const r = bioIovIterGetPages(kernel, bio, it, bdev.logicalBlockSize);
      if (r < 0) {
        bioReleasePages(kernel, bio);
        return r;
      }
      bio.endIo = blkdevBioEndIo;
      bio.privateData = dio;
      dio.size = bio.iter.size;
      bdev.queue.submitBio(bio);
      return -Errno.EIOCBQUEUED;
    }
    // __blkdev_direct_IO()
    // The first bio from blkdev_dio_pool (it carries the dio), the others from bio_alloc().
    nrPages = BIO_MAX_VECS;
    for (let bs = BLKDEV_DIO_POOL;; bs = FS_BIO_SET) {
      const bio = bioAlloc(kernel, op, pos >> SECTOR_SHIFT_N, nrPages, bs);
      bio.nowait = nowait;
      bio.fua = op === "write" && (iocb.flags & IOCB.DSYNC) !== 0;
      bio.endIo = blkdevBioEndIo;
      bio.privateData = dio;
      const r = bioIovIterGetPages(kernel, bio, it, bdev.logicalBlockSize);
      if (r < 0) {
        bio.status = BlkStatus.IOERR;
        bioEndio(bio);
        break;
      }
      dio.size += bio.iter.size;
      pos += BigInt(bio.iter.size);
      nrPages = bioIovVecsToAlloc(it, BIO_MAX_VECS);
      if (nrPages > 0) dio.refs++;
      bdev.queue.submitBio(bio);
      if (nrPages === 0) break;
    }
  } finally {
    blkFinishPlug(kernel, plug);
  }
  return -Errno.EIOCBQUEUED;
}

/**
 * blkdev_fsync() -> blkdev_issue_flush(): a flush request when the device
 * has a volatile write cache; without one the flush machinery completes at
 * once (0), as blk-flush does.
 */
export function blkdevFsync(
  kernel: Kernel,
  bdev: BlockDevice,
  done: (res: number) => void,
): number {
  if (!bdev.queue.writeCache) return 0;
  // blkdev_issue_flush(): a bio on the caller's stack.
  const bio = bioInit(kernel, "flush", 0n);
  bio.endIo = (b) => done(blkStatusToErrno(b.status));
  bdev.queue.submitBio(bio);
  return -Errno.EIOCBQUEUED;
}

/** blkdev_dma_map() (the proposal): -EINVAL when the queue's driver has no dma_map. */
export function blkdevDmaMap(bdev: BlockDevice, bvecs: readonly BioVec[]): DmaTag | number {
  const q = bdev.queue;
  const ops = q.set.ops;
  if (!ops.dmaMap) return -Errno.EINVAL;
  return ops.dmaMap(q, bvecs);
}

/** blkdev_dma_unmap() (the proposal). */
export function blkdevDmaUnmap(bdev: BlockDevice, tag: DmaTag): void {
  const q = bdev.queue;
  const ops = q.set.ops;
  if (!ops.dmaUnmap) throw new Error("blkdev_dma_unmap: queue has no dma_unmap");
  ops.dmaUnmap(q, tag);
}
