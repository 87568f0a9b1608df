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
import { PAGE_SIZE, pfnToPhys } from "../memory/phys.ts";
import { Errno } from "../uapi/errno.ts";
import type { BioVec, DmaTag } from "./bvec.ts";
import { type IovIter, iovIterAdvance, iovIterNextChunk } from "./iov_iter.ts";
import { BIO_MAX_VECS, BlkStatus, type BlkStatusT, type ReqOp, SECTOR_SHIFT } from "./blk_types.ts";
import { COUNTER } from "../stats.ts";

/** sizeof(struct bio_vec) on x86_64, for bytesAllocated. */
export const BIO_VEC_BYTES = 16;

/**
 * sizeof(struct bio) in 6.0 on x86_64 with CONFIG_BLK_CGROUP,
 * CONFIG_BLK_CGROUP_IOCOST, CONFIG_BLK_INLINE_ENCRYPTION and
 * CONFIG_BLK_DEV_INTEGRITY set (112 without the last three): the packed
 * 20-byte bvec_iter, bi_cookie, the cgroup, crypt and integrity pointers,
 * bi_vcnt/bi_max_vecs/__bi_cnt, bi_io_vec and bi_pool, before the flexible
 * bi_inline_vecs[].
 */
export const BIO_BYTES = 136;
/** BIO_INLINE_VECS: bio_vecs a bio_set with BIOSET_NEED_BVECS keeps inside each bio. */
export const BIO_INLINE_VECS = 4;

/**
 * struct bio_set: what one bio from it occupies (bs_bio_slab_size(): the
 * caller's front_pad, the bio, and BIO_INLINE_VECS bio_vecs when it was made
 * with BIOSET_NEED_BVECS).
 */
export interface BioSet {
  /** Kernel name. */
  readonly name: string;
  /** front_pad: the caller's structure the bio sits at the end of. */
  readonly frontPad: number;
  /** BIOSET_NEED_BVECS: inline bio_vecs behind the bio, and a biovec pool for more. */
  readonly needBvecs: boolean;
}

/**
 * blkdev_dio_pool (block/fops.c): the bio of an O_DIRECT read or write on a
 * block device, at the end of a `struct blkdev_dio` whose bio is cache-line
 * aligned (front_pad 64), with inline bio_vecs.
 */
export const BLKDEV_DIO_POOL: BioSet = { name: "blkdev_dio_pool", frontPad: 64, needBvecs: true };
/** fs_bio_set (block/bio.c): bio_alloc()'s, for the second and later bios of a large O_DIRECT I/O. */
export const FS_BIO_SET: BioSet = { name: "fs_bio_set", frontPad: 0, needBvecs: true };
/** q->bio_split: the front piece bio_split() makes (no bio_vecs of its own). */
export const BIO_SPLIT_SET: BioSet = { name: "bio_split", frontPad: 0, needBvecs: false };

/** bs_bio_slab_size(): bytes of one bio from `bs` (264, 200, 136 for the sets above). */
export function bioSetBioBytes(bs: BioSet): number {
  return bs.frontPad + BIO_BYTES + (bs.needBvecs ? BIO_INLINE_VECS * BIO_VEC_BYTES : 0);
}

/**
 * biovec_slab(): bio_vecs of the slab bvec_alloc() takes `nrVecs` from
 * (biovec-16, -64, -128, -max), which becomes bi_max_vecs.
 */
export function biovecSlabVecs(nrVecs: number): number {
  if (!Number.isInteger(nrVecs) || nrVecs <= BIO_INLINE_VECS || nrVecs > BIO_MAX_VECS) {
    throw new RangeError(`biovec_slab: ${nrVecs} bio_vecs`);
  }
  return nrVecs <= 16 ? 16 : nrVecs <= 64 ? 64 : nrVecs <= 128 ? 128 : BIO_MAX_VECS;
}

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

/**
 * One bio_vec of a bio as bio_for_each_bvec() sees it (mp_bvec_iter_bvec):
 * physically contiguous, possibly over several pages, as
 * __bio_try_merge_page() builds them from contiguous frames. `page` is the
 * first page and `offset` may then reach past it (bv_offset +
 * bi_bvec_done), as the kernel's multi-page bvec does.
 */
export interface BioSegment {
  /** The bvec's first page. */
  page: Page;
  /** Offset from that page's first byte. */
  offset: number;
  /** Bytes. */
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
  /** bi_max_vecs: bio_vecs bi_io_vec has room for (0 for a registered buffer or a dma tag). */
  maxVecs = 0;
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
  /** bi_private for the owner's bi_end_io (e.g. the blkdev_dio of an O_DIRECT bio). */
  privateData: unknown = undefined;
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

/** bio_init() of a bio the caller holds (on its stack): no allocation, no bio_vecs. */
export function bioInit(kernel: Kernel, op: ReqOp, sector: bigint): Bio {
  kernel.stats.add(COUNTER.bios);
  return new Bio(kernel.nextId("bio"), op, sector);
}

/**
 * bio_alloc_bioset(): a bio from `bs` (mempool_alloc of its slab object),
 * with room for `nrVecs` bio_vecs: the inline ones up to BIO_INLINE_VECS,
 * else an array from a biovec slab (bvec_alloc), whose size becomes
 * bi_max_vecs. Counted in `bioAllocs`, `bvecAllocs` and `bytesAllocated`.
 */
export function bioAlloc(
  kernel: Kernel,
  op: ReqOp,
  sector: bigint,
  nrVecs: number,
  bs: BioSet,
): Bio {
  if (nrVecs > 0 && !bs.needBvecs) throw new Error(`bio_alloc_bioset: ${bs.name} has no bvecs`);
  const bio = bioInit(kernel, op, sector);
  kernel.stats.add(COUNTER.bioAllocs);
  kernel.stats.add(COUNTER.bytesAllocated, bioSetBioBytes(bs));
  if (nrVecs > BIO_INLINE_VECS) {
    bio.maxVecs = biovecSlabVecs(nrVecs);
    kernel.stats.add(COUNTER.bvecAllocs);
    kernel.stats.add(COUNTER.bytesAllocated, bio.maxVecs * BIO_VEC_BYTES);
  } else if (nrVecs > 0) {
    bio.maxVecs = BIO_INLINE_VECS;
  }
  return bio;
}

/** bio_for_each_bvec(): the (multi-page) bvecs of a bio within its iterator. */
export function* bioSegments(bio: Bio): Generator<BioSegment> {
  if (bio.isDmaTagged) throw new Error("bio_for_each_bvec on a dma-tag bio");
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
  const split = bioAlloc(kernel, bio.op, bio.iter.sector, 0, BIO_SPLIT_SET);
  kernel.stats.add(COUNTER.bioSplits);
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
 * pinned page by page into the bio's {@link Bio.maxVecs} bio_vecs, merging
 * each page into the last bio_vec where it continues it physically
 * (__bio_try_merge_page). 0 or a negative errno.
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
    const vecs: BioVec[] = [];
    bio.ioVec = vecs;
    bio.iter.idx = 0;
    bio.iter.bvecDone = 0;
    let ret: number;
    do {
      ret = getPages(kernel, bio, vecs, it, logicalBlockSize);
    } while (ret === 0 && it.count > 0 && vecs.length < bio.maxVecs);
    kernel.stats.add(COUNTER.bioVecs, vecs.length);
    return vecs.length > 0 ? 0 : ret;
  } finally {
    kernel.stats.end("iov_iter", t0);
  }
}

/**
 * iov_iter_npages(): pages the iterator's user ranges span, each range
 * counted on its own (a page two iovecs share counts twice), at most `max`.
 */
export function iovIterNpages(it: IovIter, max: number): number {
  const probe = { ...it } as IovIter;
  let n = 0;
  while (probe.count > 0 && n < max) {
    const c = iovIterNextChunk(probe, Number.MAX_SAFE_INTEGER);
    if (!c || c.kind !== "user") break;
    n += Math.ceil((Number(c.addr & BigInt(PAGE_SIZE - 1)) + c.len) / PAGE_SIZE);
    iovIterAdvance(probe, c.len);
  }
  return Math.min(n, max);
}

/** bio_iov_vecs_to_alloc(): bio_vecs to allocate; none for a bvec or dma-tag iterator. */
export function bioIovVecsToAlloc(it: IovIter, max: number): number {
  return it.type === "bvec" || it.type === "dmatag" ? 0 : iovIterNpages(it, max);
}

/**
 * __bio_iov_iter_get_pages() for ITER_UBUF / ITER_IOVEC: one user range
 * (the current iovec), at most as many pages as the bio has bio_vecs left,
 * trimmed to the logical block size, then added page by page. The trim is
 * planned first, so no page is pinned and dropped again.
 */
function getPages(kernel: Kernel, bio: Bio, vecs: BioVec[], it: IovIter, lbs: number): number {
  iovIterAdvance(it, 0); // past empty iovecs, as first_iovec_segment() skips them
  const c = iovIterNextChunk(it, UINT_MAX - bio.iter.size);
  if (!c || c.kind !== "user") return -Errno.EFAULT;
  const off = Number(c.addr & BigInt(PAGE_SIZE - 1));
  let size = Math.min(c.len, (bio.maxVecs - vecs.length) * PAGE_SIZE - off);
  size -= size & (lbs - 1);
  if (size <= 0) return -Errno.EFAULT;
  const r = kernel.mm.pinUserPages(c.addr, size);
  if (typeof r === "number") return r;
  let o = r.offset;
  let left = size;
  for (const page of r.pages) {
    const len = Math.min(PAGE_SIZE - o, left);
    bioIovAddPage(kernel, bio, vecs, page, len, o);
    left -= len;
    o = 0;
  }
  iovIterAdvance(it, size);
  return 0;
}

/** UINT_MAX: bi_size is an unsigned int. */
const UINT_MAX = 0xffff_ffff;

/**
 * bio_iov_add_page(): __bio_try_merge_page() first: a page whose data
 * continues the last bio_vec physically extends it (page_is_mergeable); on
 * the same page the extra reference is dropped at once (put_page). Else a
 * new bio_vec (__bio_add_page).
 */
function bioIovAddPage(
  kernel: Kernel,
  bio: Bio,
  vecs: BioVec[],
  page: Page,
  len: number,
  offset: number,
): void {
  const bv = vecs.length > 0 ? vecs[vecs.length - 1] : undefined;
  if (bv && bio.iter.size <= UINT_MAX - len) {
    const vecEnd = pfnToPhys(bv.page.pfn, bv.offset + bv.len) - 1n;
    const pageAddr = pfnToPhys(page.pfn);
    if (vecEnd + 1n === pageAddr + BigInt(offset)) {
      bv.len += len;
      bio.iter.size += len;
      if ((vecEnd & ~BigInt(PAGE_SIZE - 1)) === pageAddr) kernel.mm.unpinUserPages([page]);
      else bio.pinned.push(page);
      return;
    }
  }
  vecs.push({ page, offset, len });
  bio.iter.size += len;
  bio.pinned.push(page);
}
