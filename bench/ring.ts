/**
 * `deno task bench:ring -- --json=FILE [--batch=1,8,32,128] [--ops=N] [--repeat=N]`
 *
 * NOP throughput of the live kernel io_uring driven from Deno (SQEs written
 * field by field through the mapped SQE array, one io_uring_enter(2) per batch
 * with the arguments io_uring_submit_and_wait passes, CQEs reaped and read
 * through the mapped CQ ring; see {@link denoNopLoop}) against the C liburing
 * reference `ffi/native/build/ring_bench` doing the same work. For each batch
 * size the two run interleaved, `--repeat` times each, and the best run of
 * each counts (a noisy 2-core machine only ever slows a run down).
 *
 * Prints a table; `--json=FILE` writes
 * `{ summary, records: [{ batch, ts_ops_per_s, c_ops_per_s, ratio }] }`.
 *
 * The TS simulation ring plugs in through {@link runRingBench}'s
 * `simOpsPerS` hook; its records then carry `sim_ops_per_s`.
 *
 * @example
 * ```sh
 * deno task bench:ring -- --batch=1,32 --ops=100000 --json=/tmp/ring.json
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { checkOutput, resolveOutput } from "./cli.ts";
import {
  liburing,
  LiveRing,
  liveRingUnavailable,
  PLAIN_RING_ACCESS_ORDERED,
} from "../ffi/liburing.ts";
import { IORING_ENTER, IORING_OP } from "../sim/uapi/io_uring.ts";
import { simNopOpsPerS } from "./sim_ring.ts";

/** Path of the C reference program. */
export const C_BENCH: string = new URL("../ffi/native/build/ring_bench", import.meta.url).pathname;
/** Limits on the command line. */
const MAX_BATCH = 4096;
const MAX_OPS = 100_000_000;
const MAX_REPEAT = 50;
/** JIT warm-up per batch size: short calls (4 batches each), long calls and their NOPs (at most `--ops`). */
const WARM_UP_SHORT_CALLS = 200;
const WARM_UP_LONG_CALLS = 2;
const WARM_UP_LONG_OPS = 20_000;

/** One batch size's result. */
export interface RingBenchRecord {
  /** SQEs per system call (io_uring_submit_and_wait in C, the same io_uring_enter in Deno). */
  batch: number;
  /** Deno over the live ring, best of `repeat`. */
  ts_ops_per_s: number;
  /** C liburing reference, best of `repeat`. */
  c_ops_per_s: number;
  /** ts_ops_per_s / c_ops_per_s. */
  ratio: number;
  /** The TS simulation ring, when the hook is given. */
  sim_ops_per_s?: number;
}

/** The whole report. */
export interface RingBenchReport {
  /** Run parameters and the aggregate. */
  summary: {
    ops: number;
    repeat: number;
    batches: number[];
    min_ratio: number;
    geomean_ratio: number;
    target_ratio: number;
    meets_target: boolean;
  };
  /** One per batch size. */
  records: RingBenchRecord[];
}

/** Hook for the TS sim ring: ops/s for NOPs at this batch size. */
export type SimOpsPerS = (batch: number, ops: number) => number;

/** The ratio the binding aims for (Deno over C). */
export const TARGET_RATIO = 0.9;

/**
 * Deno's NOP loop over the live ring, the same work as ring_bench.c, one op at
 * a time as an application does it:
 *
 * - per op, io_uring_get_sqe() (SQ space against `*sq.khead`, bump liburing's
 *   `sqe_tail`) + io_uring_prep_nop() + io_uring_sqe_set_data64(): opcode,
 *   flags, ioprio, fd -1, off, addr, len, rw_flags, user_data (as two u32
 *   halves, no BigInt), buf_index, personality, file_index, addr3 and pad,
 *   written into the mapped SQE from TypeScript (the 8-byte zero fields
 *   through a Float64Array view, +0 being all-zero bits);
 * - per batch, what io_uring_submit_and_wait(ring, n) does on a ring without
 *   SQPOLL (liburing 2.3's `__io_uring_flush_sq()` + `__io_uring_submit()`):
 *   store the tail to `*sq.ktail` (release), then its one system call,
 *   io_uring_enter(fd, to_submit, n, IORING_ENTER_GETEVENTS, NULL), through
 *   liburing's own wrapper;
 * - per CQE, read user_data and res from the mapped CQ ring (after an
 *   acquire load of `*cq.ktail`), check them, and release the head.
 *
 * The loop is the ring's only user while it runs: it keeps liburing's
 * `sqe_tail` in a local and writes it back (with `sqe_head`, as the flush
 * does) when it returns, and, like {@link LiveRing.submitAndWait}, skips the
 * per-call liveness check {@link LiveRing.enter} makes. Everything it needs is
 * read into locals first, so the optimized loop touches only the mapped ring,
 * the typed-array views on it, its stack and the FFI call: after each system
 * call every further page the loop touches costs a TLB refill, and here (PTI
 * without PCID, in a VM) that is tens of ns a page. Returns
 * elapsed ns, or throws on a ring error (a benchmark has no partial result to
 * report).
 */
export function denoNopLoop(ring: LiveRing, batch: number, ops: number): number {
  if (batch > ring.sqEntries) throw new RangeError(`batch ${batch} > SQ ${ring.sqEntries}`);
  if (ring.sqeSize !== 64 || ring.cqeSize !== 16) {
    throw new RangeError("denoNopLoop needs 64-byte SQEs and 16-byte CQEs");
  }
  const enter = liburing()?.io_uring_enter;
  if (!enter) throw new Error("this liburing does not export io_uring_enter");
  // Module constants copied into locals: optimized code would otherwise
  // re-read each through the module context at every use.
  const plain = PLAIN_RING_ACCESS_ORDERED; // plain index access is acquire/release here
  const NOP = IORING_OP.NOP | 0;
  const GETEVENTS = IORING_ENTER.GETEVENTS; // what io_uring_submit_and_wait() passes when it waits
  const fd = ring.fd;
  const entries = ring.sqEntries;
  const sqMask = ring.sqMask;
  const cqMask = ring.cqMask;
  const sqHead = ring.sqKhead;
  const sqTail = ring.sqKtail;
  const cqHead = ring.cqKhead;
  const cqTail = ring.cqKtail;
  const sqe32 = ring.sqeWords;
  const sqe64 = new Float64Array(ring.sqeWords.buffer);
  const cqe32 = ring.cqeWords;
  const struct = ring.structWords;
  const tailWord = LiveRing.SQE_TAIL_WORD;
  const headWord = LiveRing.SQE_HEAD_WORD;
  let tail = struct[tailWord];
  let userData = 0;
  let expect = 0;
  let done = 0;
  const t0 = performance.now();
  while (done < ops) {
    let n = ops - done < batch ? ops - done : batch;
    for (let k = 0; k < n; k++) {
      if (((tail - sqHead[0]) >>> 0) >= entries) throw new Error("SQ full");
      const slot = tail & sqMask;
      const w = slot << 4; // 32-bit words per SQE
      const d = slot << 3; // 64-bit words per SQE
      sqe32[w] = NOP; // opcode, flags, ioprio
      sqe32[w + 1] = -1; // fd
      sqe64[d + 1] = 0; // off
      sqe64[d + 2] = 0; // addr
      sqe64[d + 3] = 0; // len, rw_flags
      sqe32[w + 8] = userData; // user_data, low half
      sqe32[w + 9] = 0; // user_data, high half
      sqe64[d + 5] = 0; // buf_index, personality, file_index
      sqe64[d + 6] = 0; // addr3
      sqe64[d + 7] = 0; // __pad2
      userData = (userData + 1) | 0;
      tail = (tail + 1) >>> 0;
    }
    if (plain) sqTail[0] = tail;
    else Atomics.store(sqTail, 0, tail);
    const r = enter(fd, (tail - sqHead[0]) >>> 0, n, GETEVENTS, null);
    if (r !== n) throw new Error(`io_uring_enter: ${r}`);
    while (n > 0) {
      const ctail = plain ? cqTail[0] : Atomics.load(cqTail, 0);
      let head = cqHead[0];
      let seen = 0;
      while (head !== ctail) {
        const c = (head & cqMask) << 2; // 32-bit words per CQE
        if (cqe32[c] !== expect || cqe32[c + 1] !== 0) {
          throw new Error(`CQE user_data ${cqe32[c + 1]}:${cqe32[c]}, expected ${expect}`);
        }
        if (cqe32[c + 2] !== 0) throw new Error(`NOP res ${cqe32[c + 2]}`);
        expect = (expect + 1) | 0;
        head = (head + 1) >>> 0;
        seen++;
      }
      if (plain) cqHead[0] = head;
      else Atomics.store(cqHead, 0, head);
      done += seen;
      n -= seen;
    }
  }
  const t1 = performance.now();
  struct[tailWord] = tail;
  struct[headWord] = tail;
  return (t1 - t0) * 1e6;
}

/** A fresh ring of `batch` entries, as ring_bench.c sets one up (io_uring_queue_init, no flags). */
function benchRing(batch: number): LiveRing {
  const r = LiveRing.create(batch);
  if (!("ring" in r)) throw new Error(`io_uring_queue_init: ${r.res} (${r.errno})`);
  return r.ring;
}

/**
 * One timed Deno run on a fresh ring of `batch` entries, timed from its first
 * SQE as ring_bench.c times its own (the JIT is warmed by {@link warmUp}).
 */
export function denoOpsPerS(batch: number, ops: number): number {
  using ring = benchRing(batch);
  return ops * 1e9 / denoNopLoop(ring, batch, ops);
}

/**
 * Run the Deno loop untimed at every batch size so that the timed runs
 * execute TurboFan's code for the whole function: first many short calls
 * (every path, the loop exit included, gets type feedback, and the function
 * itself, not only its loop through on-stack replacement, becomes hot), then
 * a few long ones.
 */
export function warmUp(batches: number[], ops: number): void {
  for (const batch of batches) {
    using ring = benchRing(batch);
    // Odd calls end on a short batch (ops not a multiple of batch), so that
    // path has its feedback too.
    for (let i = 0; i < WARM_UP_SHORT_CALLS; i++) denoNopLoop(ring, batch, batch * 4 + (i & 1));
    for (let i = 0; i < WARM_UP_LONG_CALLS; i++) {
      denoNopLoop(ring, batch, Math.min(ops, WARM_UP_LONG_OPS));
    }
  }
}

/** One run of the C reference. */
export async function cOpsPerS(batch: number, ops: number): Promise<number> {
  const out = await new Deno.Command(C_BENCH, {
    args: [`--batch=${batch}`, `--ops=${ops}`],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(`${C_BENCH} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  const j = JSON.parse(text) as { ops: number; ns: number; ops_per_s: number };
  if (j.ops !== ops) throw new Error(`ring_bench ran ${j.ops} ops, asked ${ops}`);
  return j.ops_per_s;
}

/**
 * Run every batch size, C and Deno interleaved, best of `repeat` each. The
 * repetitions go round the batch sizes (C then Deno, then Deno then C on the
 * next round), so each batch's runs spread over the whole invocation and a
 * burst of other load on the machine cannot take all of one batch's runs.
 */
export async function runRingBench(
  batches: number[],
  ops: number,
  repeat: number,
  simOpsPerS?: SimOpsPerS,
): Promise<RingBenchReport> {
  warmUp(batches, ops);
  // One untimed C run per batch as well: the first spawns page the binary in
  // and compile Deno's process-spawning code on the JIT's background thread,
  // which would otherwise share the CPUs with the first timed runs.
  for (const batch of batches) await cOpsPerS(batch, Math.min(ops, WARM_UP_LONG_OPS));
  const bestC = batches.map(() => 0);
  const bestTs = batches.map(() => 0);
  for (let i = 0; i < repeat; i++) {
    for (let b = 0; b < batches.length; b++) {
      // Alternate which goes first so neither always runs right after the other.
      if (i % 2 === 0) bestC[b] = Math.max(bestC[b], await cOpsPerS(batches[b], ops));
      bestTs[b] = Math.max(bestTs[b], denoOpsPerS(batches[b], ops));
      if (i % 2 === 1) bestC[b] = Math.max(bestC[b], await cOpsPerS(batches[b], ops));
    }
  }
  const records = batches.map((batch, b) => {
    const rec: RingBenchRecord = {
      batch,
      ts_ops_per_s: Math.round(bestTs[b]),
      c_ops_per_s: Math.round(bestC[b]),
      ratio: Number((bestTs[b] / bestC[b]).toFixed(3)),
    };
    if (simOpsPerS) rec.sim_ops_per_s = Math.round(simOpsPerS(batch, ops));
    return rec;
  });
  const ratios = records.map((r) => r.ratio);
  const geo = Math.exp(ratios.reduce((a, r) => a + Math.log(r), 0) / ratios.length);
  const minRatio = Math.min(...ratios);
  return {
    summary: {
      ops,
      repeat,
      batches,
      min_ratio: minRatio,
      geomean_ratio: Number(geo.toFixed(3)),
      target_ratio: TARGET_RATIO,
      meets_target: minRatio >= TARGET_RATIO,
    },
    records,
  };
}

/** The report as a text table. */
export function formatTable(rep: RingBenchReport): string {
  const hasSim = rep.records.some((r) => r.sim_ops_per_s !== undefined);
  const head = ["batch", "deno ops/s", "C ops/s", "ratio", ...(hasSim ? ["sim ops/s"] : [])];
  const rows = rep.records.map((r) => [
    String(r.batch),
    r.ts_ops_per_s.toLocaleString("en-US"),
    r.c_ops_per_s.toLocaleString("en-US"),
    r.ratio.toFixed(3),
    ...(hasSim ? [(r.sim_ops_per_s ?? 0).toLocaleString("en-US")] : []),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padStart(widths[i])).join("  ");
  const s = rep.summary;
  return [
    line(head),
    ...rows.map(line),
    `target: every batch's deno/C ratio >= ${s.target_ratio}; ` +
    `lowest ${s.min_ratio.toFixed(3)} (batch ${
      rep.records.find((r) => r.ratio === s.min_ratio)?.batch
    }): ${s.meets_target ? "met" : "NOT met"}; geomean ${s.geomean_ratio.toFixed(3)} ` +
    `(${s.ops} ops, best of ${s.repeat})`,
  ].join("\n");
}

function parseList(name: string, v: string, max: number): number[] {
  const out = v.split(",").map((x) => Number(x.trim()));
  for (const n of out) {
    if (!Number.isInteger(n) || n < 1 || n > max) {
      throw new RangeError(`--${name}: ${JSON.stringify(v)} must be integers in [1, ${max}]`);
    }
  }
  return out;
}

async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    // `deno task bench:ring -- --json=F` forwards the "--" itself.
    args: args[0] === "--" ? args.slice(1) : args,
    options: {
      json: { type: "string" },
      batch: { type: "string", default: "1,8,32,128" },
      ops: { type: "string", default: "200000" },
      repeat: { type: "string", default: "25" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  if (values.help) {
    console.log(`usage: deno task bench:ring -- [flags]
  --batch=N,...   NOPs per io_uring_enter, each run in turn (default 1,8,32,128)
  --ops=N         NOPs per run (default 200000)
  --repeat=N      runs per side and batch, best kept (default 25)
  --json=FILE     write the report as JSON (relative: from where you ran deno task)
  -h, --help      this text`);
    return 0;
  }
  const json = values.json === undefined ? undefined : resolveOutput(values.json);
  if (json !== undefined) {
    const why = checkOutput("json", json);
    if (why !== null) throw new RangeError(why);
  }
  const batches = parseList("batch", values.batch, MAX_BATCH);
  const [ops] = parseList("ops", values.ops, MAX_OPS);
  const [repeat] = parseList("repeat", values.repeat, MAX_REPEAT);
  const why = liveRingUnavailable();
  if (why !== null) {
    console.log(`bench:ring skipped: ${why}`);
    return 0;
  }
  try {
    Deno.statSync(C_BENCH);
  } catch {
    console.log(`bench:ring skipped: ${C_BENCH} not built (run deno task build)`);
    return 0;
  }
  const rep = await runRingBench(batches, ops, repeat, simNopOpsPerS);
  console.log(formatTable(rep));
  if (json !== undefined) {
    Deno.writeTextFileSync(json, JSON.stringify(rep, null, 2) + "\n");
    console.log(`wrote ${json}`);
  }
  return 0;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    console.error(`bench:ring: ${(e as Error).message}`);
    Deno.exit(2);
  }
}
