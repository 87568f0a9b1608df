/**
 * Per-I/O accounting: every representation the path builds and what it cost.
 * Each layer receives a {@link Stats} explicitly and bumps its counters; a
 * benchmark or the demo takes a snapshot before and after a batch of I/O and
 * divides the difference by the number of I/Os.
 *
 * @module
 */

/** Names of the counters every layer may bump. */
export const COUNTER_NAMES = [
  // io_uring / iov_iter / pinning
  "enterCalls",
  "sqesConsumed",
  "cqesPosted",
  "iovIters",
  "pagesPinned",
  "pagesUnpinned",
  // block layer
  "bios",
  "bioVecs",
  "requests",
  "bioMerges",
  "bioSplits",
  "requestsRequeued",
  "requestsHung",
  "bioAllocs",
  "bvecAllocs",
  // scatterlist + DMA API
  "sgEntries",
  "dmaMapSgCalls",
  "dmaUnmapSgCalls",
  "dmaMapPageCalls",
  "dmaUnmapPageCalls",
  "dmaSyncs",
  "bounceBytes",
  "swiotlbWarnings",
  // IOMMU
  "iovaAllocs",
  "iovaFrees",
  "iommuPteWrites",
  "iommuPteClears",
  "iotlbInvalidations",
  "iotlbFlushes",
  "iommuFaults",
  // NVMe driver
  "nvmeCommands",
  "prpEntries",
  "prpPoolAllocs",
  "prpPoolFrees",
  "sglDescriptors",
  "kasanReports",
  "nvmeRetries",
  "nvmeInvalidCompletions",
  "nvmeTimeouts",
  "nvmeAborts",
  "nvmeResets",
  "iodMempoolAllocs",
  // memory
  "bytesAllocated",
  // device
  "deviceDmaReads",
  "deviceDmaWrites",
  "deviceErrors",
  // DMA-API debug checker (sim/dma/debug.ts)
  "dmaDebugErrors",
  "dmaDebugDeviceUnmappedBytes",
] as const;

/** One counter name. */
export type CounterName = typeof COUNTER_NAMES[number];

/** Stages a submission passes through, for time-per-stage accounting. */
export const STAGE_NAMES = [
  "io_uring",
  "iov_iter",
  "bio",
  "blk_mq",
  "dma_map",
  "nvme_prep",
  "device",
  "completion",
] as const;

/** One stage name. */
export type StageName = typeof STAGE_NAMES[number];

/**
 * Which side of an I/O an event falls on. Submission is everything up to the
 * doorbell (what fio's slat holds); completion is the interrupt handler and
 * what runs from it (unmap, IOTLB invalidation, unpin, frees, the CQE) and
 * an io_uring_enter that only waits or reaps.
 */
export type Side = "submission" | "completion";

/** A copy of all counters and stage times at one moment. */
export interface StatsSnapshot {
  /** Counter values (both sides). */
  counters: Record<CounterName, number>;
  /** The part of `counters` counted on the completion side ({@link Stats.completion}). */
  completionCounters: Record<CounterName, number>;
  /** Accumulated wall-clock nanoseconds per stage. */
  stageNs: Record<StageName, number>;
}

function zeroCounters(): Record<CounterName, number> {
  return Object.fromEntries(COUNTER_NAMES.map((n) => [n, 0])) as Record<CounterName, number>;
}

function zeroStages(): Record<StageName, number> {
  return Object.fromEntries(STAGE_NAMES.map((n) => [n, 0])) as Record<StageName, number>;
}

/**
 * Each counter's index in {@link COUNTER_NAMES}: `stats.add(COUNTER.bios)`
 * bumps the same counter as `stats.add("bios")`, without looking the name up
 * (a property of a frozen object, which the JIT folds to a constant; the
 * lookup by name inside `add` sees every counter's name and so goes through
 * V8's megamorphic path). Hot paths use this form.
 */
export const COUNTER: Readonly<Record<CounterName, number>> = Object.freeze(
  Object.fromEntries(COUNTER_NAMES.map((n, i) => [n, i])) as Record<CounterName, number>,
);

/**
 * A live `Record<CounterName, number>` over `vals`: one enumerable accessor
 * per counter, in {@link COUNTER_NAMES} order, so reads, spreads and
 * `Object.entries` see the current values as they would on a plain record.
 */
function counterView(vals: Float64Array): Record<CounterName, number> {
  const view = {} as Record<CounterName, number>;
  COUNTER_NAMES.forEach((n, i) => {
    Object.defineProperty(view, n, {
      enumerable: true,
      get: () => vals[i],
      set: (v: number) => {
        vals[i] = v;
      },
    });
  });
  return view;
}

function countersOf(vals: Float64Array): Record<CounterName, number> {
  const out = zeroCounters();
  COUNTER_NAMES.forEach((n, i) => (out[n] = vals[i]));
  return out;
}

/** Counters and stage timers for one simulated host. */
export class Stats {
  // Counter values live in typed arrays indexed by COUNTER: bumping a counter
  // is then a property load and an array store. (A store into a record keyed by a
  // different name at each call site goes through V8's megamorphic keyed-store path,
  // some 40 ns a bump, and every layer bumps several per I/O.)
  readonly #vals = new Float64Array(COUNTER_NAMES.length);
  readonly #completionVals = new Float64Array(COUNTER_NAMES.length);
  /** Live counter values. */
  readonly counters: Record<CounterName, number> = counterView(this.#vals);
  /** The part of {@link Stats.counters} counted while on the completion side. */
  readonly completionCounters: Record<CounterName, number> = counterView(this.#completionVals);
  /** Live per-stage nanoseconds. */
  readonly stageNs: Record<StageName, number> = zeroStages();
  /** Whether stage timing is on (it costs a clock read per stage). */
  timing: boolean;

  /** Create a zeroed set of counters. */
  constructor(opts: { timing?: boolean } = {}) {
    this.timing = opts.timing ?? true;
  }

  #completionDepth = 0;

  /**
   * Add `n` (default 1) to a counter, named or by its index ({@link COUNTER}),
   * on the side the caller is on.
   */
  add(counter: CounterName | number, n = 1): void {
    const i = typeof counter === "number" ? counter : COUNTER[counter];
    this.#vals[i] += n;
    if (this.#completionDepth > 0) this.#completionVals[i] += n;
  }

  /**
   * Run `fn` on the completion side: every counter it bumps is also counted
   * in {@link Stats.completionCounters}. Nests (an interrupt taken while
   * already completing stays on that side).
   */
  completion<T>(fn: () => T): T {
    this.#completionDepth++;
    try {
      return fn();
    } finally {
      this.#completionDepth--;
    }
  }

  /**
   * {@link Stats.completion} without the closure, for hot callers: enter the
   * completion side; every call must be paired with {@link Stats.exitCompletion}
   * (in a `finally`).
   */
  enterCompletion(): void {
    this.#completionDepth++;
  }

  /** Leave the completion side entered with {@link Stats.enterCompletion}. */
  exitCompletion(): void {
    this.#completionDepth--;
  }

  /** Whether events are being counted on the completion side now. */
  get onCompletionSide(): boolean {
    return this.#completionDepth > 0;
  }

  /** Start timing a stage; returns a token for {@link Stats.end}. */
  begin(): number {
    return this.timing ? performance.now() : 0;
  }

  /** Charge the time since `t0` (from {@link Stats.begin}) to a stage. */
  end(stage: StageName, t0: number): void {
    if (this.timing) this.stageNs[stage] += (performance.now() - t0) * 1e6;
  }

  /** Copy of the current values. */
  snapshot(): StatsSnapshot {
    return {
      counters: countersOf(this.#vals),
      completionCounters: countersOf(this.#completionVals),
      stageNs: { ...this.stageNs },
    };
  }

  /** Difference `after - before`, optionally divided per I/O. */
  static diff(before: StatsSnapshot, after: StatsSnapshot, perIos = 1): StatsSnapshot {
    const counters = zeroCounters();
    const completionCounters = zeroCounters();
    const stageNs = zeroStages();
    for (const n of COUNTER_NAMES) {
      counters[n] = (after.counters[n] - before.counters[n]) / perIos;
      completionCounters[n] = (after.completionCounters[n] - before.completionCounters[n]) / perIos;
    }
    for (const s of STAGE_NAMES) stageNs[s] = (after.stageNs[s] - before.stageNs[s]) / perIos;
    return { counters, completionCounters, stageNs };
  }

  /** Split a snapshot's (or a diff's) counters by side: submission = all - completion. */
  static bySide(s: StatsSnapshot): Record<Side, Record<CounterName, number>> {
    const submission = zeroCounters();
    for (const n of COUNTER_NAMES) submission[n] = s.counters[n] - s.completionCounters[n];
    return { submission, completion: { ...s.completionCounters } };
  }
}
