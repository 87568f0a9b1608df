/**
 * End-to-end cases written once against the public API of `mod.ts`, so the
 * same code runs on every backend: a testbed with one NVMe namespace, a ring
 * with that namespace as fixed file 0, and one of the three buffer paths:
 *
 * - `none`: READ/WRITE (and READV/WRITEV) on plain user buffers;
 * - `bvec`: READ_FIXED/WRITE_FIXED on registered buffers, not premapped;
 * - `dma`:  READ_FIXED/WRITE_FIXED after IORING_REGISTER_MAP_BUFFERS.
 *
 * Every byte read is checked against a shadow of the namespace, every bytes
 * around a read against a canary, every CQE's res against the length. Where
 * the testbed exposes the host stack's counters (`tb.stats`), each I/O run at
 * queue depth 1 is also checked against the exact per-I/O counts its path
 * must produce ({@link expectCounts}). Nothing here looks at `tb.backend`
 * except to name it in messages.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  type Completion,
  type CounterName,
  encodeIovecs,
  Errno,
  type IommuMode,
  type IoPath,
  IOSQE,
  O,
  type Ring,
  Stats,
  type StatsSnapshot,
  type Testbed,
  type UserBuffer,
} from "../../mod.ts";

/** Controller page size: PRP entries describe 4 KiB pages. */
const PAGE = 4096;
/** PRP entries in one page of a PRP list (or of the premapped flat array). */
const PRPS_PER_PAGE = PAGE / 8;
/** PRP entries in one block of the driver's small PRP pool (256 bytes). */
const SMALL_POOL_PRPS = 256 / 8;
/** The DMA alignment O_DIRECT needs of user memory on an NVMe block device (dword). */
const DMA_ALIGN = 4;

/** What a case runs on. */
export interface CaseConfig {
  /** IOMMU mode the testbed was opened with. */
  iommu: IommuMode;
  /** Buffer path under test. */
  path: IoPath;
  /** Logical block size of the namespace the testbed was opened with. */
  lbaSize: 512 | 4096;
  /** Seed for sizes, offsets, positions and data. */
  seed: number;
}

// ------------------------------------------------------------------ randomness

/** A small seeded generator (mulberry32), so a failure replays from its seed. */
export class Prng {
  #s: number;

  /** Start from `seed`. */
  constructor(seed: number) {
    this.#s = seed >>> 0;
  }

  /** Next 32-bit value. */
  u32(): number {
    let t = (this.#s = (this.#s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor((this.u32() / 0x1_0000_0000) * n);
  }

  /** A uniform multiple of `step` in [lo, hi] (lo and hi multiples of step). */
  step(lo: number, hi: number, step: number): number {
    return lo + this.int((hi - lo) / step + 1) * step;
  }

  /** Fill with random bytes. */
  fill(b: Uint8Array): void {
    let i = 0;
    for (; i + 4 <= b.length; i += 4) {
      const v = this.u32();
      b[i] = v;
      b[i + 1] = v >>> 8;
      b[i + 2] = v >>> 16;
      b[i + 3] = v >>> 24;
    }
    for (; i < b.length; i++) b[i] = this.u32();
  }
}

// ------------------------------------------------------------------ the rig

/** One I/O of a case: which buffer, where in it, how long, where on the namespace. */
export interface IoSpec {
  /** "read" or "write". */
  dir: "read" | "write";
  /** Index of the buffer in the rig (also its registered buffer index). */
  buf: number;
  /** Byte offset from the buffer's registered base. */
  off: number;
  /** Bytes. */
  len: number;
  /** Byte position on the namespace. */
  pos: number;
  /**
   * For `none`: split the range over this many iovecs (READV/WRITEV on the
   * plain descriptor rather than the fixed file); 0 = READ/WRITE.
   */
  iovecs?: number;
}

/**
 * A namespace opened O_DIRECT as fixed file 0 of a ring, user buffers for the
 * path (registered, and premapped for `dma`), and a shadow of the namespace.
 */
export class Rig implements Disposable {
  readonly tb: Testbed;
  readonly cfg: CaseConfig;
  readonly ring: Ring;
  readonly fd: number;
  /** Memory behind each buffer (allocated page aligned). */
  readonly mem: UserBuffer[] = [];
  /** Registered base of each buffer: its memory plus a lead-in offset. */
  readonly base: bigint[] = [];
  /** Bytes usable from each base. */
  readonly lens: number[] = [];
  /** What the namespace holds, as far as this rig wrote it (zero elsewhere). */
  readonly shadow: Uint8Array;
  /** Largest transfer one NVMe command carried in the probe (Infinity: never split). */
  maxIoBytes = Infinity;
  readonly #iov: UserBuffer;
  #mapped = false;
  #mapCounts: Record<CounterName, number> | undefined;

  /**
   * Open the namespace and set up buffers of `lens[i]` bytes whose registered
   * base starts `leads[i]` bytes into their page-aligned memory.
   */
  constructor(tb: Testbed, cfg: CaseConfig, nsBytes: number, lens: number[], leads: number[]) {
    this.tb = tb;
    this.cfg = cfg;
    this.shadow = new Uint8Array(nsBytes);
    const dev = tb.nvmeDevice;
    assert.ok(dev !== undefined, `${this.label()}: no NVMe namespace`);
    this.fd = tb.open(dev, O.RDWR | O.DIRECT);
    assert.ok(this.fd >= 0, `${this.label()}: open ${dev} O_DIRECT: ${this.fd}`);
    this.ring = tb.ring({ entries: 16 });
    this.#iov = tb.allocBuffer(PAGE);
    lens.forEach((len, i) => {
      const m = tb.allocBuffer(len + leads[i]);
      this.mem.push(m);
      this.base.push(m.addr + BigInt(leads[i]));
      this.lens.push(len);
    });
    this.#ok(this.ring.registerFiles([this.fd]), "IORING_REGISTER_FILES");
    if (cfg.path !== "none") {
      const bufs = this.base.map((addr, i) => ({ addr, len: this.lens[i] }));
      this.#ok(this.ring.registerBuffers(bufs), "IORING_REGISTER_BUFFERS");
    }
    if (cfg.path === "dma") {
      const before = this.snapshot();
      this.#ok(this.ring.mapBuffers(0, 0, lens.length), "IORING_REGISTER_MAP_BUFFERS");
      this.#mapCounts = this.since(before);
      this.#mapped = true;
    }
  }

  /** backend, IOMMU mode, path, LBA size and seed: the prefix of every message. */
  label(): string {
    const c = this.cfg;
    return `${this.tb.backend} iommu=${c.iommu} path=${c.path} lba=${c.lbaSize} seed=${c.seed}`;
  }

  /** The label plus one I/O's direction, size, buffer offset and namespace position. */
  ioLabel(s: IoSpec): string {
    const iov = s.iovecs ? ` iovecs=${s.iovecs}` : "";
    return `${this.label()} ${s.dir} len=${s.len} off=${s.off} buf=${s.buf} pos=${s.pos}${iov}`;
  }

  #ok(r: { res: number; ok: boolean; errno: string | null }, what: string): void {
    assert.ok(r.ok, `${this.label()}: ${what}: ${r.res} (${r.errno})`);
  }

  /** The bytes of buffer `buf` from its registered base. */
  bytes(buf: number): Uint8Array {
    const lead = Number(this.base[buf] - this.mem[buf].addr);
    return this.mem[buf].bytes.subarray(lead, lead + this.lens[buf]);
  }

  /** The address of byte `off` of buffer `buf`. */
  addr(buf: number, off: number): bigint {
    return this.base[buf] + BigInt(off);
  }

  /** The in-page offset of byte `off` of buffer `buf`. */
  inPage(buf: number, off: number): number {
    return Number(this.addr(buf, off) & BigInt(PAGE - 1));
  }

  /** Queue one I/O of the rig's path; userData is its index in a batch. */
  #prep(s: IoSpec, userData: bigint): void {
    const o = { userData, flags: IOSQE.FIXED_FILE };
    const addr = this.addr(s.buf, s.off);
    const at = BigInt(s.pos);
    let queued: boolean;
    if (this.cfg.path === "none" && s.iovecs) {
      const pieces = iovecPieces(this, s).map((p) => ({
        addr: this.addr(s.buf, p.off),
        len: p.len,
      }));
      const slot = Number(userData) * 16 * 4;
      const arr = this.#iov.bytes.subarray(slot, slot + 16 * pieces.length);
      arr.set(encodeIovecs(pieces));
      const iovAddr = this.#iov.addr + BigInt(slot);
      const plain = { userData }; // the descriptor itself, not fixed file 0
      queued = s.dir === "read"
        ? this.ring.readv(this.fd, iovAddr, pieces.length, at, plain)
        : this.ring.writev(this.fd, iovAddr, pieces.length, at, plain);
    } else if (this.cfg.path === "none") {
      queued = s.dir === "read"
        ? this.ring.read(0, addr, s.len, at, o)
        : this.ring.write(0, addr, s.len, at, o);
    } else {
      queued = s.dir === "read"
        ? this.ring.readFixed(0, addr, s.len, at, s.buf, o)
        : this.ring.writeFixed(0, addr, s.len, at, s.buf, o);
    }
    assert.ok(queued, `${this.ioLabel(s)}: SQ full`);
  }

  /**
   * Run a batch of I/Os together (queue depth = batch length) and return each
   * CQE in batch order. Writes take the buffer's current bytes; their shadow
   * is updated on success. Callers keep the batch's ranges disjoint.
   */
  run(batch: IoSpec[]): Completion[] {
    assert.ok(batch.length > 0 && batch.length <= 16);
    batch.forEach((s, i) => this.#prep(s, BigInt(i)));
    const cqes = this.ring.submitAndReap(batch.length);
    const out: Completion[] = new Array(batch.length);
    for (const c of cqes) {
      const i = Number(c.userData);
      assert.ok(i >= 0 && i < batch.length && !out[i], `${this.label()}: stray CQE ${c.userData}`);
      out[i] = c;
    }
    batch.forEach((s, i) => {
      if (s.dir === "write" && out[i].res === s.len) {
        this.shadow.set(this.bytes(s.buf).subarray(s.off, s.off + s.len), s.pos);
      }
    });
    return out;
  }

  /** Counters now, or undefined where the testbed exposes none. */
  snapshot(): StatsSnapshot | undefined {
    return this.tb.stats?.snapshot();
  }

  /** Counter differences since `before` (undefined where there are no counters). */
  since(before: StatsSnapshot | undefined): Record<CounterName, number> | undefined {
    const now = this.tb.stats?.snapshot();
    return before && now ? Stats.diff(before, now).counters : undefined;
  }

  /**
   * Check the namespace's MDTS the only way an application can: issue one
   * read of `len` bytes at position 0 and count the NVMe commands it took.
   * Sets {@link Rig.maxIoBytes}; also warms the path (the PRP pool's first page).
   */
  probeMaxIo(len: number): void {
    const s: IoSpec = { dir: "read", buf: 0, off: 0, len, pos: 0 };
    const before = this.snapshot();
    const [c] = this.run([s]);
    assert.equal(c.res, len, `${this.ioLabel(s)}: probe res`);
    const d = this.since(before);
    if (!d) return;
    assert.ok(d.nvmeCommands >= 1, `${this.ioLabel(s)}: probe sent no NVMe command`);
    if (d.nvmeCommands > 1) {
      this.maxIoBytes = len / d.nvmeCommands;
      assert.ok(
        Number.isInteger(this.maxIoBytes / PAGE),
        `${this.ioLabel(s)}: ${d.nvmeCommands} commands for ${len} bytes: not an even split`,
      );
    }
  }

  /** Write `s` (random bytes from `rng`) and check its CQE; returns the counts if measured. */
  write(s: IoSpec, rng: Prng): Record<CounterName, number> | undefined {
    rng.fill(this.bytes(s.buf).subarray(s.off, s.off + s.len));
    const before = this.snapshot();
    const [c] = this.run([s]);
    const d = this.since(before);
    assert.equal(c.res, s.len, `${this.ioLabel(s)}: CQE res ${c.res} (${c.errno})`);
    return d;
  }

  /** Read `s` into canaried memory and check every byte; returns the counts if measured. */
  read(s: IoSpec): Record<CounterName, number> | undefined {
    const restore = this.canary(s);
    const before = this.snapshot();
    const [c] = this.run([s]);
    const d = this.since(before);
    assert.equal(c.res, s.len, `${this.ioLabel(s)}: CQE res ${c.res} (${c.errno})`);
    this.checkRead(s, restore);
    return d;
  }

  /**
   * Fill every page the read touches with a canary; returns the pattern so
   * {@link Rig.checkRead} can see that only the read's bytes changed.
   */
  canary(s: IoSpec): { from: number; to: number; fill: number } {
    const b = this.bytes(s.buf);
    const lead = this.inPage(s.buf, 0);
    const from = Math.max(0, Math.floor((s.off + lead) / PAGE) * PAGE - lead);
    const to = Math.min(b.length, Math.ceil((s.off + s.len + lead) / PAGE) * PAGE - lead);
    const fill = 0xa5 ^ (s.pos & 0xff);
    b.fill(fill, from, to);
    return { from, to, fill };
  }

  /** Every byte of the read equals the shadow; every other byte of its pages kept the canary. */
  checkRead(s: IoSpec, c: { from: number; to: number; fill: number }): void {
    const b = this.bytes(s.buf);
    const want = this.shadow.subarray(s.pos, s.pos + s.len);
    const got = b.subarray(s.off, s.off + s.len);
    for (let i = 0; i < s.len; i++) {
      if (got[i] !== want[i]) {
        let n = 0;
        for (let j = i; j < s.len; j++) if (got[j] !== want[j]) n++;
        assert.fail(
          `${this.ioLabel(s)}: byte ${i} read ${got[i]}, want ${want[i]} (namespace byte ${
            s.pos + i
          }, ${n} bytes differ from there on)`,
        );
      }
    }
    for (let i = c.from; i < c.to; i++) {
      if ((i < s.off || i >= s.off + s.len) && b[i] !== c.fill) {
        assert.fail(
          `${this.ioLabel(s)}: buffer byte ${i}, outside the read, changed to ${b[i]}`,
        );
      }
    }
  }

  /**
   * Unmap (dma): every page MAP_BUFFERS mapped is unmapped, every IOMMU entry
   * it wrote cleared. Then check that nothing faulted. The ring and fd are
   * released on dispose.
   */
  finish(): void {
    if (this.#mapped) {
      const before = this.snapshot();
      this.#ok(this.ring.unmapBuffers(0, 0, this.mem.length), "IORING_REGISTER_UNMAP_BUFFERS");
      this.#mapped = false;
      const u = this.since(before);
      const m = this.#mapCounts;
      if (u && m) {
        const pages = this.lens.reduce(
          (a, len, i) => a + pagesTouched(this.inPage(i, 0), len),
          0,
        );
        assert.equal(m.dmaMapPageCalls, pages, `${this.label()}: MAP_BUFFERS mapped each page`);
        assert.equal(u.dmaUnmapPageCalls, pages, `${this.label()}: UNMAP_BUFFERS unmapped each`);
        assert.equal(u.iommuPteClears, m.iommuPteWrites, `${this.label()}: IOMMU entries cleared`);
      }
    }
    const st = this.tb.stats?.counters;
    if (st) {
      assert.equal(st.deviceErrors, 0, `${this.label()}: device errors`);
      assert.equal(st.iommuFaults, 0, `${this.label()}: IOMMU faults`);
    }
  }

  /** Release the ring, the buffers and the fd. */
  [Symbol.dispose](): void {
    this.ring[Symbol.dispose]();
    for (const m of this.mem) m[Symbol.dispose]();
    this.#iov[Symbol.dispose]();
    this.tb.close(this.fd);
  }
}

// ------------------------------------------------------------------ per-I/O counts

/** A byte range of a buffer: offset from its registered base and length. */
interface Range {
  off: number;
  len: number;
}

/**
 * The iovecs a READV/WRITEV of `s` carries: up to `s.iovecs` contiguous
 * pieces, each a multiple of the LBA size, cut on page boundaries where the
 * first piece can end on one (its in-page offset is a multiple of the LBA
 * size), else inside pages.
 */
export function iovecPieces(rig: Rig, s: IoSpec): Range[] {
  const lbs = rig.cfg.lbaSize;
  const k = Math.max(1, s.iovecs ?? 1);
  const lead = rig.inPage(s.buf, s.off);
  const pageCuts = lead % lbs === 0;
  const out: Range[] = [];
  let at = s.off;
  let left = s.len;
  for (let i = k; i > 0 && left > 0; i--) {
    let n = left;
    if (i > 1) {
      // About left / i along: on the next page boundary, or on a block boundary.
      if (pageCuts) {
        const end = rig.inPage(s.buf, at) + Math.max(1, Math.floor(left / i));
        n = Math.ceil(end / PAGE) * PAGE - rig.inPage(s.buf, at);
      } else n = Math.max(lbs, Math.floor(left / i / lbs) * lbs);
      if (n >= left) n = left;
    }
    out.push({ off: at, len: n });
    at += n;
    left -= n;
  }
  return out;
}

/** BIO_MAX_VECS: a bio built from user pages holds at most this many. */
const BIO_MAX_VECS = 256;

/**
 * The bios blkdev_direct_IO() builds for one I/O: a registered buffer (bvec
 * or dma tag) is one bio; user pages go into bios of at most BIO_MAX_VECS
 * pages, each trimmed to the logical block size.
 */
function dioBios(rig: Rig, s: IoSpec): Range[] {
  const bios: Range[] = [];
  if (rig.cfg.path === "none") {
    assert.ok(
      !s.iovecs || s.len <= 256 * 1024,
      `${rig.ioLabel(s)}: the count model takes several iovecs only up to 256 KiB`,
    );
    for (let at = s.off, left = s.len; left > 0;) {
      const room = BIO_MAX_VECS * PAGE - rig.inPage(s.buf, at);
      const n = Math.min(left, room - (room % rig.cfg.lbaSize));
      bios.push({ off: at, len: n });
      at += n;
      left -= n;
    }
  } else bios.push({ off: s.off, len: s.len });
  return bios;
}

/** How the block layer cuts one I/O into NVMe commands: each bio into pieces of at most `maxIo` bytes. */
function commands(rig: Rig, s: IoSpec): Range[] {
  const out: Range[] = [];
  for (const b of dioBios(rig, s)) {
    for (let done = 0; done < b.len; done += rig.maxIoBytes) {
      out.push({ off: b.off + done, len: Math.min(rig.maxIoBytes, b.len - done) });
    }
  }
  return out;
}

/**
 * biovec slab arrays a `none` I/O's bios take: a bio gets bio_vecs for the
 * pages left in the iterator when it is allocated (iov_iter_npages, a page
 * two iovecs share counted twice, at most BIO_MAX_VECS), inline up to 4.
 */
function bvecArrays(rig: Rig, s: IoSpec): number {
  if (rig.cfg.path !== "none") return 0;
  const bios = dioBios(rig, s);
  if (bios.length === 1) return pinned(rig, s) > 4 ? 1 : 0;
  const end = s.off + s.len;
  return bios.filter((b) => pagesTouched(rig.inPage(s.buf, b.off), end - b.off) > 4).length;
}

/** PRP list entries a command needs after PRP1 (0: PRP2 unused or a data page). */
function listEntries(inPage: number, len: number): number {
  const rest = len - (PAGE - inPage);
  return rest > PAGE ? Math.ceil(rest / PAGE) : 0;
}

/** Pool blocks a PRP list of `n` entries takes: one block, or pages chained through the last slot. */
function listBlocks(n: number): number {
  if (n === 0) return 0;
  if (n <= SMALL_POOL_PRPS) return 1;
  return Math.max(1, Math.ceil((n - 1) / (PRPS_PER_PAGE - 1)));
}

/** Pages of the 4 KiB grid a range touches. */
function pagesTouched(inPage: number, len: number): number {
  return Math.ceil((inPage + len) / PAGE);
}

/** Pages a `none` I/O pins: those each iovec touches (a page two iovecs share, twice). */
function pinned(rig: Rig, s: IoSpec): number {
  return iovecPieces(rig, s).reduce(
    (a, p) => a + pagesTouched(rig.inPage(s.buf, p.off), p.len),
    0,
  );
}

/**
 * The exact counts one I/O must add at queue depth 1 with a warm PRP pool:
 * what tells the three paths apart. `dma` builds no scatterlist, maps nothing,
 * writes no IOMMU entry and pins nothing; it copies PRPs into a pool list only
 * when its entries straddle a page of the premapped flat array. `bvec` and
 * `none` map every page they touch, one IOMMU PTE each when translated, and
 * `none` pins them too.
 */
export function expectCounts(rig: Rig, s: IoSpec): Partial<Record<CounterName, number>> {
  const { path, iommu } = rig.cfg;
  const cs = commands(rig, s);
  const pages = cs.map((c) => pagesTouched(rig.inPage(s.buf, c.off), c.len));
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  const e: Partial<Record<CounterName, number>> = {
    sqesConsumed: 1,
    cqesPosted: 1,
    requests: cs.length,
    nvmeCommands: cs.length,
    // Each command's bio was allocated: the I/O's own bios, then one per split.
    bioAllocs: cs.length,
    bvecAllocs: bvecArrays(rig, s),
    deviceErrors: 0,
    iommuFaults: 0,
  };
  const translated = iommu === "lazy" || iommu === "strict";
  if (path === "dma") {
    Object.assign(e, {
      pagesPinned: 0,
      bioVecs: 0,
      sgEntries: 0,
      dmaMapSgCalls: 0,
      dmaUnmapSgCalls: 0,
      dmaMapPageCalls: 0,
      dmaUnmapPageCalls: 0,
      iovaAllocs: 0,
      iovaFrees: 0,
      iommuPteWrites: 0,
      iommuPteClears: 0,
      iotlbInvalidations: 0,
    });
    // The flat array: entry k at byte 8k. PRP2 points into it when the list's entries lie
    // in one of its pages by the posted test (start >> 12 == end >> 12, end exclusive: a
    // list ending exactly on a page's last slot is copied); otherwise into a pool list.
    const lead = rig.inPage(s.buf, 0);
    let copied = 0;
    let blocks = 0;
    let copies = 0;
    for (const c of cs) {
      const at = lead + c.off;
      const n = listEntries(at % PAGE, c.len);
      const first = Math.floor(at / PAGE) + 1;
      if (n > 0 && (first % PRPS_PER_PAGE) + n >= PRPS_PER_PAGE) {
        copied += n;
        blocks += listBlocks(n);
        copies++;
      }
    }
    e.prpEntries = copied;
    e.prpPoolAllocs = blocks;
    e.prpPoolFrees = blocks;
    // The copy path takes an iod_mempool element (PATCHv2's nvme_premapped, v3's _slow).
    e.iodMempoolAllocs = copies;
    if (iommu === "bounce") {
      e.dmaSyncs = sum(pages);
      e.bounceBytes = s.len;
    }
    return e;
  }
  const entries = cs.map((c) => listEntries(rig.inPage(s.buf, c.off), c.len));
  Object.assign(e, {
    pagesPinned: path === "none" ? pinned(rig, s) : 0,
    pagesUnpinned: path === "none" ? pinned(rig, s) : 0,
    prpEntries: sum(entries),
    prpPoolAllocs: sum(entries.map(listBlocks)),
    prpPoolFrees: sum(entries.map(listBlocks)),
    // Frames are scattered, so a command is one segment only within one page
    // (nvme_setup_prp_simple); every other takes the iod_mempool element.
    iodMempoolAllocs: pages.filter((n) => n > 1).length,
  });
  if (translated) {
    e.iommuPteWrites = sum(pages);
    e.iommuPteClears = sum(pages);
    e.iovaAllocs = cs.length;
  } else {
    e.iommuPteWrites = 0;
    e.iommuPteClears = 0;
    e.iovaAllocs = 0;
  }
  if (iommu === "strict") e.iotlbInvalidations = cs.length;
  return e;
}

/**
 * Check one measured I/O's counts (where the testbed has counters): the
 * exact table of {@link expectCounts}, and that each command mapped its data
 * once (a scatterlist, or one page on the single-segment fast path) with no
 * more scatterlist entries than pages.
 */
export function checkCounts(
  rig: Rig,
  s: IoSpec,
  d: Record<CounterName, number> | undefined,
): void {
  if (!d) return;
  // Iovecs that meet inside a page go into one bio_vec (__bio_try_merge_page), so the bio
  // has no gap at the cut and is cut into commands as a single range would be.
  const want = expectCounts(rig, s);
  const got: Partial<Record<CounterName, number>> = {};
  for (const k of Object.keys(want) as CounterName[]) got[k] = d[k];
  assert.deepEqual(got, want, `${rig.ioLabel(s)}: per-I/O counts`);
  if (rig.cfg.path !== "dma") {
    const cs = commands(rig, s);
    const pages = cs.map((c) => pagesTouched(rig.inPage(s.buf, c.off), c.len));
    assert.equal(
      d.dmaMapSgCalls + d.dmaMapPageCalls,
      cs.length,
      `${rig.ioLabel(s)}: one DMA mapping per command`,
    );
    assert.ok(
      d.sgEntries <= pages.reduce((a, b) => a + b, 0),
      `${rig.ioLabel(s)}: ${d.sgEntries} scatterlist entries for ${
        pages.reduce((a, b) => a + b, 0)
      } pages`,
    );
  }
}

// ------------------------------------------------------------------ case 1: random

/** Offsets in a buffer an I/O of this path may start at: what O_DIRECT accepts there. */
function offsetStep(cfg: CaseConfig): number {
  // A registered buffer is cut into one bvec per page, and each piece must be a multiple of
  // the logical block size; a user address need only be dword aligned, as a dma tag's offset.
  return cfg.path === "bvec" ? cfg.lbaSize : DMA_ALIGN;
}

/** Sizes every run covers before its random ones. */
function fixedSizes(lbaSize: number): number[] {
  const all = [
    512,
    1024,
    3584,
    4096,
    4608,
    8192,
    12288,
    16384,
    65536,
    126976,
    131072,
    135168,
    200704,
    262144,
  ];
  return all.filter((n) => n % lbaSize === 0);
}

/** The buffer range of whole pages an I/O touches, as [offset, length]. */
function pageSpan(rig: Rig, s: IoSpec): [number, number] {
  const from = s.off - rig.inPage(s.buf, s.off);
  return [from, pagesTouched(rig.inPage(s.buf, s.off), s.len) * PAGE];
}

/** Ranges [a, a+n) and [b, b+m) overlap. */
function overlaps(a: number, n: number, b: number, m: number): boolean {
  return a < b + m && b < a + n;
}

/** Options of {@link randomWritesThenReads}. */
export interface RandomOptions {
  /** Namespace bytes the case may touch (from position 0). */
  nsBytes: number;
  /** Writes, then as many reads. */
  ios: number;
  /** Largest queue depth of a batch. */
  maxQd: number;
}

/**
 * Random writes then reads of one logical block up to 256 KiB, at random
 * in-buffer offsets (those O_DIRECT allows on the path, dword upwards) and
 * random positions, in batches of queue depth 1 to `maxQd`; the fixed sizes
 * first. Each batch of one is measured against {@link expectCounts}.
 */
export function randomWritesThenReads(tb: Testbed, cfg: CaseConfig, o: RandomOptions): void {
  const BUF = 512 * 1024;
  const rng = new Prng(cfg.seed);
  using rig = new Rig(tb, cfg, o.nsBytes, [BUF, BUF], [0, 0]);
  rig.probeMaxIo(BUF);
  const lbs = cfg.lbaSize;
  const step = offsetStep(cfg);
  const sizes = fixedSizes(lbs);
  const maxLen = 256 * 1024;
  const written: IoSpec[] = [];
  const pickOff = (i: number, len: number) => {
    const hi = Math.floor((BUF - len) / step) * step;
    switch (i % 4) {
      case 0:
        return 0;
      case 1: // the last dword (or block) of a page: PRP1 carries almost nothing
        return Math.min(hi, PAGE - step);
      default:
        return rng.step(0, hi, step);
    }
  };
  const pickPos = (len: number) => rng.step(0, o.nsBytes - len, lbs);
  const pickBatch = (n: number, make: (i: number) => IoSpec): IoSpec[] => {
    const batch: IoSpec[] = [];
    for (let i = 0; i < n; i++) {
      for (let tries = 0; tries < 8; tries++) {
        const s = make(i);
        // Disjoint on the namespace, and in whole pages of the buffer (a read's canary
        // covers the pages it touches).
        const clash = batch.some((b) =>
          overlaps(b.pos, b.len, s.pos, s.len) ||
          (b.buf === s.buf && overlaps(...pageSpan(rig, b), ...pageSpan(rig, s)))
        );
        if (!clash) {
          batch.push(s);
          break;
        }
      }
    }
    return batch;
  };
  const iovecs = (i: number) => (cfg.path === "none" && i % 3 === 2 ? 1 + (i % 4) : 0);

  // Writes.
  for (let i = 0; i < o.ios;) {
    const qd = i < sizes.length ? 1 : 1 + rng.int(o.maxQd);
    const batch = pickBatch(Math.min(qd, o.ios - i), (k) => {
      const n = i + k;
      const len = n < sizes.length ? sizes[n] : rng.step(lbs, maxLen, lbs);
      return {
        dir: "write",
        buf: 0,
        off: pickOff(n, len),
        len,
        pos: pickPos(len),
        iovecs: iovecs(n),
      };
    });
    for (const s of batch) rng.fill(rig.bytes(s.buf).subarray(s.off, s.off + s.len));
    const before = rig.snapshot();
    const cqes = rig.run(batch);
    const d = rig.since(before);
    batch.forEach((s, k) => {
      assert.equal(cqes[k].res, s.len, `${rig.ioLabel(s)}: CQE res ${cqes[k].res}`);
      written.push(s);
    });
    if (batch.length === 1) checkCounts(rig, batch[0], d);
    else checkBatchInvariants(rig, batch, d);
    i += batch.length;
  }

  // Reads: half of them exactly what a write wrote, half anywhere.
  for (let i = 0; i < o.ios;) {
    const qd = i < sizes.length ? 1 : 1 + rng.int(o.maxQd);
    const batch = pickBatch(Math.min(qd, o.ios - i), (k) => {
      const n = i + k;
      const w = written[rng.int(written.length)];
      const len = n < sizes.length ? sizes[n] : n % 2 ? w.len : rng.step(lbs, maxLen, lbs);
      const pos = n >= sizes.length && n % 2 ? w.pos : pickPos(len);
      return { dir: "read", buf: 1, off: pickOff(n + 1, len), len, pos, iovecs: iovecs(n) };
    });
    const canaries = batch.map((s) => rig.canary(s));
    const before = rig.snapshot();
    const cqes = rig.run(batch);
    const d = rig.since(before);
    batch.forEach((s, k) => {
      assert.equal(cqes[k].res, s.len, `${rig.ioLabel(s)}: CQE res ${cqes[k].res}`);
      rig.checkRead(s, canaries[k]);
    });
    if (batch.length === 1) checkCounts(rig, batch[0], d);
    else checkBatchInvariants(rig, batch, d);
    i += batch.length;
  }
  rig.finish();
}

/** What holds for a batch whatever the pool did: `dma` maps and pins nothing, `none` pins each page. */
function checkBatchInvariants(
  rig: Rig,
  batch: IoSpec[],
  d: Record<CounterName, number> | undefined,
): void {
  if (!d) return;
  const what = `${rig.label()} batch of ${batch.length} (${
    batch.map((s) => `${s.dir} len=${s.len} off=${s.off} pos=${s.pos}`).join(", ")
  })`;
  assert.equal(d.sqesConsumed, batch.length, `${what}: SQEs`);
  assert.equal(d.cqesPosted, batch.length, `${what}: CQEs`);
  assert.equal(d.deviceErrors, 0, `${what}: device errors`);
  if (rig.cfg.path === "dma") {
    for (
      const k of [
        "pagesPinned",
        "sgEntries",
        "dmaMapSgCalls",
        "dmaMapPageCalls",
        "iovaAllocs",
      ] as const
    ) {
      assert.equal(d[k], 0, `${what}: ${k}`);
    }
  }
  if (rig.cfg.path === "none") {
    const pages = batch.reduce((a, s) => a + pinned(rig, s), 0);
    assert.equal(d.pagesPinned, pages, `${what}: pages pinned`);
  }
}

// ------------------------------------------------------------------ case 2: PRP boundaries

/** A named transfer layout: buffer, offset from its registered base, length. */
export interface BoundarySpec {
  /** What the layout exercises. */
  name: string;
  /** 0: base page aligned; 1: base 512 bytes into its page (premapped first offset 512). */
  buf: 0 | 1;
  /** Offset from the registered base. */
  off: number;
  /** Bytes. */
  len: number;
}

const P = PAGE;
const KIB = 1024;

/**
 * The PRP layouts through the API, on a 512-byte-LBA namespace. Buffer 0's
 * flat premap array has an entry per page at byte 8 x index, so entries 0..511
 * fill its first page: an I/O starting at page `i` uses PRP1 = entry i and
 * list entries i+1...
 */
export const BOUNDARY_SPECS: readonly BoundarySpec[] = [
  { name: "PRP1 only: one whole page", buf: 0, off: 0, len: P },
  { name: "PRP1 only: in-page offset", buf: 0, off: 1024, len: 2048 },
  { name: "PRP1 only: the last block of a page", buf: 0, off: P - 512, len: 512 },
  { name: "PRP1 only: dword offset", buf: 0, off: 4, len: 3584 },
  { name: "PRP1+PRP2: two whole pages", buf: 0, off: 0, len: 2 * P },
  { name: "PRP1+PRP2: offset, one page long", buf: 0, off: 512, len: P },
  { name: "PRP1+PRP2: last block of a page, then a page", buf: 0, off: P - 512, len: P + 512 },
  { name: "PRP1+PRP2: dword offset", buf: 0, off: 4, len: P },
  { name: "PRP list: two entries", buf: 0, off: 0, len: 3 * P },
  { name: "PRP list: offset first page", buf: 0, off: 512, len: 2 * P },
  { name: "PRP list: dword offset", buf: 0, off: P + 4, len: 16 * KIB },
  { name: "PRP list: 31 entries (128 KiB)", buf: 0, off: 0, len: 128 * KIB },
  { name: "PRP list: 32 entries, a full 256-byte pool block", buf: 0, off: 512, len: 128 * KIB },
  { name: "two commands (256 KiB at an offset)", buf: 0, off: 512, len: 256 * KIB },
  {
    name: "more than 512 pages: a chained PRP list if MDTS allows it",
    buf: 0,
    off: 512,
    len: 2048 * KIB + 4 * KIB,
  },
  // The premapped flat array's page boundary (entries 511 | 512).
  // The posted in-place test copies this one (its end is the next page's first byte).
  { name: "flat array: list ends exactly on its page", buf: 0, off: 480 * P, len: 128 * KIB },
  { name: "flat array: list straddles its page", buf: 0, off: 481 * P, len: 128 * KIB },
  {
    name: "flat array: list straddles, in-page offset",
    buf: 0,
    off: 480 * P + 512,
    len: 128 * KIB,
  },
  { name: "flat array: two entries straddle", buf: 0, off: 510 * P, len: 3 * P },
  { name: "flat array: list starts its next page", buf: 0, off: 511 * P, len: 3 * P },
  { name: "flat array: PRP2 is the next page's first entry", buf: 0, off: 511 * P, len: 2 * P },
  {
    name: "flat array, first offset 512: list ends exactly on its page",
    buf: 1,
    off: 480 * P - 512,
    len: 128 * KIB,
  },
  {
    name: "flat array, first offset 512: list straddles",
    buf: 1,
    off: 481 * P - 512,
    len: 128 * KIB,
  },
  {
    name: "flat array, first offset 512: list straddles, dword offset",
    buf: 1,
    off: 480 * P - 508,
    len: 128 * KIB,
  },
];

/** Whether O_DIRECT on this path accepts the layout (else the CQE must be -EINVAL). */
function acceptedOn(rig: Rig, s: IoSpec): boolean {
  if (rig.cfg.path !== "bvec") return true;
  // bvec: every page piece of the range must be a multiple of the logical block size.
  // bvec: the range is cut into one piece per page, each of which must start dword aligned
  // and be a multiple of the logical block size (iov_iter_is_aligned()).
  const lead = rig.inPage(s.buf, s.off);
  const firstPiece = Math.min(PAGE - lead, s.len);
  return lead % DMA_ALIGN === 0 && firstPiece % rig.cfg.lbaSize === 0;
}

/**
 * Each layout of {@link BOUNDARY_SPECS}, both ways against a plain layout (a
 * third, page-aligned buffer at offset 0), so that an address bug a write and
 * a read through the same layout would undo is seen: write random bytes with
 * the layout and read them back plainly, then write plainly and read with the
 * layout into canaried memory. Every byte is checked, and (where there are
 * counters) each I/O's exact counts. A layout the path cannot take (a dword
 * offset in a registered buffer, cut into pieces that are not whole blocks)
 * must fail with exactly -EINVAL. The layouts are written once unmeasured
 * first, so the PRP pool is warm.
 */
export function prpBoundaries(tb: Testbed, cfg: CaseConfig): void {
  const rng = new Prng(cfg.seed);
  const BIG = 2 * 1024 * KIB + 128 * KIB; // 544 pages: a flat array over two pages
  const PLAIN = 2;
  const slot = 2560 * KIB; // namespace room per layout
  const nsBytes = slot * BOUNDARY_SPECS.length;
  using rig = new Rig(tb, cfg, nsBytes, [BIG, BIG, BIG], [0, 512, 0]);
  rig.probeMaxIo(BIG);
  const ios = BOUNDARY_SPECS.map((b, i): IoSpec => ({
    dir: "write",
    buf: b.buf,
    off: b.off,
    len: b.len,
    pos: i * slot,
  }));
  for (const [i, s] of ios.entries()) {
    const label = `${rig.ioLabel(s)} [${BOUNDARY_SPECS[i].name}]`;
    assert.ok(s.off + s.len <= rig.lens[s.buf], `${label}: layout outside the buffer`);
    if (!acceptedOn(rig, s)) {
      const [c] = rig.run([s]);
      assert.equal(c.res, -Errno.EINVAL, `${label}: misaligned for this path: want -EINVAL`);
      continue;
    }
    rng.fill(rig.bytes(s.buf).subarray(s.off, s.off + s.len));
    const [c] = rig.run([s]); // warm-up
    assert.equal(c.res, s.len, `${label}: warm-up write res ${c.res} (${c.errno})`);
  }
  for (const [i, w] of ios.entries()) {
    if (!acceptedOn(rig, w)) continue;
    const name = BOUNDARY_SPECS[i].name;
    const plain = { ...w, buf: PLAIN, off: 0 };
    try {
      checkCounts(rig, w, rig.write(w, rng));
      checkCounts(rig, { ...plain, dir: "read" }, rig.read({ ...plain, dir: "read" }));
      checkCounts(rig, plain, rig.write(plain, rng));
      checkCounts(rig, { ...w, dir: "read" }, rig.read({ ...w, dir: "read" }));
    } catch (e) {
      if (e instanceof Error) {
        e.message = `[${name}: layout buf=${w.buf} off=${w.off} len=${w.len}] ${e.message}`;
      }
      throw e;
    }
  }
  rig.finish();
}
