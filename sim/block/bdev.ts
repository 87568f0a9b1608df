/**
 * A block device (block/bdev.c, include/linux/blkdev.h): a disk's queue,
 * capacity and block sizes, and opening it as a file whose operations are
 * def_blk_fops (block/fops.c).
 *
 * @module
 */

import type { Kernel } from "../kernel.ts";
import type { File, Inode } from "../fs/file.ts";
import { O } from "../uapi/io_uring.ts";
import type { RequestQueue } from "./blk-mq.ts";
import { defBlkFops } from "./fops.ts";

/** struct block_device / gendisk: what the file operations need. */
export class BlockDevice {
  /** Open files on it. */
  openers = 0;
  /** bdev_read_only() */
  readOnly = false;

  /** A disk named `name` (e.g. "nvme0n1") over `queue`. */
  constructor(
    readonly name: string,
    readonly queue: RequestQueue,
    /** bdev_nr_bytes() */
    readonly sizeBytes: bigint,
  ) {}

  /** bdev_logical_block_size() */
  get logicalBlockSize(): number {
    return this.queue.limits.logicalBlockSize;
  }

  /** bdev_dma_alignment() */
  get dmaAlignment(): number {
    return this.queue.limits.dmaAlignment;
  }
}

/** blkdev_open(): a file on `bdev` opened with `flags` (O_DIRECT selects the direct path). */
export function blkdevOpen(kernel: Kernel, bdev: BlockDevice, path: string, flags: number): File {
  const acc = flags & O.ACCMODE;
  const inode: Inode = {
    kind: "blk",
    size: () => bdev.sizeBytes,
    dioOffsetAlign: bdev.logicalBlockSize,
    dioMemAlign: bdev.dmaAlignment + 1,
  };
  bdev.openers++;
  return {
    path,
    flags,
    canRead: acc === O.RDONLY || acc === O.RDWR,
    canWrite: acc === O.WRONLY || acc === O.RDWR,
    fOp: defBlkFops(kernel, bdev),
    inode,
    pos: 0n,
    refcount: 1,
  };
}
