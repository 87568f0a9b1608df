/**
 * The proposal's published results (Keith Busch, PATCHv3 thread, 2022-08-31:
 * fio io_uring, `intel_iommu=on`, mode not stated; see `DESIGN.md` section 1),
 * as data: one cell per queue depth, block size and path.
 *
 * @module
 */

import type { IoPath } from "./workload.ts";

/** One published cell. */
export interface PublishedCell {
  /** Queue depth (fio iodepth). */
  qd: number;
  /** Block size in bytes. */
  bs: number;
  /** Buffer path. */
  path: IoPath;
  /** I/Os per second. */
  iops: number;
  /** fio's mean submission latency, ns. */
  slatNs: number;
  /** fio's sys CPU, percent of one CPU. */
  sysPct: number;
}

const K = 1024;
const ROWS: [number, number, [number, number, number][]][] = [
  [1, 4 * K, [[41_400, 2126, 16.47], [43_800, 1843, 15.79], [46_800, 1504, 14.94]]],
  [1, 16 * K, [[33_300, 3279, 17.78], [33_900, 2607, 14.59], [40_200, 1490, 12.57]]],
  [1, 64 * K, [[18_700, 6778, 18.22], [20_000, 4626, 13.80], [22_600, 1586, 7.58]]],
  [16, 4 * K, [[207_000, 3657, 72.81], [219_000, 3369, 71.55], [310_000, 2237, 60.16]]],
  [16, 16 * K, [[164_000, 5024, 78.38], [177_000, 4553, 76.29], [186_000, 1880, 43.56]]],
  [16, 64 * K, [[46_700, 4424, 30.51], [46_700, 4389, 29.42], [46_700, 1574, 15.61]]],
];

/** Every published cell, in table order (qd, bs, then none/bvec/dma). */
export const PUBLISHED: readonly PublishedCell[] = ROWS.flatMap(([qd, bs, cells]) =>
  (["none", "bvec", "dma"] as const).map((path, i) => ({
    qd,
    bs,
    path,
    iops: cells[i][0],
    slatNs: cells[i][1],
    sysPct: cells[i][2],
  }))
);

/**
 * CPU ns per I/O implied by a cell's sys% and IOPS: one fio job, so
 * sys% of one CPU over IOPS I/Os per second. It holds everything the kernel
 * did for the job (the waiting syscall, the wake-up, the interrupt's share
 * where the job's CPU took it), so it is an upper bound on the counted work.
 */
export function publishedCpuNs(c: PublishedCell): number {
  return (c.sysPct / 100) * 1e9 / c.iops;
}

/** The published cell for a configuration, if there is one. */
export function publishedCell(qd: number, bs: number, path: IoPath): PublishedCell | undefined {
  return PUBLISHED.find((c) => c.qd === qd && c.bs === bs && c.path === path);
}
