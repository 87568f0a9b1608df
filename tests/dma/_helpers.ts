/**
 * Shared test helpers for the DMA layer: a kernel, user frames, sg lists,
 * and an exact comparison of counter deltas.
 *
 * @module
 */

import assert from "node:assert/strict";
import { Kernel } from "../../sim/kernel.ts";
import type { Page } from "../../sim/memory/phys.ts";
import { COUNTER_NAMES, type CounterName, Stats, type StatsSnapshot } from "../../sim/stats.ts";
import { DMA_MAPPING_ERROR, type Scatterlist } from "../../sim/dma/types.ts";

/** A fresh kernel with timing off. */
export function newKernel(seed = 11): Kernel {
  return new Kernel({ seed, timing: false });
}

/** `n` user frames, each filled with a distinct byte pattern. */
export function userPages(kernel: Kernel, n: number): Page[] {
  const pages = kernel.phys.allocUserFrames(n);
  pages.forEach((p, i) => p.data.fill(0x10 + i));
  return pages;
}

/** One full-page sg entry per page. */
export function sgOf(pages: Page[], offset = 0, length = 4096): Scatterlist[] {
  return pages.map((page) => ({
    page,
    offset,
    length,
    dmaAddress: DMA_MAPPING_ERROR,
    dmaLength: 0,
  }));
}

/** Assert that counters moved by exactly `expected` since `before` (every other counter by 0). */
export function assertDelta(
  kernel: Kernel,
  before: StatsSnapshot,
  expected: Partial<Record<CounterName, number>>,
): void {
  const d = Stats.diff(before, kernel.stats.snapshot()).counters;
  const want = Object.fromEntries(COUNTER_NAMES.map((n) => [n, expected[n] ?? 0]));
  assert.deepEqual(d, want);
}
