/**
 * `struct bio` (include/linux/bio.h, block/bio.c): one contiguous range of
 * sectors and the memory it moves, as a window (`bvec_iter`) over an array
 * of bio_vecs, or, with the proposal, as a dma tag and an offset into the
 * premapped buffer (no pages at all).
 *
 * Bios built from a user range own their bio_vec array and the pins behind
 * it; bios built from a registered buffer (ITER_BVEC) reference the
 * buffer's array and pin nothing; dma-tag bios carry only the tag.
 *
 * @module
 */

import type { Kernel } from "../kernel.ts";
import type { Page } from "../memory/phys.ts";
import { PAGE_SIZE } from "../memory/phys.ts";
import { Errno } from "../uapi/errno.ts";
import type { BioVec, DmaTag } from "./bvec.ts";
import { type IovIter, iovIterAdvance, iovIterNextChunk } from "./iov_iter.ts";
import { BIO_MAX_VECS, BlkStatus, type BlkStatusT, type ReqOp, SECTOR_SHIFT } from "./blk_types.ts";

/** sizeof(struct bio_vec) on x86_64, for bytesAllocated. */
export const BIO_VEC_BYTES = 16;

/** struct bvec_iter: where in bi_io_vec this bio's data is. */
export interface BvecIterState {
  /** bi_sector: device address in 512-byte sectors. */
  sector: bigint;
  /** bi_size: bytes left. */
  size: number;
  /** bi_idx: current index into bi_io_vec. */
  idx: number;
  /** bi_bvec_done: bytes done in the current bvec. */
  bvecDone: number;
}

/** One physically contiguous piece of a bio (bio_for_each_segment). */
export interface BioSegment {
  /** The page. */
  page: Page;
  /** Offset in the page. */
  offset: number;
  /** Bytes (never crosses the page). */
  len: number;
}

/** struct bio */
export class Bio {
  /** Id for diagnostics, unique on its host (`kernel.nextId("bio")`). */
  readonly id: number;
  /** bi_opf's operation. */
  readonly op: ReqOp;
  /** bi_iter */
  readonly iter: BvecIterState;
  /** bi_io_vec (owned for user pages, shared for registered buffers). */
  ioVec: readonly BioVec[] = [];
  /** The proposal's dma tag, for a premapped buffer; ioVec is then empty. */
  dmaTag: DmaTag | undefined;
  /** Offset into the premapped buffer of this bio's first byte. */
  dmaOffset = 0;
  /** bi_status */
  status: BlkStatusT = BlkStatus.OK;
  /** REQ_NOWAIT: fail with BLK_STS_AGAIN rather than wait for a tag. */
  nowait = false;
  /** REQ_FUA: the write is on stable media when it completes. */
  fua = false;
  /** BIO_PAGE_PINNED: pages to unpin on completion (the original bio only). */
  pinned: Page[] = [];
  /** Segments counted by the splitter (bi_nr_segments stand-in for the request). */
  nrSegs = 0;
  /** bi_end_io */
  endIo: ((bio: Bio) => void) | undefined;
  /** bi_private: the chain parent for a split bio. */
  parent: Bio | undefined;
  /** __bi_remaining: completions still expected (itself plus chained children). */
  remaining = 1;

  /** bio_alloc() */
  constructor(id: number, op: ReqOp, sector: bigint) {
    this.id = id;
    this.op = op;
    this.iter = { sector, size: 0, idx: 0, bvecDone: 0 };
  }

  /** bio_sectors() */
  get sectors(): number {
    return this.iter.size >>> SECTOR_SHIFT;
  }

  /** bio_end_sector() */
  get endSector(): bigint {
    return this.iter.sector + BigInt(this.sectors);
  }

  /** Whether this is a dma-tag bio (the proposal's BIO_DMA_TAGGED). */
  get isDmaTagged(): boolean {
    return this.dmaTag !== undefined;
  }
}

/** bio_alloc(): count it. */
export function bioAlloc(kernel: Kernel, op: ReqOp, sector: bigint): Bio {
  kernel.stats.add("bios");
  return new Bio(kernel.nextId("bio"), op, sector);
}

/** bio_for_each_segment(): the page-sized pieces of a bvec bio within its iterator. */
export function* bioSegments(bio: Bio): Generator<BioSegment> {
  if (bio.isDmaTagged) throw new Error("bio_for_each_segment on a dma-tag bio");
  let idx = bio.iter.idx;
  let done = bio.iter.bvecDone;
  let left = bio.iter.size;
  while (left > 0) {
    const bv = bio.ioVec[idx];
    if (!bv) throw new Error(`bio ${bio.id}: bvec iterator past the array`);
    const len = Math.min(bv.len - done, left);
    if (len > 0) yield { page: bv.page, offset: bv.offset + done, len };
    left -= len;
    idx++;
    done = 0;
  }
}

/** bio_advance(): consume `bytes` from the front. */
export function bioAdvance(bio: Bio, bytes: number): void {
  if (bytes > bio.iter.size) throw new RangeError(`bio_advance ${bytes} > ${bio.iter.size}`);
  bio.iter.sector += BigInt(bytes >>> SECTOR_SHIFT);
  bio.iter.size -= bytes;
  if (bio.isDmaTagged) {
    bio.dmaOffset += bytes;
    return;
  }
  let left = bytes;
  while (left > 0) {
    const room = bio.ioVec[bio.iter.idx].len - bio.iter.bvecDone;
    if (left < room) {
      bio.iter.bvecDone += left;
      return;
    }
    left -= room;
    bio.iter.idx++;
    bio.iter.bvecDone = 0;
  }
}

/** bio_chain(): `parent` completes only after `child`. */
export function bioChain(child: Bio, parent: Bio): void {
  if (child.endIo) throw new Error("bio_chain: child already has an end_io");
  child.parent = parent;
  child.endIo = bioChainEndio;
  parent.remaining++;
}

/** bio_chain_endio() */
function bioChainEndio(child: Bio): void {
  const parent = child.parent!;
  if (child.status !== BlkStatus.OK && parent.status === BlkStatus.OK) {
    parent.status = child.status;
  }
  bioEndio(parent);
}

/** bio_endio(): drop one completion; at zero, call bi_end_io. */
export function bioEndio(bio: Bio): void {
  if (bio.remaining <= 0) throw new Error(`bio_endio: bio ${bio.id} completed twice`);
  bio.remaining--;
  if (bio.remaining > 0) return;
  bio.endIo?.(bio);
}

/**
 * bio_split(): a new bio for the first `sectors` sectors of `bio`, which
 * keeps the rest. The split shares bi_io_vec and is chained to `bio`.
 */
export function bioSplit(kernel: Kernel, bio: Bio, sectors: number): Bio {
  const bytes = sectors << SECTOR_SHIFT;
  if (sectors <= 0 || bytes >= bio.iter.size) {
    throw new RangeError(`bio_split: ${sectors} sectors of a ${bio.iter.size}-byte bio`);
  }
  const split = bioAlloc(kernel, bio.op, bio.iter.sector);
  kernel.stats.add("bioSplits");
  split.ioVec = bio.ioVec;
  split.dmaTag = bio.dmaTag;
  split.dmaOffset = bio.dmaOffset;
  split.nowait = bio.nowait;
  split.fua = bio.fua;
  Object.assign(split.iter, bio.iter, { size: bytes });
  bioAdvance(bio, bytes);
  bioChain(split, bio);
  return split;
}

/** bio_release_pages(): unpin what bio_iov_iter_get_pages pinned. */
export function bioReleasePages(kernel: Kernel, bio: Bio): void {
  if (bio.pinned.length === 0) return;
  kernel.mm.unpinUserPages(bio.pinned);
  bio.pinned = [];
}

/**
 * bio_iov_iter_get_pages(): attach the iterator's memory to `bio` and
 * advance it. ITER_BVEC references the array (bio_iov_bvec_set, nothing
 * pinned); the proposal's ITER_DMA_TAG sets tag and offset; user ranges are
 * pinned (pin_user_pages) into at most {@link BIO_MAX_VECS} new bio_vecs,
 * trimmed to a multiple of the logical block size. 0 or a negative errno.
 */
export function bioIovIterGetPages(
  kernel: Kernel,
  bio: Bio,
  it: IovIter,
  logicalBlockSize: number,
): number {
  const t0 = kernel.stats.begin();
  try {
    if (it.type === "bvec") {
      bio.ioVec = it.bvec;
      bio.iter.idx = it.segIndex;
      bio.iter.bvecDone = it.iovOffset;
      bio.iter.size = it.count;
      iovIterAdvance(it, it.count);
      return 0;
    }
    if (it.type === "dmatag") {
      bio.dmaTag = it.tag;
      bio.dmaOffset = it.iovOffset;
      bio.iter.size = it.count;
      iovIterAdvance(it, it.count);
      return 0;
    }
    return getUserPages(kernel, bio, it, logicalBlockSize);
  } finally {
    kernel.stats.end("iov_iter", t0);
  }
}

/** __bio_iov_iter_get_pages() for ITER_UBUF / ITER_IOVEC. */
function getUserPages(kernel: Kernel, bio: Bio, it: IovIter, lbs: number): number {
  // Plan the chunks first so the logical-block trim never pins a page it then drops.
  const chunks: { addr: bigint; len: number }[] = [];
  let pages = 0;
  let total = 0;
  const probe = { ...it } as IovIter;
  while (probe.count > 0 && pages < BIO_MAX_VECS) {
    const c = iovIterNextChunk(probe, Number.MAX_SAFE_INTEGER);
    if (!c || c.kind !== "user") break;
    const off = Number(c.addr & BigInt(PAGE_SIZE - 1));
    const room = (BIO_MAX_VECS - pages) * PAGE_SIZE - off;
    const len = Math.min(c.len, room);
    if (len <= 0) break;
    chunks.push({ addr: c.addr, len });
    pages += Math.ceil((off + len) / PAGE_SIZE);
    total += len;
    iovIterAdvance(probe, len);
  }
  let trim = total % lbs;
  while (trim > 0) {
    const last = chunks[chunks.length - 1];
    const cut = Math.min(trim, last.len);
    last.len -= cut;
    trim -= cut;
    total -= cut;
    if (last.len === 0) chunks.pop();
  }
  if (total === 0) return -Errno.EFAULT;
  const vecs: BioVec[] = [];
  const pinned: Page[] = [];
  for (const c of chunks) {
    const r = kernel.mm.pinUserPages(c.addr, c.len);
    if (typeof r === "number") {
      if (pinned.length > 0) kernel.mm.unpinUserPages(pinned);
      return r;
    }
    let off = r.offset;
    let left = c.len;
    for (const page of r.pages) {
      const len = Math.min(PAGE_SIZE - off, left);
      vecs.push({ page, offset: off, len });
      pinned.push(page);
      left -= len;
      off = 0;
    }
  }
  iovIterAdvance(it, total);
  bio.ioVec = vecs;
  bio.pinned = pinned;
  bio.iter.idx = 0;
  bio.iter.bvecDone = 0;
  bio.iter.size = total;
  kernel.stats.add("bioVecs", vecs.length);
  kernel.stats.add("bytesAllocated", vecs.length * BIO_VEC_BYTES);
  return 0;
}
