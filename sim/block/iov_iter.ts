/**
 * `struct iov_iter` (include/linux/uio.h, lib/iov_iter.c): the description of
 * an I/O's memory, in the four kinds the testbed uses:
 *
 * - `ubuf`: one user address range (ITER_UBUF, plain READ/WRITE);
 * - `iovec`: an array of user ranges (ITER_IOVEC, READV/WRITEV);
 * - `bvec`: an array of bio_vecs over pinned pages (ITER_BVEC, registered buffers);
 * - `dmatag`: the proposal's ITER_DMA_TAG, a premapped buffer's tag plus an
 *   offset into it (no pages, no bvecs: the driver holds the DMA mapping).
 *
 * @module
 */

import { Errno } from "../uapi/errno.ts";
import type { UserMm } from "../memory/mm.ts";
import type { BioVec, DmaTag } from "./bvec.ts";

/** Data direction: READ (device to memory) or WRITE (memory to device). */
export type IterDir = "read" | "write";

/** A user range (struct iovec). */
export interface UserRange {
  /** iov_base */
  base: bigint;
  /** iov_len */
  len: number;
}

/** ITER_UBUF */
export interface UbufIter {
  /** Kind. */
  readonly type: "ubuf";
  /** data_source: "write" iterators are sources. */
  readonly dir: IterDir;
  /** ubuf base address (not advanced; see iovOffset). */
  readonly addr: bigint;
  /** iov_offset: bytes consumed. */
  iovOffset: number;
  /** count: bytes left. */
  count: number;
}

/** ITER_IOVEC */
export interface IovecIter {
  /** Kind. */
  readonly type: "iovec";
  /** Direction. */
  readonly dir: IterDir;
  /** The segments (already copied in from user space). */
  readonly iov: readonly UserRange[];
  /** Index of the current segment. */
  segIndex: number;
  /** Offset within the current segment. */
  iovOffset: number;
  /** Bytes left. */
  count: number;
}

/** ITER_BVEC */
export interface BvecIter {
  /** Kind. */
  readonly type: "bvec";
  /** Direction. */
  readonly dir: IterDir;
  /** The bio_vecs (shared with the registered buffer, never modified). */
  readonly bvec: readonly BioVec[];
  /** Index of the current bvec. */
  segIndex: number;
  /** Offset within the current bvec. */
  iovOffset: number;
  /** Bytes left. */
  count: number;
}

/** ITER_DMA_TAG (the proposal, include/linux/uio.h). */
export interface DmaTagIter {
  /** Kind. */
  readonly type: "dmatag";
  /** Direction. */
  readonly dir: IterDir;
  /** The driver's tag for the premapped buffer. */
  readonly tag: DmaTag;
  /** Offset into the mapped buffer of the next byte. */
  iovOffset: number;
  /** Bytes left. */
  count: number;
}

/** Any iov_iter. */
export type IovIter = UbufIter | IovecIter | BvecIter | DmaTagIter;

/** iov_iter_ubuf() */
export function iovIterUbuf(dir: IterDir, addr: bigint, len: number): UbufIter {
  return { type: "ubuf", dir, addr, iovOffset: 0, count: len };
}

/** iov_iter_init() for an iovec array. */
export function iovIterIovec(dir: IterDir, iov: readonly UserRange[]): IovecIter {
  const count = iov.reduce((s, v) => s + v.len, 0);
  return { type: "iovec", dir, iov, segIndex: 0, iovOffset: 0, count };
}

/** iov_iter_bvec(), starting `skip` bytes into the bvec array. */
export function iovIterBvec(
  dir: IterDir,
  bvec: readonly BioVec[],
  len: number,
  skip = 0,
): BvecIter {
  const it: BvecIter = { type: "bvec", dir, bvec, segIndex: 0, iovOffset: 0, count: len + skip };
  iovIterAdvance(it, skip);
  return it;
}

/** iov_iter_dma_tag() (the proposal): a tag iterator at `offset` for `len` bytes. */
export function iovIterDmaTag(dir: IterDir, tag: DmaTag, offset: number, len: number): DmaTagIter {
  return { type: "dmatag", dir, tag, iovOffset: offset, count: len };
}

/** iov_iter_count() */
export function iovIterCount(it: IovIter): number {
  return it.count;
}

/** iov_iter_truncate(): limit the iterator to `count` bytes. */
export function iovIterTruncate(it: IovIter, count: number): void {
  if (it.count > count) it.count = count;
}

/** iov_iter_advance(): consume `n` bytes. */
export function iovIterAdvance(it: IovIter, n: number): void {
  if (n > it.count) throw new RangeError(`iov_iter_advance: ${n} > count ${it.count}`);
  it.count -= n;
  if (it.type === "ubuf" || it.type === "dmatag") {
    it.iovOffset += n;
    return;
  }
  const segs: readonly { len: number }[] = it.type === "iovec" ? it.iov : it.bvec;
  let left = n;
  while (left > 0) {
    const room = segs[it.segIndex].len - it.iovOffset;
    if (left < room) {
      it.iovOffset += left;
      return;
    }
    left -= room;
    it.segIndex++;
    it.iovOffset = 0;
  }
  // Skip zero-length segments so the cursor rests on real data.
  while (it.segIndex < segs.length && segs[it.segIndex].len === 0) it.segIndex++;
}

/** One contiguous piece of the iterator's memory: a user range or a page range. */
export type IterChunk =
  | { kind: "user"; addr: bigint; len: number }
  | { kind: "page"; bv: BioVec; offset: number; len: number };

/** The next contiguous chunk of at most `max` bytes, without advancing. */
export function iovIterNextChunk(it: IovIter, max: number): IterChunk | undefined {
  if (it.count === 0) return undefined;
  switch (it.type) {
    case "ubuf":
      return { kind: "user", addr: it.addr + BigInt(it.iovOffset), len: Math.min(max, it.count) };
    case "iovec": {
      const seg = it.iov[it.segIndex];
      const len = Math.min(max, it.count, seg.len - it.iovOffset);
      return { kind: "user", addr: seg.base + BigInt(it.iovOffset), len };
    }
    case "bvec": {
      const bv = it.bvec[it.segIndex];
      const len = Math.min(max, it.count, bv.len - it.iovOffset);
      return { kind: "page", bv, offset: it.iovOffset, len };
    }
    case "dmatag":
      throw new Error("iov_iter: a dma-tag iterator has no CPU-addressable memory");
  }
}

/**
 * copy_to_iter(): copy `src` into the iterator's memory and advance.
 * Returns bytes copied, or -EFAULT if nothing could be copied. Bvec pages are
 * written through their frames; user ranges through the address space, up to
 * the first byte that faults (a short copy, as raw_copy_to_user leaves it).
 */
export function copyToIter(src: Uint8Array, it: IovIter, mm: UserMm): number {
  let done = 0;
  while (done < src.length && it.count > 0) {
    const c = iovIterNextChunk(it, src.length - done)!;
    if (c.kind === "user") {
      const ok = mm.mappedPrefix(c.addr, c.len);
      if (ok > 0) mm.copyToUser(c.addr, src.subarray(done, done + ok));
      if (ok < c.len) {
        iovIterAdvance(it, ok);
        done += ok;
        break;
      }
    } else {
      c.bv.page.data.set(src.subarray(done, done + c.len), c.bv.offset + c.offset);
    }
    iovIterAdvance(it, c.len);
    done += c.len;
  }
  return done === 0 && src.length > 0 ? -Errno.EFAULT : done;
}

/**
 * copy_from_iter(): copy up to `len` bytes out of the iterator and advance,
 * stopping at the first user byte that faults. Returns the bytes, or -EFAULT
 * if nothing could be copied.
 */
export function copyFromIter(it: IovIter, len: number, mm: UserMm): Uint8Array | number {
  const out = new Uint8Array(Math.min(len, it.count));
  let done = 0;
  while (done < out.length) {
    const c = iovIterNextChunk(it, out.length - done)!;
    if (c.kind === "user") {
      const ok = mm.mappedPrefix(c.addr, c.len);
      const b = mm.copyFromUser(c.addr, ok);
      if (typeof b === "number") break;
      out.set(b, done);
      if (ok < c.len) {
        iovIterAdvance(it, ok);
        done += ok;
        break;
      }
    } else {
      const start = c.bv.offset + c.offset;
      out.set(c.bv.page.data.subarray(start, start + c.len), done);
    }
    iovIterAdvance(it, c.len);
    done += c.len;
  }
  if (done === 0 && out.length > 0) return -Errno.EFAULT;
  return done === out.length ? out : out.subarray(0, done);
}

/** Alignment of every segment start and length (iov_iter_alignment), for O_DIRECT checks. */
export function iovIterAlignment(it: IovIter): number {
  let res = 0;
  switch (it.type) {
    case "ubuf":
      return Number((it.addr + BigInt(it.iovOffset)) & 0xffffffffn) | it.count;
    case "iovec": {
      let skip = it.iovOffset;
      let left = it.count;
      for (let i = it.segIndex; i < it.iov.length && left > 0; i++) {
        const len = Math.min(it.iov[i].len - skip, left);
        if (len > 0) res |= Number((it.iov[i].base + BigInt(skip)) & 0xffffffffn) | len;
        left -= len;
        skip = 0;
      }
      return res;
    }
    case "bvec": {
      let skip = it.iovOffset;
      let left = it.count;
      for (let i = it.segIndex; i < it.bvec.length && left > 0; i++) {
        const len = Math.min(it.bvec[i].len - skip, left);
        if (len > 0) res |= (it.bvec[i].offset + skip) | len;
        left -= len;
        skip = 0;
      }
      return res;
    }
    case "dmatag":
      return it.iovOffset | it.count;
  }
}

/**
 * iov_iter_is_aligned(): every segment's start is aligned to `addrMask` and
 * every segment's length to `lenMask` (ITER_BVEC and ITER_IOVEC check each
 * piece; ITER_UBUF its one range; the proposal's ITER_DMA_TAG its offset
 * into the premapped buffer and its count).
 */
export function iovIterIsAligned(it: IovIter, addrMask: number, lenMask: number): boolean {
  switch (it.type) {
    case "ubuf":
      return (Number((it.addr + BigInt(it.iovOffset)) & 0xffffn) & addrMask) === 0 &&
        (it.count & lenMask) === 0;
    case "dmatag":
      return (it.iovOffset & addrMask) === 0 && (it.count & lenMask) === 0;
    case "iovec":
    case "bvec": {
      let skip = it.iovOffset;
      let size = it.count;
      const n = it.type === "iovec" ? it.iov.length : it.bvec.length;
      for (let i = it.segIndex; i < n && size > 0; i++) {
        let len: number;
        let start: number;
        if (it.type === "iovec") {
          len = it.iov[i].len - skip;
          start = Number((it.iov[i].base + BigInt(skip)) & 0xffffn);
        } else {
          len = it.bvec[i].len - skip;
          start = it.bvec[i].offset + skip;
        }
        if (len > size) len = size;
        if (len & lenMask) return false;
        if (start & addrMask) return false;
        size -= len;
        skip = 0;
      }
      return true;
    }
  }
}
