/**
 * Splitting and merging against queue limits, and building the scatterlist
 * (block/blk-merge.c): bio_split_rw_at(), bvec_split_segs(),
 * get_max_segment_size(), bvec_gap_to_prev(), biovec_phys_mergeable(),
 * bio_will_gap(), ll_back_merge_fn()/ll_front_merge_fn(), blk_rq_map_sg().
 *
 * A dma-tag bio (the proposal) has no pages: PATCHv2's bio_split_rw()
 * counts the pages it spans as its segments and splits it by max_sectors or,
 * failing that, by max_segments (see {@link bioSplitRwAt}); it is never
 * merged.
 *
 * @module
 */

import type { Kernel } from "../kernel.ts";
import { PAGE_SIZE, pfnToPhys } from "../memory/phys.ts";
import type { Scatterlist } from "../dma/types.ts";
import type { BioVec } from "./bvec.ts";
import { type Bio, type BioSegment, bioSegments, bioSplit } from "./bio.ts";
import { BlkStatus, type QueueLimits, SECTOR_SHIFT } from "./blk_types.ts";

/** Physical address of a segment's first byte (bvec_phys). */
export function segPhys(s: { page: { pfn: number }; offset: number }): bigint {
  return pfnToPhys(s.page.pfn, s.offset);
}

/** __bvec_gap_to_prev(): would a segment at `offset` after `prev` leave a virt-boundary gap? */
export function bvecGapToPrev(
  lim: QueueLimits,
  prev: BioSegment | BioVec,
  offset: number,
): boolean {
  const mask = lim.virtBoundaryMask;
  if (mask === 0) return false;
  return (offset & mask) !== 0 || ((prev.offset + prev.len) & mask) !== 0;
}

/** get_max_segment_size(): bytes of a segment at `paddr` within boundary and size limits. */
export function getMaxSegmentSize(lim: QueueLimits, paddr: bigint, len: number): number {
  const mask = lim.segBoundaryMask;
  const toBoundary = Number(mask - (paddr & mask));
  return Math.min(len, Math.min(toBoundary, lim.maxSegmentSize - 1) + 1);
}

/** biovec_phys_mergeable(): physically contiguous and within one boundary window. */
export function biovecPhysMergeable(
  lim: QueueLimits,
  a: { page: { pfn: number }; offset: number; len: number },
  b: { page: { pfn: number }; offset: number; len: number },
): boolean {
  const a1 = segPhys(a);
  const a2 = segPhys(b);
  if (a1 + BigInt(a.len) !== a2) return false;
  const m = lim.segBoundaryMask;
  return (a1 | m) === ((a2 + BigInt(b.len) - 1n) | m);
}

/** 0n..8n, made once (sectors per physical block is at most 8). */
const SMALL_BIGINTS: readonly bigint[] = [0n, 1n, 2n, 3n, 4n, 5n, 6n, 7n, 8n];

/** get_max_io_size(): bytes one request may carry, aligned down to the block sizes. */
export function getMaxIoBytes(lim: QueueLimits, bio: Bio): number {
  const pbsSectors = lim.physicalBlockSize >>> SECTOR_SHIFT;
  const lbsSectors = lim.logicalBlockSize >>> SECTOR_SHIFT;
  let max = lim.maxSectors;
  // Keep the split on a physical block boundary when the limit allows it.
  const start = Number(bio.iter.sector % (SMALL_BIGINTS[pbsSectors] ?? BigInt(pbsSectors)));
  const end = (start + max) & ~(pbsSectors - 1);
  if (end > start) max = end - start;
  max -= max % lbsSectors;
  return max << SECTOR_SHIFT;
}

/** bvec_split_segs(): add as much of one segment as the limits allow; true if it must split. */
function bvecSplitSegs(
  lim: QueueLimits,
  seg: BioSegment,
  acc: { nsegs: number; bytes: number },
  maxBytes: number,
): boolean {
  const maxLen = maxBytes - acc.bytes;
  let len = Math.min(seg.len, maxLen);
  let total = 0;
  while (len > 0 && acc.nsegs < lim.maxSegments) {
    const size = getMaxSegmentSize(lim, segPhys(seg) + BigInt(total), len);
    acc.nsegs++;
    total += size;
    len -= size;
    if ((seg.offset + total) & lim.virtBoundaryMask) break;
  }
  acc.bytes += total;
  return len > 0 || seg.len > maxLen;
}

/** Result of {@link bioSplitRwAt}. */
export interface SplitPoint {
  /** Sectors to split off the front (0: no split needed), or a negative errno. */
  sectors: number;
  /** Segments in the (front part of the) bio. */
  nsegs: number;
}

/**
 * The dma-tag branch PATCHv2 ("block: add dma tag bio type") adds to
 * bio_split_rw(). Segments are the pages the bio spans, counted from the
 * in-page part of its offset into the premapped buffer (bi_bvec_done; the
 * buffer's own first offset is not part of it). Too many bytes: split at
 * max_bytes, with the segments floored from it and max_segments not checked;
 * else too many pages: split after max_segments pages.
 */
function dmaTagSplit(lim: QueueLimits, bio: Bio, maxBytes: number): SplitPoint {
  const offset = bio.dmaOffset & (PAGE_SIZE - 1);
  let nsegs = Math.ceil((bio.iter.size + offset) / PAGE_SIZE);
  let bytes: number;
  if (bio.iter.size > maxBytes) {
    bytes = maxBytes;
    nsegs = Math.floor((bytes + offset) / PAGE_SIZE);
  } else if (nsegs > lim.maxSegments) {
    nsegs = lim.maxSegments;
    bytes = PAGE_SIZE * nsegs - offset;
  } else {
    return { sectors: 0, nsegs };
  }
  return finishSplit(lim, bio, bytes, nsegs);
}

/** bio_split_rw_at(): where `bio` must be split to obey `lim`. */
export function bioSplitRwAt(lim: QueueLimits, bio: Bio): SplitPoint {
  const maxBytes = getMaxIoBytes(lim, bio);
  if (bio.isDmaTagged) return dmaTagSplit(lim, bio, maxBytes);
  const acc = { nsegs: 0, bytes: 0 };
  let prev: BioSegment | undefined;
  for (const seg of bioSegments(bio)) {
    if (prev && bvecGapToPrev(lim, prev, seg.offset)) {
      return finishSplit(lim, bio, acc.bytes, acc.nsegs);
    }
    if (
      acc.nsegs < lim.maxSegments && acc.bytes + seg.len <= maxBytes &&
      seg.offset + seg.len <= PAGE_SIZE && seg.len <= lim.maxSegmentSize &&
      getMaxSegmentSize(lim, segPhys(seg), seg.len) === seg.len
    ) {
      acc.nsegs++;
      acc.bytes += seg.len;
    } else if (bvecSplitSegs(lim, seg, acc, maxBytes)) {
      return finishSplit(lim, bio, acc.bytes, acc.nsegs);
    }
    prev = seg;
  }
  return { sectors: 0, nsegs: acc.nsegs };
}

function finishSplit(lim: QueueLimits, bio: Bio, bytes: number, nsegs: number): SplitPoint {
  // REQ_NOWAIT bios are not split (the caller retries from a context that may wait).
  if (bio.nowait) return { sectors: -11, nsegs };
  const aligned = bytes - (bytes % lim.logicalBlockSize);
  if (aligned === 0) return { sectors: -22, nsegs };
  return { sectors: aligned >>> SECTOR_SHIFT, nsegs };
}

/**
 * __bio_split_to_limits(): the pieces `bio` becomes, front first, each with
 * its segment count. Split pieces are chained to `bio`, which is the last
 * piece. A bio that cannot be split validly is ended with an error and no
 * piece is returned.
 */
export function bioSplitToLimits(
  kernel: Kernel,
  lim: QueueLimits,
  bio: Bio,
  endWithStatus: (bio: Bio, status: number) => void,
): { bio: Bio; nsegs: number }[] {
  const out: { bio: Bio; nsegs: number }[] = [];
  for (let guard = 0; guard < 1 << 20; guard++) {
    const sp = bioSplitRwAt(lim, bio);
    if (sp.sectors < 0) {
      endWithStatus(bio, sp.sectors === -11 ? BlkStatus.AGAIN : BlkStatus.INVAL);
      return out;
    }
    if (sp.sectors === 0) {
      bio.nrSegs = sp.nsegs;
      out.push({ bio, nsegs: sp.nsegs });
      return out;
    }
    const front = bioSplit(kernel, bio, sp.sectors);
    front.nrSegs = sp.nsegs;
    out.push({ bio: front, nsegs: sp.nsegs });
  }
  throw new Error("bio_split_to_limits: split loop did not terminate");
}

/** bio_will_gap(): would `next` after `prev` (with `first` the request's first bio) gap? */
export function bioWillGap(lim: QueueLimits, first: Bio, prev: Bio, next: Bio): boolean {
  if (lim.virtBoundaryMask === 0) return false;
  if (first.isDmaTagged || prev.isDmaTagged || next.isDmaTagged) return true;
  const firstSeg = bioSegments(first).next().value as BioSegment | undefined;
  if (!firstSeg) return false;
  if (firstSeg.offset & lim.virtBoundaryMask) return true;
  let last: BioSegment | undefined;
  for (const s of bioSegments(prev)) last = s;
  const nb = bioSegments(next).next().value as BioSegment | undefined;
  if (!last || !nb) return false;
  if (biovecPhysMergeable(lim, last, nb)) return false;
  return bvecGapToPrev(lim, last, nb.offset);
}

/**
 * blk_rq_map_sg(): the scatterlist for a request's bios, one entry per
 * bio_vec (a multi-page one cut at segment limits, blk_bvec_map_sg). Only a
 * bio's first bio_vec may join the entry before it, when it continues the
 * previous bio's last one physically (__blk_segment_map_sg_merge): inside a
 * bio, bio_add_page() already merged what was mergeable. Entries keep the
 * bvec's first page with an offset that may pass it (the DMA layer works
 * from page frame and offset).
 */
export function blkRqMapSg(lim: QueueLimits, bios: readonly Bio[]): Scatterlist[] {
  const sgl: Scatterlist[] = [];
  let prev: BioSegment | undefined;
  for (const bio of bios) {
    let newBio = prev !== undefined;
    let last: BioSegment | undefined;
    for (const seg of bioSegments(bio)) {
      last = seg;
      const cur = sgl.length > 0 ? sgl[sgl.length - 1] : undefined;
      if (
        newBio && cur && cur.length + seg.len <= lim.maxSegmentSize &&
        biovecPhysMergeable(lim, prev!, seg)
      ) {
        cur.length += seg.len;
        newBio = false;
        continue;
      }
      newBio = false;
      // blk_bvec_map_sg(): a segment larger than the limits becomes several entries.
      let done = 0;
      while (done < seg.len) {
        const n = getMaxSegmentSize(lim, segPhys(seg) + BigInt(done), seg.len - done);
        sgl.push({
          page: seg.page,
          offset: seg.offset + done,
          length: n,
          dmaAddress: 0n,
          dmaLength: 0,
        });
        done += n;
      }
    }
    if (bio.iter.size > 0 && last) prev = last;
  }
  if (sgl.length > lim.maxSegments) {
    throw new Error(`blk_rq_map_sg: ${sgl.length} entries > max_segments ${lim.maxSegments}`);
  }
  return sgl;
}
