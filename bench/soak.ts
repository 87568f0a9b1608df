/**
 * The integrity campaign: mixed reads and writes through all three buffer
 * paths (`none`, `bvec`, `dma`), sizes from one logical block to 1 MiB, at
 * in-buffer offsets, on 512- and 4096-byte-LBA namespaces, under every
 * IOMMU mode and every premap variant, with every byte checked against a
 * shadow copy of the namespace and a full re-read at the end of each
 * segment.
 *
 * A range whose write failed is unknown until written again; a failed read
 * verifies nothing. Mismatches are counted per segment. The posted variants
 * (`v2`, `v3`) corrupt data under bounce buffering by design (their sync
 * loops, README "The three variants"): those mismatches are reported as the
 * posted code's, and only mismatches anywhere else fail the run (exit 1).
 *
 *   deno task soak -- --ios=100000 --seed=1 --backend=sim
 *
 * @module
 */

import { parseArgs } from "node:util";
import { openTestbed, PREMAP_VARIANTS, type PremapVariant, realNvmeUnavailable } from "../mod.ts";
import { Rng } from "../sim/random.ts";
import { O } from "../sim/uapi/io_uring.ts";
import { IOSQE, type UserBuffer } from "../sim/uapi/ring_api.ts";
import { errnoName } from "../sim/uapi/errno.ts";
import { IOMMU_MODES, type IommuMode } from "../sim/dma/types.ts";
import { parseList, UsageError } from "./cli.ts";
import { Buffer } from "node:buffer";

/** Largest I/O. */
export const SOAK_MAX_IO = 1 << 20;
/** Registered buffers per segment: two premapped (dma), two not (bvec). */
const FIXED_BUFS = 4;
/** Each buffer holds the largest I/O plus room for an in-buffer offset. */
const BUF_BYTES = SOAK_MAX_IO + 4096;
/** Namespace size of a segment. */
const NS_BYTES = 64 << 20;
/** Random bytes that writes copy from (at a random offset). */
const POOL_BYTES = 4 << 20;

/** Options of one campaign. */
export interface SoakOptions {
  /** Backend. */
  backend: "sim" | "real";
  /** Total I/Os, spread over the segments. */
  ios: number;
  /** Seed. */
  seed: number;
  /** IOMMU modes. */
  iommu: readonly IommuMode[];
  /** Premap variants. */
  premap: readonly PremapVariant[];
  /** LBA formats. */
  lba: readonly (512 | 4096)[];
  /** I/Os in flight at once (at most 8: one per buffer slot). */
  qd: number;
}

/** What one segment (one testbed configuration) did. */
export interface SoakSegment {
  /** IOMMU mode. */
  iommu: IommuMode;
  /** Premap variant. */
  premap: PremapVariant;
  /** LBA size. */
  lba: number;
  /** I/Os completed (not counting the final re-read). */
  ios: number;
  /** Bytes moved by successful I/O. */
  bytes: number;
  /** Seconds of wall time. */
  seconds: number;
  /** I/Os by path. */
  byPath: Record<"none" | "bvec" | "dma", number>;
  /** Failed completions by errno name. */
  errors: Record<string, number>;
  /** Bytes read that differ from the shadow (in-run reads and the final re-read). */
  mismatchedBytes: number;
  /** Reads with at least one mismatched byte. */
  mismatchedReads: number;
  /** The first mismatches, for a report. */
  firstMismatches: string[];
  /** LBAs left unknown at the end (a failed write). */
  unknownLbas: number;
  /** The host's checking layers over the segment. */
  checks: {
    dmaDebugErrors: number;
    deviceUnmappedBytes: number;
    kasanReports: number;
    swiotlbWarnings: number;
    requestsHung: number;
    nvmeResets: number;
  };
  /** Mismatches the posted code is expected to cause here (v2/v3 under bounce). */
  postedFlaw: boolean;
}

interface Slot {
  buf: UserBuffer;
  fixed: number; // buffer index, or -1 for the none path
  path: "none" | "bvec" | "dma";
  busy: boolean;
  write: boolean;
  off: number; // namespace byte offset
  len: number;
  bufOff: number;
}

/** Run one segment. */
export function soakSegment(
  o: SoakOptions,
  iommu: IommuMode,
  premap: PremapVariant,
  lba: 512 | 4096,
  ios: number,
  seed: number,
): SoakSegment {
  using tb = openTestbed({
    backend: o.backend,
    seed,
    iommu,
    premap,
    namespaces: [{ lbaSize: lba, sizeBytes: BigInt(NS_BYTES) }],
    timing: false,
    ...(o.backend === "real" ? { mediaInMemory: true } : {}),
  });
  if (!tb.nvmeDevice) throw new Error(`${o.backend}: no emulated NVMe namespace`);
  const rng = new Rng(seed);
  const ring = tb.ring({ entries: 32 });
  const fd = tb.open(tb.nvmeDevice, O.RDWR | O.DIRECT);
  if (fd < 0) throw new Error(`open ${tb.nvmeDevice}: ${errnoName(fd)}`);
  try {
    must(ring.registerFiles([fd]), "IORING_REGISTER_FILES");
    const fixed = Array.from({ length: FIXED_BUFS }, () => tb.allocBuffer(BUF_BYTES));
    const plain = Array.from({ length: FIXED_BUFS }, () => tb.allocBuffer(BUF_BYTES));
    must(
      ring.registerBuffers(fixed.map((b) => ({ addr: b.addr, len: BUF_BYTES }))),
      "REGISTER_BUFFERS",
    );
    must(ring.mapBuffers(0, 0, FIXED_BUFS / 2), "IORING_REGISTER_MAP_BUFFERS");
    const slots: Slot[] = [
      ...fixed.map((buf, i): Slot => ({
        buf,
        fixed: i,
        path: i < FIXED_BUFS / 2 ? "dma" : "bvec",
        busy: false,
        write: false,
        off: 0,
        len: 0,
        bufOff: 0,
      })),
      ...plain.map((buf): Slot => ({
        buf,
        fixed: -1,
        path: "none",
        busy: false,
        write: false,
        off: 0,
        len: 0,
        bufOff: 0,
      })),
    ];
    const pool = new Uint8Array(POOL_BYTES);
    rng.fill(pool);
    const shadow = new Uint8Array(NS_BYTES);
    const known = new Uint8Array(NS_BYTES / lba).fill(1); // a new namespace reads zeros
    const seg: SoakSegment = {
      iommu,
      premap,
      lba,
      ios: 0,
      bytes: 0,
      seconds: 0,
      byPath: { none: 0, bvec: 0, dma: 0 },
      errors: {},
      mismatchedBytes: 0,
      mismatchedReads: 0,
      firstMismatches: [],
      unknownLbas: 0,
      checks: {
        dmaDebugErrors: 0,
        deviceUnmappedBytes: 0,
        kasanReports: 0,
        swiotlbWarnings: 0,
        requestsHung: 0,
        nvmeResets: 0,
      },
      postedFlaw: premap !== "hardened" && iommu === "bounce",
    };
    const c0 = { ...(tb.stats?.counters ?? {}) } as Record<string, number>;
    const t0 = performance.now();
    const overlaps = (a: Slot, off: number, len: number) =>
      a.busy && off < a.off + a.len && a.off < off + len;
    // Mostly small, some large, up to 1 MiB: 60% 1..8 LBAs, 30% to 64 KiB, 9% to 256 KiB, 1% to 1 MiB.
    const pickLen = (): number => {
      const r = rng.int(100);
      const max = r < 60 ? 8 * lba : r < 90 ? 65536 : r < 99 ? 262144 : SOAK_MAX_IO;
      return (1 + rng.int(max / lba)) * lba;
    };
    const same = (a: Uint8Array, b: Uint8Array) =>
      Buffer.from(a.buffer, a.byteOffset, a.length).equals(
        Buffer.from(b.buffer, b.byteOffset, b.length),
      );
    const verify = (s: Slot, got: Uint8Array, off: number) => {
      let bad = 0;
      let first = -1;
      for (let i = 0; i < got.length;) {
        // A run of LBAs with known contents, compared natively; bytes counted only on a difference.
        if (!known[(off + i) / lba]) {
          i += lba;
          continue;
        }
        let j = i;
        while (j < got.length && known[(off + j) / lba]) j += lba;
        const a = got.subarray(i, j), b = shadow.subarray(off + i, off + j);
        if (!same(a, b)) {
          for (let k = 0; k < a.length; k++) {
            if (a[k] !== b[k]) {
              if (first < 0) first = i + k;
              bad++;
            }
          }
        }
        i = j;
      }
      if (bad) {
        seg.mismatchedBytes += bad;
        seg.mismatchedReads++;
        if (seg.firstMismatches.length < 3) {
          seg.firstMismatches.push(
            `${s.path} read of ${got.length} at ${off}: ${bad} bytes differ, first at +${first}`,
          );
        }
      }
    };
    let issued = 0;
    let done = 0;
    const qd = Math.min(o.qd, slots.length);
    let busy = 0;
    while (done < ios) {
      while (busy < qd && issued < ios) {
        const free = slots.filter((x) => !x.busy);
        const s = free[rng.int(free.length)];
        const len = pickLen();
        const blocks = NS_BYTES / lba;
        let off = rng.int(blocks - len / lba + 1) * lba;
        for (let tries = 0; slots.some((x) => overlaps(x, off, len)); tries++) {
          if (tries > 16) {
            off = -1;
            break;
          }
          off = rng.int(blocks - len / lba + 1) * lba;
        }
        if (off < 0) break;
        // In-buffer offsets as O_DIRECT allows them (6.0's bdev_iter_is_aligned): the user
        // address 4-byte aligned (dma_alignment 3) and every bio_vec a multiple of the LBA,
        // so a registered (bvec) buffer's offset is a multiple of the LBA within its page.
        const align = s.path === "bvec" ? (lba === 4096 ? 4096 : lba) : 4;
        const bufOff = rng.int(Math.floor((BUF_BYTES - len) / align) + 1) * align;
        s.write = rng.int(2) === 0;
        s.off = off;
        s.len = len;
        s.bufOff = bufOff;
        s.busy = true;
        if (s.write) {
          const from = rng.int(POOL_BYTES - len + 1);
          s.buf.bytes.set(pool.subarray(from, from + len), bufOff);
        } else {
          s.buf.bytes.fill(0xa5, bufOff, bufOff + len);
        }
        const addr = s.buf.addr + BigInt(bufOff);
        const ud = { userData: BigInt(slots.indexOf(s)), flags: IOSQE.FIXED_FILE };
        if (s.fixed >= 0) {
          if (s.write) ring.writeFixed(0, addr, len, BigInt(off), s.fixed, ud);
          else ring.readFixed(0, addr, len, BigInt(off), s.fixed, ud);
        } else if (s.write) ring.write(0, addr, len, BigInt(off), ud);
        else ring.read(0, addr, len, BigInt(off), ud);
        issued++;
        busy++;
      }
      must(ring.submit(0), "io_uring_enter");
      let w = ring.submit(1);
      while (w.errno === "EINTR") w = ring.submit(1);
      must(w, "io_uring_enter(wait)");
      for (const c of ring.reap()) {
        const s = slots[Number(c.userData)];
        s.busy = false;
        busy--;
        done++;
        seg.ios++;
        seg.byPath[s.path]++;
        const lbas = s.len / lba;
        const first = s.off / lba;
        if (c.res < 0) {
          const name = errnoName(c.res) ?? String(c.res);
          seg.errors[name] = (seg.errors[name] ?? 0) + 1;
          if (s.write) known.fill(0, first, first + lbas);
          continue;
        }
        const okLen = Math.min(c.res, s.len) - (Math.min(c.res, s.len) % lba);
        seg.bytes += okLen;
        if (s.write) {
          shadow.set(s.buf.bytes.subarray(s.bufOff, s.bufOff + okLen), s.off);
          known.fill(1, first, first + okLen / lba);
          known.fill(0, first + okLen / lba, first + lbas);
        } else {
          verify(s, s.buf.bytes.subarray(s.bufOff, s.bufOff + okLen), s.off);
        }
      }
    }
    // The full re-read, through the plain path, 1 MiB at a time.
    const rb = plain[0];
    for (let off = 0; off < NS_BYTES; off += SOAK_MAX_IO) {
      ring.read(0, rb.addr, SOAK_MAX_IO, BigInt(off), { userData: 999n, flags: IOSQE.FIXED_FILE });
      const [c] = ring.submitAndReap(1);
      if (c.res !== SOAK_MAX_IO) {
        const name = errnoName(c.res) ?? String(c.res);
        seg.errors[`re-read ${name}`] = (seg.errors[`re-read ${name}`] ?? 0) + 1;
        continue;
      }
      verify(slots[FIXED_BUFS], rb.bytes.subarray(0, SOAK_MAX_IO), off);
    }
    seg.seconds = (performance.now() - t0) / 1000;
    for (let i = 0; i < known.length; i++) if (!known[i]) seg.unknownLbas++;
    must(ring.unmapBuffers(0, 0, FIXED_BUFS), "IORING_REGISTER_UNMAP_BUFFERS");
    ring[Symbol.dispose]();
    const c1 = (tb.stats?.counters ?? {}) as Record<string, number>;
    const d = (k: string) => (c1[k] ?? 0) - (c0[k] ?? 0);
    seg.checks = {
      dmaDebugErrors: d("dmaDebugErrors"),
      deviceUnmappedBytes: d("dmaDebugDeviceUnmappedBytes"),
      kasanReports: d("kasanReports"),
      swiotlbWarnings: d("swiotlbWarnings"),
      requestsHung: d("requestsHung"),
      nvmeResets: d("nvmeResets"),
    };
    return seg;
  } finally {
    tb.close(fd);
  }
}

function must(r: { ok: boolean; res: number; errno: string | null }, what: string): void {
  if (!r.ok) throw new Error(`${what}: ${r.res} (${r.errno})`);
}

/** Run the campaign: every (iommu, premap, lba) segment, `ios` spread over them. */
export function runSoak(o: SoakOptions, onSegment?: (s: SoakSegment) => void): SoakSegment[] {
  const combos: [IommuMode, PremapVariant, 512 | 4096][] = [];
  for (const lba of o.lba) {
    for (const iommu of o.iommu) for (const premap of o.premap) combos.push([iommu, premap, lba]);
  }
  const per = Math.ceil(o.ios / combos.length);
  const out: SoakSegment[] = [];
  combos.forEach(([iommu, premap, lba], i) => {
    const s = soakSegment(o, iommu, premap, lba, per, o.seed * 1000 + i);
    out.push(s);
    onSegment?.(s);
  });
  return out;
}

/** Whether a segment failed the campaign: mismatches the posted code does not explain, or hung I/O. */
export function segmentFailed(s: SoakSegment): boolean {
  if (s.mismatchedBytes > 0 && !s.postedFlaw) return true;
  if (s.premap === "hardened" && (s.checks.deviceUnmappedBytes > 0 || s.checks.kasanReports > 0)) {
    return true;
  }
  return false;
}

function line(s: SoakSegment): string {
  const errs = Object.entries(s.errors).map(([k, v]) => `${k}:${v}`).join(",") || "-";
  const mm = s.mismatchedBytes
    ? `${s.mismatchedBytes} B in ${s.mismatchedReads} reads${s.postedFlaw ? " (posted code)" : ""}`
    : "0";
  return [
    s.iommu.padEnd(11),
    s.premap.padEnd(8),
    String(s.lba).padStart(4),
    String(s.ios).padStart(8),
    `${Math.round(s.ios / s.seconds)}`.padStart(7),
    `${s.byPath.none}/${s.byPath.bvec}/${s.byPath.dma}`.padEnd(20),
    errs.padEnd(10),
    String(s.checks.dmaDebugErrors).padStart(5),
    String(s.checks.deviceUnmappedBytes).padStart(9),
    String(s.checks.kasanReports).padStart(5),
    mm,
  ].join(" | ");
}

const HELP = `deno task soak -- [flags]
  --ios=N            total I/Os, spread over the segments (default 30000)
  --seed=N           seed (default 1)
  --backend=sim|real backend (default sim)
  --iommu=LIST       IOMMU modes (default ${IOMMU_MODES.join(",")})
  --premap=LIST      premap variants (default ${PREMAP_VARIANTS.join(",")})
  --lba=LIST         LBA formats: 512,4096 (default both)
  --qd=N             I/Os in flight, 1..8 (default 8)
  --json=FILE        write the segments as JSON`;

function main(args: string[]): number {
  let o: SoakOptions;
  let json: string | undefined;
  try {
    const { values } = parseArgs({
      args: args[0] === "--" ? args.slice(1) : args,
      strict: true,
      options: {
        ios: { type: "string", default: "30000" },
        seed: { type: "string", default: "1" },
        backend: { type: "string", default: "sim" },
        iommu: { type: "string" },
        premap: { type: "string" },
        lba: { type: "string", default: "512,4096" },
        qd: { type: "string", default: "8" },
        json: { type: "string" },
        help: { type: "boolean" },
      },
    });
    if (values.help) {
      console.log(HELP);
      return 0;
    }
    const int = (flag: string, v: string, lo: number, hi: number) => {
      const n = Number(v);
      if (!Number.isSafeInteger(n) || n < lo || n > hi) {
        throw new UsageError(`--${flag}: '${v}' is not an integer in ${lo}..${hi}`);
      }
      return n;
    };
    if (values.backend !== "sim" && values.backend !== "real") {
      throw new UsageError(`--backend: '${values.backend}' is not one of sim, real`);
    }
    o = {
      backend: values.backend,
      ios: int("ios", values.ios, 1, 1e9),
      seed: int("seed", values.seed, 0, 2 ** 31),
      iommu: values.iommu ? parseList("iommu", values.iommu, IOMMU_MODES) : IOMMU_MODES,
      premap: values.premap ? parseList("premap", values.premap, PREMAP_VARIANTS) : PREMAP_VARIANTS,
      lba: parseList("lba", values.lba, ["512", "4096"] as const).map((x) =>
        Number(x) as 512 | 4096
      ),
      qd: int("qd", values.qd, 1, 8),
    };
    json = values.json;
  } catch (e) {
    console.error(`soak: ${(e as Error).message}`);
    return 2;
  }
  if (o.backend === "real") {
    const why = realNvmeUnavailable();
    if (why !== null) {
      console.error(`soak: --backend=real: ${why}`);
      return 2;
    }
  }
  console.log(
    `soak: backend=${o.backend} seed=${o.seed} ios=${o.ios}, sizes 1 LBA..1 MiB, qd ${o.qd}, ` +
      `every byte checked against a shadow, full re-read per segment`,
  );
  console.log(
    "iommu       | premap   |  lba |      ios |   IOPS | none/bvec/dma        | errors     | dbg | unmapped B | kasan | mismatches",
  );
  const t0 = performance.now();
  const segs = runSoak(o, (s) => console.log(line(s)));
  const total = segs.reduce((a, s) => a + s.ios, 0);
  const secs = (performance.now() - t0) / 1000;
  const failed = segs.filter(segmentFailed);
  const posted = segs.filter((s) => s.mismatchedBytes > 0 && s.postedFlaw).length;
  const hardenedUnmapped = segs.filter((s) => s.premap === "hardened")
    .reduce((a, s) => a + s.checks.deviceUnmappedBytes, 0);
  console.log(
    `soak: ${total} I/Os in ${secs.toFixed(1)} s (${Math.round(total / secs)} IOPS), ` +
      `${failed.length} failed segments, ${posted} posted-code segments with mismatches, ` +
      `hardened bytes outside a mapping: ${hardenedUnmapped}`,
  );
  if (json) {
    Deno.writeTextFileSync(json, JSON.stringify({ options: o, segments: segs }, null, 1) + "\n");
  }
  return failed.length ? 1 : 0;
}

if (import.meta.main) Deno.exit(main(Deno.args));
