/**
 * `struct file`, `struct kiocb` and `struct file_operations` (include/linux/fs.h),
 * including the proposal's `dma_map`/`dma_unmap` file operations.
 *
 * Read and write follow the kernel's async contract: `readIter`/`writeIter`
 * return bytes done or a negative errno synchronously, or `-EIOCBQUEUED`, in
 * which case `iocb.complete(res)` (ki_complete) is called later, once.
 *
 * @module
 */

import type { BioVec, DmaTag } from "../block/bvec.ts";
import type { IovIter } from "../block/iov_iter.ts";

/** IOCB_* flags carried by a kiocb (include/linux/fs.h). */
export const IOCB = {
  HIPRI: 1 << 0,
  DSYNC: 1 << 1,
  SYNC: 1 << 2,
  WRITE: 1 << 3,
  APPEND: 1 << 4,
  DIRECT: 1 << 17,
  NOWAIT: 1 << 20,
} as const;

/** struct kiocb: one I/O against a file. */
export interface Kiocb {
  /** ki_filp */
  file: File;
  /** ki_pos */
  pos: bigint;
  /** ki_flags (IOCB_*) */
  flags: number;
  /** ki_complete: called once with the result when readIter/writeIter returned -EIOCBQUEUED. */
  complete: (res: number) => void;
}

/** struct file_operations: the subset the testbed's files implement. */
export interface FileOperations {
  /** read_iter */
  readIter?(iocb: Kiocb, iter: IovIter): number;
  /** write_iter */
  writeIter?(iocb: Kiocb, iter: IovIter): number;
  /**
   * fsync: 0/-errno synchronously, or -EIOCBQUEUED and `done(res)` later
   * (a block device's flush goes to the device).
   */
  fsync?(file: File, datasync: boolean, done: (res: number) => void): number;
  /**
   * The proposal's `dma_map` (include/linux/fs.h, block/fops.c blkdev_dma_map):
   * premap `bvecs` for DMA, returning a tag or a negative errno.
   */
  dmaMap?(file: File, bvecs: readonly BioVec[]): DmaTag | number;
  /** The proposal's `dma_unmap`: release a tag from {@link FileOperations.dmaMap}. */
  dmaUnmap?(file: File, tag: DmaTag): void;
  /** release: the last reference went away. */
  release?(file: File): void;
  /** fop_flags & FOP_DONTCACHE: the file takes RWF_DONTCACHE (ext4 regular files on 6.18). */
  readonly dontcache?: boolean;
}

/** Inode facts a file exposes (struct inode subset). */
export interface Inode {
  /** "reg" regular file, "blk" block device. */
  kind: "reg" | "blk";
  /** i_size in bytes. */
  size(): bigint;
  /** Logical block size for O_DIRECT alignment of offset and length. */
  dioOffsetAlign: number;
  /** Memory alignment required for O_DIRECT buffers (dma_alignment + 1). */
  dioMemAlign: number;
}

/** struct file. */
export interface File {
  /** Path it was opened by, for diagnostics. */
  readonly path: string;
  /** f_flags (open flags, O_*). */
  readonly flags: number;
  /** FMODE_READ / FMODE_WRITE as booleans. */
  readonly canRead: boolean;
  /** FMODE_WRITE. */
  readonly canWrite: boolean;
  /** f_op */
  readonly fOp: FileOperations;
  /** f_inode */
  readonly inode: Inode;
  /** f_pos, for reads/writes at offset -1 (current position). */
  pos: bigint;
  /** f_count: references (fd table entries, fixed file slots, in-flight requests). */
  refcount: number;
  /** private_data: what the file's owner keeps with it (a ring file's context). */
  readonly privateData?: unknown;
}

/** fget-style reference. */
export function getFile(f: File): File {
  if (f.refcount <= 0) throw new Error(`get_file on released file ${f.path}`);
  f.refcount++;
  return f;
}

/** fput(): drop a reference; release at zero. */
export function fput(f: File): void {
  if (f.refcount <= 0) throw new Error(`fput: refcount underflow on ${f.path}`);
  f.refcount--;
  if (f.refcount === 0) f.fOp.release?.(f);
}
