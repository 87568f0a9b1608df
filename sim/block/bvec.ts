/**
 * `struct bio_vec` (include/linux/bvec.h): one physically contiguous piece of
 * an I/O buffer, and the opaque dma tag the proposal adds.
 *
 * @module
 */

import type { Page } from "../memory/phys.ts";

/** struct bio_vec: a page, a length and an offset within the page. */
export interface BioVec {
  /** bv_page */
  page: Page;
  /** bv_len */
  len: number;
  /** bv_offset */
  offset: number;
}

/**
 * The proposal's dma tag: the cookie a driver's `dma_map` returns for a
 * premapped registered buffer. Drivers return their own object that
 * satisfies this interface; only the driver that made it looks inside.
 */
export interface DmaTag {
  /** Unique id, for diagnostics and invariant checks. */
  readonly tagId: number;
  /** Length in bytes of the mapped buffer. */
  readonly length: number;
  /** Name of the driver that made it (e.g. "nvme"). */
  readonly driver: string;
}
