/**
 * A controller's volatile write cache (Identify Controller VWC), shared by
 * its namespaces, and what a power cut does to it. The C controller keeps
 * the same cache (`ffi/native/nvme_emu_cache.inc`) with the same order and the
 * same choices.
 *
 * - A Write (without FUA) completes once its blocks are in the cache: one
 *   entry per logical block, replacing an older cached copy of that block.
 *   Entries are kept oldest first; when the cache holds more than its
 *   capacity, the oldest entries are written to the media (destaged) until
 *   it fits.
 * - A Read returns each block from the cache when it is there, else from the
 *   media. A Read with FUA destages its blocks first (NVM Command Set 3.2.4:
 *   FUA reads from non-volatile media).
 * - A Write with FUA goes to the media and removes the blocks it wrote from
 *   the cache (they hold older data).
 * - Flush destages every entry of its namespace (all of them for NSID
 *   FFFFFFFFh); a shutdown notification (CC.SHN) destages everything.
 * - A power cut ({@link WriteCache.powerCut}) loses a seeded subset of the
 *   writes that still own cached blocks, and destages the rest.
 *
 * @module
 */

import { Rng } from "../random.ts";
import type { SparseMedia } from "./media.ts";

/** Default cache capacity (bytes). */
export const WRITE_CACHE_DEFAULT_BYTES = 4 << 20;
/** Largest cache capacity a controller accepts (bytes). */
export const WRITE_CACHE_MAX_BYTES = 256 << 20;

/** What a power cut did to the cache. */
export interface PowerCutReport {
  /** Writes (commands) whose cached blocks were dropped. */
  writesLost: number;
  /** Writes that still had cached blocks and were destaged. */
  writesKept: number;
  /** Logical blocks dropped. */
  blocksLost: number;
}

interface Entry {
  readonly nsid: number;
  readonly lba: number;
  readonly data: Uint8Array;
  /** The write command that put it there (1, 2, ... per controller). */
  readonly seq: number;
}

/** What the cache needs to reach a namespace's media. */
export interface CacheNamespace {
  readonly lbaSize: number;
  readonly media: SparseMedia;
}

/** The volatile write cache of one controller. */
export class WriteCache {
  /** Capacity in bytes. */
  readonly capacityBytes: number;
  readonly #ns: readonly CacheNamespace[];
  /** Entries oldest first (Map insertion order), keyed by namespace and LBA. */
  readonly #entries = new Map<number, Entry>();
  #bytes = 0;
  #seq = 0;
  /** Write commands completed into the cache. */
  cachedWrites = 0;
  /** Blocks written from the cache to the media (evictions, flushes, FUA reads, shutdown, power cut). */
  blocksDestaged = 0;

  /** A cache of `capacityBytes` in front of `namespaces` (NSID i + 1 is `namespaces[i]`). */
  constructor(namespaces: readonly CacheNamespace[], capacityBytes = WRITE_CACHE_DEFAULT_BYTES) {
    if (
      !Number.isInteger(capacityBytes) || capacityBytes < 4096 ||
      capacityBytes > WRITE_CACHE_MAX_BYTES
    ) {
      throw new RangeError(
        `write cache: ${capacityBytes} bytes (4096..${WRITE_CACHE_MAX_BYTES})`,
      );
    }
    this.capacityBytes = capacityBytes;
    this.#ns = namespaces;
  }

  /** Bytes cached. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Blocks cached. */
  get blocks(): number {
    return this.#entries.size;
  }

  #key(nsid: number, lba: number): number {
    return (nsid - 1) * 2 ** 42 + lba;
  }

  /** Cache a Write of `data` at block `lba` of namespace `nsid`; evicts the oldest to fit. */
  write(nsid: number, lba: number, data: Uint8Array): void {
    const size = this.#ns[nsid - 1].lbaSize;
    const seq = ++this.#seq;
    this.cachedWrites++;
    for (let i = 0; i * size < data.length; i++) {
      const key = this.#key(nsid, lba + i);
      const old = this.#entries.get(key);
      if (old) {
        this.#entries.delete(key);
        this.#bytes -= old.data.length;
      }
      const block = data.slice(i * size, (i + 1) * size);
      this.#entries.set(key, { nsid, lba: lba + i, data: block, seq });
      this.#bytes += size;
    }
    while (this.#bytes > this.capacityBytes) {
      const [key, e] = this.#entries.entries().next().value!;
      this.#destage(key, e);
    }
  }

  /** Drop the cached copies of `nblocks` blocks from `lba` (a FUA write replaced them). */
  discard(nsid: number, lba: number, nblocks: number): void {
    if (this.#entries.size === 0) return;
    for (let i = 0; i < nblocks; i++) {
      const key = this.#key(nsid, lba + i);
      const e = this.#entries.get(key);
      if (!e) continue;
      this.#entries.delete(key);
      this.#bytes -= e.data.length;
    }
  }

  /** Write `nblocks` blocks from `lba` to the media if cached (a FUA read). */
  destageRange(nsid: number, lba: number, nblocks: number): void {
    if (this.#entries.size === 0) return;
    for (let i = 0; i < nblocks; i++) {
      const key = this.#key(nsid, lba + i);
      const e = this.#entries.get(key);
      if (e) this.#destage(key, e);
    }
  }

  /** Copy the cached blocks among `nblocks` from `lba` over `out` (the media's bytes of them). */
  overlay(nsid: number, lba: number, nblocks: number, out: Uint8Array): void {
    if (this.#entries.size === 0) return;
    const size = this.#ns[nsid - 1].lbaSize;
    for (let i = 0; i < nblocks; i++) {
      const e = this.#entries.get(this.#key(nsid, lba + i));
      if (e) out.set(e.data, i * size);
    }
  }

  /** Destage every entry of namespace `nsid` (every entry for `undefined`), oldest first. */
  flush(nsid?: number): void {
    for (const [key, e] of [...this.#entries]) {
      if (nsid === undefined || e.nsid === nsid) this.#destage(key, e);
    }
  }

  #destage(key: number, e: Entry): void {
    const ns = this.#ns[e.nsid - 1];
    ns.media.write(e.lba * ns.lbaSize, e.data);
    this.#entries.delete(key);
    this.#bytes -= e.data.length;
    this.blocksDestaged++;
  }

  /**
   * Power fails. The writes that still own cached blocks are the candidates,
   * oldest first; `Rng(seed)` decides each in turn (lost when its next 32-bit
   * value has the top bit set). If any candidate exists and none was chosen,
   * the candidate at `rng.int(candidates)` is lost. Blocks of lost writes are
   * dropped; every other entry is destaged, oldest first. The cache is empty
   * after.
   */
  powerCut(seed: number): PowerCutReport {
    const rng = new Rng(seed);
    const seqs: number[] = [];
    for (const e of this.#entries.values()) {
      if (seqs.length === 0 || seqs[seqs.length - 1] !== e.seq) seqs.push(e.seq);
    }
    const lost = new Set<number>();
    for (const s of seqs) if (rng.nextU32() >>> 31 === 1) lost.add(s);
    if (lost.size === 0 && seqs.length > 0) lost.add(seqs[rng.int(seqs.length)]);
    let blocksLost = 0;
    for (const [key, e] of [...this.#entries]) {
      if (lost.has(e.seq)) {
        this.#entries.delete(key);
        this.#bytes -= e.data.length;
        blocksLost++;
      } else {
        this.#destage(key, e);
      }
    }
    return { writesLost: lost.size, writesKept: seqs.length - lost.size, blocksLost };
  }
}
