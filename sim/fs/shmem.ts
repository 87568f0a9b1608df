/**
 * Regular files in memory (mm/shmem.c, fs/libfs.c flavour), behaving like
 * ext4 on this machine for what the tests touch: buffered and O_DIRECT
 * read/write, short reads at end of file, O_APPEND, truncate, fsync.
 *
 * O_DIRECT follows iomap_dio_rw() on ext4 over /dev/vda (logical block 512,
 * dma_alignment 511) as observed on Linux 6.18: a zero-length I/O, or a read
 * at or past EOF, returns 0; otherwise the file offset and the length must
 * be 512-aligned, and the memory as {@link dioMemAligned} says, else -EINVAL.
 * A read crossing EOF returns the bytes up to EOF.
 *
 * @module
 */

import { copyFromIter, copyToIter, type IovIter, iovIterAlignment } from "../block/iov_iter.ts";
import type { UserMm } from "../memory/mm.ts";
import { PAGE_SIZE } from "../memory/phys.ts";
import { Errno } from "../uapi/errno.ts";
import { O } from "../uapi/io_uring.ts";
import { type File, type FileOperations, type Inode, IOCB, type Kiocb } from "./file.ts";

/** Logical block size of the filesystem the differential tests compare against. */
export const SHMEM_DIO_ALIGN = 512;
/** Largest file this in-memory filesystem holds (a resource bound: beyond it, -ENOSPC). */
export const SHMEM_MAX_FILE_BYTES = 1 << 30;

/** An in-memory regular inode: its bytes and size. */
export class ShmemInode implements Inode {
  /** Regular file. */
  readonly kind: "reg" = "reg";
  /** O_DIRECT offset/length alignment. */
  readonly dioOffsetAlign: number = SHMEM_DIO_ALIGN;
  /** O_DIRECT memory alignment. */
  readonly dioMemAlign: number = SHMEM_DIO_ALIGN;
  #data = new Uint8Array(0);
  #size = 0;

  /** i_size */
  size(): bigint {
    return BigInt(this.#size);
  }

  /** A copy of the file's bytes (for tests and diagnostics). */
  contents(): Uint8Array {
    return this.#data.slice(0, this.#size);
  }

  /** truncate_setsize(): grow with zeros or shrink; 0 or -ENOSPC. */
  truncate(size: number): number {
    if (size > SHMEM_MAX_FILE_BYTES) return -Errno.ENOSPC;
    if (size < this.#size) this.#data.fill(0, size, this.#size);
    this.#reserve(size);
    this.#size = size;
    return 0;
  }

  /** Copy out `[pos, pos+len)` clipped at EOF. */
  readAt(pos: number, len: number): Uint8Array {
    if (pos >= this.#size) return new Uint8Array(0);
    return this.#data.subarray(pos, Math.min(this.#size, pos + len));
  }

  /** Store `src` at `pos`, extending the file; 0 or -ENOSPC. */
  writeAt(pos: number, src: Uint8Array): number {
    const end = pos + src.length;
    if (end > SHMEM_MAX_FILE_BYTES) return -Errno.ENOSPC;
    this.#reserve(end);
    this.#data.set(src, pos);
    if (end > this.#size) this.#size = end;
    return 0;
  }

  #reserve(n: number): void {
    if (n <= this.#data.length) return;
    let cap = Math.max(4096, this.#data.length);
    while (cap < n) cap *= 2;
    const d = new Uint8Array(Math.min(cap, SHMEM_MAX_FILE_BYTES));
    d.set(this.#data.subarray(0, this.#size));
    this.#data = d;
  }
}

/**
 * Memory alignment as Linux 6.18 checks it for ext4 O_DIRECT on this machine
 * (observed with C probes): for a single user buffer (ITER_UBUF) or
 * registered-buffer bio_vecs, the start address may be unaligned but every
 * piece that lies within one page must be a multiple of the block size;
 * for an iovec array every segment's address and length must be aligned.
 */
function dioMemAligned(iter: IovIter, align: number): boolean {
  switch (iter.type) {
    case "ubuf": {
      let addr = iter.addr + BigInt(iter.iovOffset);
      let left = iter.count;
      while (left > 0) {
        const inPage = PAGE_SIZE - Number(addr & BigInt(PAGE_SIZE - 1));
        const piece = Math.min(inPage, left);
        if (piece % align) return false;
        addr += BigInt(piece);
        left -= piece;
      }
      return true;
    }
    case "bvec": {
      let skip = iter.iovOffset;
      let left = iter.count;
      for (let i = iter.segIndex; i < iter.bvec.length && left > 0; i++) {
        const piece = Math.min(iter.bvec[i].len - skip, left);
        if (piece % align) return false;
        left -= piece;
        skip = 0;
      }
      return true;
    }
    case "iovec":
      return (iovIterAlignment(iter) & (align - 1)) === 0;
    case "dmatag":
      return false;
  }
}

/** The O_DIRECT checks of iomap_dio_rw() for ext4: -EINVAL when misaligned, else 0. */
function dioCheck(inode: Inode, pos: bigint, iter: IovIter): number {
  const align = inode.dioOffsetAlign;
  if (Number(pos % BigInt(align)) !== 0 || iter.count % align !== 0) return -Errno.EINVAL;
  if (!dioMemAligned(iter, inode.dioMemAlign)) return -Errno.EINVAL;
  return 0;
}

/** shmem_file_read_iter() / ext4_file_read_iter(). */
function shmemReadIter(mm: UserMm, iocb: Kiocb, iter: IovIter): number {
  const inode = iocb.file.inode as ShmemInode;
  if (iter.type === "dmatag") return -Errno.EINVAL;
  if (iter.count === 0) return 0;
  if (iocb.pos < 0n) return -Errno.EINVAL;
  const size = inode.size();
  if (iocb.flags & IOCB.DIRECT) {
    if (iocb.pos >= size) return 0;
    const err = dioCheck(inode, iocb.pos, iter);
    if (err) return err;
  }
  if (iocb.pos >= size) return 0;
  const data = inode.readAt(Number(iocb.pos), iter.count);
  if (iocb.flags & IOCB.DIRECT) {
    // iomap_dio_rw(): the part past EOF is a hole, zero-filled into the user's memory
    // (iomap_dio_hole_iter); the result is then clipped at EOF. The pages before a
    // fault still take their data (their bios were submitted), but the dio fails.
    const src = new Uint8Array(iter.count);
    src.set(data);
    const n = copyToIter(src, iter, mm);
    if (n < src.length) return -Errno.EFAULT;
    iocb.pos += BigInt(data.length);
    return data.length;
  }
  const n = copyToIter(data, iter, mm);
  if (n > 0) iocb.pos += BigInt(n);
  return n;
}

/** shmem_file_write_iter() / ext4_file_write_iter(): generic_write_checks, then copy. */
function shmemWriteIter(mm: UserMm, iocb: Kiocb, iter: IovIter): number {
  const inode = iocb.file.inode as ShmemInode;
  if (iter.type === "dmatag") return -Errno.EINVAL;
  if (iocb.flags & IOCB.APPEND) iocb.pos = inode.size();
  if (iter.count === 0) return 0;
  if (iocb.pos < 0n) return -Errno.EINVAL;
  if (iocb.flags & IOCB.DIRECT) {
    // ext4_dio_write_checks(): a NOWAIT write that would extend i_size cannot go on
    // unlocked; this comes before iomap's alignment checks (observed).
    if ((iocb.flags & IOCB.NOWAIT) && iocb.pos + BigInt(iter.count) > inode.size()) {
      return -Errno.EAGAIN;
    }
    const err = dioCheck(inode, iocb.pos, iter);
    if (err) return err;
  }
  if (iocb.pos + BigInt(iter.count) > BigInt(SHMEM_MAX_FILE_BYTES)) return -Errno.EFBIG;
  const want = iter.count;
  const src = copyFromIter(iter, want, mm);
  if (typeof src === "number") return src;
  if ((iocb.flags & IOCB.DIRECT) && src.length < want) {
    // O_DIRECT: the pages pinned before a fault are written, and the dio fails; what
    // would have extended the file is dropped with the failed extension (observed).
    const keep = Math.max(0, Math.min(src.length, Number(inode.size() - iocb.pos)));
    if (keep > 0) inode.writeAt(Number(iocb.pos), src.subarray(0, keep));
    return -Errno.EFAULT;
  }
  const err = inode.writeAt(Number(iocb.pos), src);
  if (err) return err;
  iocb.pos += BigInt(src.length);
  return src.length;
}

/** shmem_file_operations: read/write through the page cache, fsync a no-op success. */
export function shmemFileOperations(mm: UserMm): FileOperations {
  return {
    readIter: (iocb, iter) => shmemReadIter(mm, iocb, iter),
    writeIter: (iocb, iter) => shmemWriteIter(mm, iocb, iter),
    fsync: () => 0,
    dontcache: true,
  };
}

/** do_dentry_open() for a regular inode: a new `struct file` with one reference. */
export function shmemOpenFile(
  path: string,
  inode: ShmemInode,
  flags: number,
  fOp: FileOperations,
): File {
  const acc = flags & O.ACCMODE;
  return {
    path,
    flags,
    canRead: acc === O.RDONLY || acc === O.RDWR,
    canWrite: acc === O.WRONLY || acc === O.RDWR,
    fOp,
    inode,
    pos: 0n,
    refcount: 1,
  };
}
