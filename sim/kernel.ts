/**
 * The simulated host: one physical memory, one process address space, one
 * set of counters, one seeded random source, the capability switch, the
 * device nodes a path can open, the devices to poll for progress, the one
 * process's fd table, filesystem namespace and block plug, and the id
 * allocator that numbers bios and dma tags. Every layer gets what it needs
 * from here explicitly; there are no globals, so two kernels built from the
 * same seed and driven the same way produce the same ids and counters.
 *
 * @module
 */

import { type FrameBacking, PhysMem } from "./memory/phys.ts";
import { UserMm } from "./memory/mm.ts";
import { Rng } from "./random.ts";
import { Stats } from "./stats.ts";
import type { File } from "./fs/file.ts";
import { FdTable, NR_OPEN_DEFAULT } from "./fs/fdtable.ts";
import { Namespace } from "./fs/namei.ts";
import type { BlkPlug } from "./block/blk-mq.ts";

/** Something that completes work asynchronously (a controller, a flush queue). */
export interface Poller {
  /** Make progress; return how many events completed. */
  poll(): number;
  /** Work accepted but not yet completed. */
  readonly inFlight: number;
}

/**
 * The host's clock for timeouts (admin commands, controller ready waits).
 * `sim` runs a virtual clock, so a wait that nothing can satisfy ends at
 * once at its deadline and runs stay deterministic; `real` reads
 * CLOCK_MONOTONIC, since its device runs on its own thread.
 */
export interface KernelClock {
  /** Nanoseconds since an arbitrary start. */
  nowNs(): number;
  /** True when time moves only when the simulation moves it. */
  readonly virtual: boolean;
  /** Move a virtual clock forward to `ns` (no-op if already past it, or on a real clock). */
  advanceTo(ns: number): void;
}

/** A clock that moves only when told to (the `sim` backend's). */
export class VirtualClock implements KernelClock {
  #now = 0;
  /** Always true. */
  readonly virtual = true;
  /** Current virtual time. */
  nowNs(): number {
    return this.#now;
  }
  /** Jump forward (a sleeping waiter's timeout firing). */
  advanceTo(ns: number): void {
    if (ns > this.#now) this.#now = ns;
  }
}

/** CLOCK_MONOTONIC through `performance.now()` (the `real` backend's). */
export class MonotonicClock implements KernelClock {
  /** Always false. */
  readonly virtual = false;
  readonly #offsetNs: number;
  /** `offsetNs` aligns `performance.now()` with the kernel's CLOCK_MONOTONIC (0: process start). */
  constructor(offsetNs = 0) {
    this.#offsetNs = offsetNs;
  }
  /** Monotonic time in ns. */
  nowNs(): number {
    return Math.round(performance.now() * 1e6) + this.#offsetNs;
  }
  /** Real time cannot be moved. */
  advanceTo(_ns: number): void {}
}

/** A callback due at a time on the kernel's clock (a timer_list / delayed work). */
export interface KernelTimer {
  /** When it is due, in clock ns. */
  readonly atNs: number;
  /** del_timer(): it will not run (no-op once it has run). */
  cancel(): void;
}

interface TimerEntry extends KernelTimer {
  fn: () => void;
  cancelled: boolean;
  seq: number;
}

/** Opens a device node: returns a file or a negative errno. */
export type DeviceOpener = (path: string, flags: number) => File | number;

/**
 * Which variant of the proposal runs (DESIGN.md section 2). `"v2"`, as
 * posted (PATCHv2, 2 Aug 2022, the default) and `"v3"` (PATCHv3, 5 Aug
 * 2022) do what the posted code does, flaws included:
 * IORING_REGISTER_UNMAP_BUFFERS and removing a file slot unmap at once, even
 * while I/O that uses the tag is in flight (only unregistering or updating
 * the buffer waits for its last in-flight user); nvme_pci_dma_unmap() unmaps
 * with `PAGE_SIZE - offset_in_page()` lengths; the bounce-buffer syncs
 * recompute their index from a masked offset and sync whole controller
 * pages; v2's PRP copy reads its remaining-entries counter before setting
 * it, v3's nvme_premapped_slow() its index. The io_uring side of v2 and v3
 * is the same. `"hardened"`, the project's safe variant: v2's uAPI, every
 * unmap waits until no I/O uses the tag, unmap lengths match the mappings,
 * syncs cover exactly the bytes an I/O touches.
 */
export type PremapVariant = "v2" | "v3" | "hardened";

/** The variants, in the order reports list them. */
export const PREMAP_VARIANTS: readonly PremapVariant[] = ["v2", "v3", "hardened"];

/** Options for {@link Kernel}. */
export interface KernelOptions {
  /** Seed for every random choice in the simulation. */
  seed?: number;
  /** Whether the process holds CAP_SYS_ADMIN (default true). */
  capSysAdmin?: boolean;
  /** Whether stage timing is on (default true). */
  timing?: boolean;
  /** The clock for timeouts (default a {@link VirtualClock}). */
  clock?: KernelClock;
  /** Where page frames live (default JavaScript memory; the real backend's is native). */
  frameBacking?: FrameBacking;
  /** Which variant of the proposal runs (default "v2", as posted). */
  premap?: PremapVariant;
  /** rlimit(RLIMIT_NOFILE) of the host's process (default {@link NR_OPEN_DEFAULT}, 1024). */
  nofile?: number;
  /** CLOCK_REALTIME minus CLOCK_MONOTONIC, in ns (default {@link DEFAULT_REALTIME_OFFSET_NS}). */
  realtimeOffsetNs?: number;
}

/** The sim's CLOCK_REALTIME at virtual time 0: 2023-11-14T22:13:20Z. */
export const DEFAULT_REALTIME_OFFSET_NS = 1_700_000_000e9;

/** The simulated kernel context shared by the layers of one testbed. */
export class Kernel {
  /** Physical memory. */
  readonly phys: PhysMem;
  /** The application's address space. */
  readonly mm: UserMm;
  /** Counters and stage timers. */
  readonly stats: Stats;
  /** The root random source; components fork their own. */
  readonly rng: Rng;
  /** The clock timeouts are measured on (CLOCK_MONOTONIC; CLOCK_BOOTTIME equals it). */
  readonly clock: KernelClock;
  /** CLOCK_REALTIME - CLOCK_MONOTONIC in ns (IORING_TIMEOUT_REALTIME). */
  readonly realtimeOffsetNs: number;
  /** capable(CAP_SYS_ADMIN) for the calling process. */
  capSysAdmin: boolean;
  /** Which variant of the proposal runs; read by io_uring and the nvme driver at each use. */
  premap: PremapVariant;
  /** Device nodes by path (e.g. "/dev/nvme0n1"). */
  readonly devices: Map<string, DeviceOpener> = new Map();
  /** `current->files`: the fd table of the host's one process (see `filesOf`). */
  readonly files: FdTable;
  /** The in-memory filesystem's names (see `namespaceOf`). */
  readonly namespace: Namespace = new Namespace();
  /** `current->plug`: the submitting task's open block plug, if any (see `blkStartPlug`). */
  plug: BlkPlug | undefined;
  readonly #pollers = new Set<Poller>();
  readonly #nextIds = new Map<string, number>();
  /** Pending timers, a binary heap by (atNs, seq). */
  readonly #timers: TimerEntry[] = [];
  #timerSeq = 0;

  /** Build a kernel context from a seed. */
  constructor(opts: KernelOptions = {}) {
    const seed = opts.seed ?? 1;
    this.rng = new Rng(seed);
    this.stats = new Stats({ timing: opts.timing ?? true });
    this.phys = new PhysMem({ seed, backing: opts.frameBacking });
    this.mm = new UserMm(this.phys, this.stats);
    this.files = new FdTable(opts.nofile ?? NR_OPEN_DEFAULT);
    this.capSysAdmin = opts.capSysAdmin ?? true;
    this.premap = opts.premap ?? "v2";
    if (!PREMAP_VARIANTS.includes(this.premap)) {
      throw new RangeError(
        `Kernel: premap must be one of ${PREMAP_VARIANTS.join(", ")}, got ${String(opts.premap)}`,
      );
    }
    this.clock = opts.clock ?? new VirtualClock();
    this.realtimeOffsetNs = opts.realtimeOffsetNs ?? DEFAULT_REALTIME_OFFSET_NS;
  }

  /**
   * The next id of `kind` ("bio", "dma-tag", ...) on this host: 1, 2, 3 ...
   * per kind, so ids depend only on what this kernel did.
   */
  nextId(kind: string): number {
    const id = this.#nextIds.get(kind) ?? 1;
    if (id >= Number.MAX_SAFE_INTEGER) throw new Error(`Kernel.nextId: ${kind} ids exhausted`);
    this.#nextIds.set(kind, id + 1);
    return id;
  }

  /** Register a device that completes work asynchronously. */
  addPoller(p: Poller): void {
    this.#pollers.add(p);
  }

  /** Remove a poller (device teardown). */
  removePoller(p: Poller): void {
    this.#pollers.delete(p);
  }

  /**
   * mod_timer(): run `fn` once `delayNs` has passed on the kernel's clock.
   * Timers fire from {@link Kernel.poll}; on the virtual clock a wait with
   * nothing else to do moves the clock to the next timer.
   */
  addTimer(delayNs: number, fn: () => void): KernelTimer {
    if (!Number.isFinite(delayNs) || delayNs < 0) throw new RangeError(`addTimer: ${delayNs} ns`);
    const t: TimerEntry = {
      atNs: this.clock.nowNs() + delayNs,
      fn,
      cancelled: false,
      seq: this.#timerSeq++,
      cancel() {
        this.cancelled = true;
      },
    };
    heapPush(this.#timers, t);
    return t;
  }

  /** When the next pending timer is due (Infinity: none). */
  get nextTimerNs(): number {
    while (this.#timers.length && this.#timers[0].cancelled) heapPop(this.#timers);
    return this.#timers.length ? this.#timers[0].atNs : Infinity;
  }

  /** Run the timers that are due; returns how many ran. */
  #runTimers(): number {
    let n = 0;
    const now = this.clock.nowNs();
    while (this.#timers.length && this.#timers[0].atNs <= now) {
      const t = heapPop(this.#timers)!;
      if (t.cancelled) continue;
      t.cancelled = true;
      t.fn();
      n++;
    }
    return n;
  }

  /**
   * On the virtual clock with nothing else moving: jump to the next timer
   * due no later than `limitNs` and run it. Returns timers run.
   */
  #sleepToTimer(limitNs: number): number {
    const next = this.nextTimerNs;
    if (!this.clock.virtual || next === Infinity || next > limitNs) return 0;
    this.clock.advanceTo(next);
    return this.#runTimers();
  }

  /** Let every device make progress once, and run due timers; returns events completed. */
  poll(): number {
    let n = this.#timers.length ? this.#runTimers() : 0;
    for (const p of this.#pollers) n += p.poll();
    return n;
  }

  /** Work in flight across all devices. */
  get inFlight(): number {
    let n = 0;
    for (const p of this.#pollers) n += p.inFlight;
    return n;
  }

  /**
   * Poll until `done()` holds. Returns false, rather than spinning forever,
   * when nothing is in flight and `done()` still fails (a wait that the
   * kernel would sleep in indefinitely). On a real clock a device on its own
   * thread may complete work between polls, so the wait also ends (false)
   * after `timeoutNs` (default 60 s).
   */
  runUntil(done: () => boolean, maxRounds = 1_000_000, timeoutNs = 60e9): boolean {
    const deadline = this.clock.virtual ? Infinity : this.clock.nowNs() + timeoutNs;
    for (let i = 0; this.clock.virtual ? i < maxRounds : true; i++) {
      if (done()) return true;
      let n = this.poll();
      // Asleep until a timer (a request timeout, a delayed queue run) with nothing else moving.
      if (n === 0) n = this.#sleepToTimer(Infinity);
      if (n === 0 && this.inFlight === 0 && this.nextTimerNs === Infinity) return done();
      if (!this.clock.virtual && (i & 63) === 63 && this.clock.nowNs() > deadline) return done();
    }
    throw new Error(`Kernel.runUntil: no completion after ${maxRounds} rounds (livelock)`);
  }

  /**
   * wait_event_timeout(): poll the devices until `done()` holds or
   * `timeoutNs` passes on the kernel's clock. On the virtual clock a wait
   * with nothing in flight jumps to its deadline at once.
   */
  waitEvent(done: () => boolean, timeoutNs: number, maxRounds = 1_000_000): boolean {
    const deadline = this.clock.nowNs() + timeoutNs;
    for (let i = 0; i < maxRounds || !this.clock.virtual; i++) {
      if (done()) return true;
      let n = this.poll();
      if (done()) return true;
      if (this.clock.nowNs() >= deadline) return false;
      if (n === 0) n = this.#sleepToTimer(deadline);
      if (n === 0 && this.clock.virtual && (this.inFlight === 0 || this.nextTimerNs === Infinity)) {
        this.clock.advanceTo(deadline); // asleep until the timeout: nothing can wake it
        return done();
      }
    }
    throw new Error(`Kernel.waitEvent: no completion after ${maxRounds} rounds (livelock)`);
  }
}

function timerBefore(a: TimerEntry, b: TimerEntry): boolean {
  return a.atNs < b.atNs || (a.atNs === b.atNs && a.seq < b.seq);
}

function heapPush(h: TimerEntry[], t: TimerEntry): void {
  h.push(t);
  let i = h.length - 1;
  while (i > 0) {
    const p = (i - 1) >> 1;
    if (!timerBefore(h[i], h[p])) break;
    [h[i], h[p]] = [h[p], h[i]];
    i = p;
  }
}

function heapPop(h: TimerEntry[]): TimerEntry | undefined {
  const top = h[0];
  const last = h.pop();
  if (h.length && last) {
    h[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1, r = l + 1;
      let m = i;
      if (l < h.length && timerBefore(h[l], h[m])) m = l;
      if (r < h.length && timerBefore(h[r], h[m])) m = r;
      if (m === i) break;
      [h[i], h[m]] = [h[m], h[i]];
      i = m;
    }
  }
  return top;
}
