/**
 * Mutation check of the PRP list boundaries (issue 8): each mutation below is
 * a bug the boundary tests exist to catch. The tool applies each one to a
 * temporary copy of the repository (never the working tree), runs the test
 * files meant to catch it there, and reports it killed (a test failed) or
 * survived (every test passed). A mutation whose source text is not found
 * exactly once is reported by name, so a refactor of the mutated code fails
 * loudly instead of testing nothing: update its `find` text here.
 *
 * First the same test files run on an unmutated copy (the baseline): a test
 * that fails without any mutation would make every mutant look killed. A
 * mutation of the C controller rebuilds `libnvme_emu.so` from the mutated
 * copy; the others use the baseline copy's build. Killed means a test
 * failed: a copy that fails to type-check, build or load is an error, not a
 * kill.
 *
 * @example
 * ```sh
 * deno task mutants                    # every mutation, 2 at a time
 * deno task mutants -- --only=d-small-pool-lt,e-c-exact-fill-chains --keep
 * ```
 *
 * @module
 */

import { gccArgs, skipReason } from "../../ffi/native/build.ts";

/** One deliberate bug and the tests that must catch it. */
export interface Mutation {
  /** Short name, used in reports and `--only`. */
  name: string;
  /** What the mutation breaks. */
  description: string;
  /** File to mutate, relative to the repository root. */
  file: string;
  /** Exact source text to replace; must occur exactly once in `file`. */
  find: string;
  /** Its replacement. */
  replace: string;
  /** Test files (relative to the root) run against the mutant. */
  tests: string[];
  /** The C controller: rebuild libnvme_emu.so from the mutated copy. */
  native?: boolean;
}

const DRIVER_TESTS = ["tests/nvme/prp_list_test.ts"];
const DEVICE_TESTS = ["tests/device/prp_list_test.ts"];

/** The mutations issue 8 names; each must be killed. */
export const MUTATIONS: readonly Mutation[] = [
  {
    name: "a-premapped-inclusive-end",
    description:
      "premapped in-place test with an inclusive end (listEnd - 8): a run ending on the array page's last slot is pointed at instead of copied",
    file: "sim/nvme/pci.ts",
    find: "const listEnd = listStart + BigInt(nprps * 8);",
    replace: "const listEnd = listStart + BigInt(nprps * 8 - 8);",
    tests: [...DRIVER_TESTS, "tests/nvme/premap_test.ts"],
  },
  {
    name: "b-chain-one-slot-early",
    description:
      "PRP list builder (setup_prps and premapped_slow) chains when slot 510 is reached, writing the chain pointer one slot early",
    file: "sim/nvme/pci.ts",
    find: "if (i === PRPS_PER_PAGE) {",
    replace: "if (i === PRPS_PER_PAGE - 1) {",
    tests: DRIVER_TESTS,
  },
  {
    name: "c-displaced-entry-dropped",
    description:
      "PRP list builder overwrites the last slot with the chain pointer without moving its entry to the next page",
    file: "sim/nvme/pci.ts",
    find: "        dv.setBigUint64(0, old.getBigUint64((i - 1) * 8, true), true);\n" +
      "        old.setBigUint64((i - 1) * 8, nb.dma, true);\n" +
      "        blk = nb;\n" +
      "        i = 1;\n",
    replace: "        old.setBigUint64((i - 1) * 8, nb.dma, true);\n" +
      "        blk = nb;\n" +
      "        i = 0;\n",
    tests: DRIVER_TESTS,
  },
  {
    name: "d-small-pool-lt",
    description: "small-pool threshold nprps <= 256 / 8 made <: 32 entries go to the page pool",
    file: "sim/nvme/pci.ts",
    find: "const small = nprps <= NVME_SMALL_POOL_SIZE / 8;",
    replace: "const small = nprps < NVME_SMALL_POOL_SIZE / 8;",
    tests: DRIVER_TESTS,
  },
  {
    name: "e-ts-exact-fill-chains",
    description:
      "TypeScript device takes an exactly filled last slot of a list page for a chain pointer",
    file: "sim/device/dptr.ts",
    find: "const chains = needed > nents;",
    replace: "const chains = needed >= nents;",
    tests: DEVICE_TESTS,
  },
  {
    name: "e-c-exact-fill-chains",
    description: "C device takes an exactly filled last slot of a list page for a chain pointer",
    file: "ffi/native/nvme_emu_dptr.inc",
    find: "bool chains = needed > nents;",
    replace: "bool chains = needed >= nents;",
    tests: DEVICE_TESTS,
    native: true,
  },
];

/** What happened to one mutant. */
export type Outcome = "killed" | "survived" | "error" | "pattern-missing" | "skipped";

/** One mutant's result. */
export interface MutantResult {
  name: string;
  file: string;
  outcome: Outcome;
  /** Names of the tests that failed. */
  failed: string[];
  /** Wall time of its copy, build and test run. */
  seconds: number;
  /** Why, for anything but killed and survived; the output's tail for an error. */
  detail?: string;
}

/** A whole run. */
export interface MutantsReport {
  /** Baseline: null when it passed, else why (and nothing else ran). */
  baselineError: string | null;
  baselineSeconds: number;
  results: MutantResult[];
  seconds: number;
  /** Every selected mutant killed (skipped ones aside) and every pattern found. */
  ok: boolean;
}

/** Options of {@link runMutants}. */
export interface MutantsOptions {
  /** Repository root (default: the one this file is in). */
  root?: string;
  /** The mutations to choose from (default {@link MUTATIONS}). */
  mutations?: readonly Mutation[];
  /** Run only these mutations (by name). */
  only?: string[];
  /** Mutants run at once (default: 2, or 1 on one core). */
  jobs?: number;
  /** Skip the C controller's mutations with this reason (a machine without gcc/liburing). */
  skipNative?: string | null;
  /** Keep the temporary copies (their path is logged). */
  keep?: boolean;
  /** Per test run limit in seconds (default 300): a run over it is an error. */
  timeoutSeconds?: number;
  /** Progress lines (default: console.log). */
  log?: (line: string) => void;
}

const ROOT = new URL("../../", import.meta.url).pathname;
const LIB = "ffi/native/build/libnvme_emu.so";

/** Occurrences of `find` in `text`. */
export function countOccurrences(text: string, find: string): number {
  if (find === "") throw new RangeError("countOccurrences: empty pattern");
  let n = 0;
  for (let i = text.indexOf(find); i !== -1; i = text.indexOf(find, i + find.length)) n++;
  return n;
}

/**
 * `m` applied to `source`, or why it cannot be: its text must occur exactly
 * once, so that drift in the mutated code is detected, never silently missed.
 */
export function applyMutation(m: Mutation, source: string): string | { missing: string } {
  const n = countOccurrences(source, m.find);
  if (n !== 1) {
    const first = m.find.split("\n")[0].trim();
    return {
      missing: `${m.file}: the text of mutation ${m.name} (\`${first}\`${
        m.find.includes("\n") ? " ..." : ""
      }) occurs ${n} times, not once; update its find text in tests/mutants/mutants.ts`,
    };
  }
  return source.replace(m.find, () => m.replace);
}

/** The repository's files (tracked and untracked, not ignored) that exist. */
async function listFiles(root: string): Promise<string[]> {
  const out = await new Deno.Command("git", {
    args: ["-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`git ls-files in ${root}: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  const names = new TextDecoder().decode(out.stdout).split("\0").filter((s) => s !== "");
  return names.filter((f) => {
    try {
      return Deno.statSync(`${root}${f}`).isFile;
    } catch {
      return false; // deleted in the working tree
    }
  });
}

async function copyTree(root: string, files: string[], dest: string): Promise<void> {
  const dirs = new Set(files.map((f) => f.slice(0, f.lastIndexOf("/") + 1)));
  for (const d of dirs) await Deno.mkdir(`${dest}/${d}`, { recursive: true });
  await Promise.all(files.map((f) => Deno.copyFile(`${root}${f}`, `${dest}/${f}`)));
}

/** Build the plain libnvme_emu.so of the copy at `dir`; null or why it failed. */
async function buildLib(dir: string): Promise<string | null> {
  await Deno.mkdir(`${dir}/ffi/native/build`, { recursive: true });
  const args = gccArgs({
    src: `${dir}/ffi/native/nvme_emu.c`,
    out: `${dir}/${LIB}`,
    kind: "library",
    asan: false,
  });
  const r = await new Deno.Command("gcc", { args, stdout: "piped", stderr: "piped" }).output();
  if (r.success) return null;
  return `gcc ${args.join(" ")}:\n${new TextDecoder().decode(r.stderr).slice(-4000)}`;
}

interface TestRun {
  code: number;
  failed: string[];
  output: string;
  timedOut: boolean;
}

/** `deno test` of `tests` in the copy at `dir`, its C library named by environment. */
async function runTests(dir: string, tests: string[], timeoutSeconds: number): Promise<TestRun> {
  const ac = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    ac.abort();
  }, timeoutSeconds * 1000);
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["test", "--allow-all", ...tests],
      cwd: dir,
      env: { NO_COLOR: "1", NVME_EMU_LIBRARY: `${dir}/${LIB}` },
      stdout: "piped",
      stderr: "piped",
      signal: ac.signal,
    }).output();
    const output = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    const failed = [...new Set([...output.matchAll(/^(.+?) \.\.\. FAILED/gm)].map((m) => m[1]))];
    return { code: out.code, failed, output, timedOut };
  } finally {
    clearTimeout(timer);
  }
}

const tail = (s: string, lines = 40) => s.trimEnd().split("\n").slice(-lines).join("\n");

/** Run the selected mutations; see the module documentation. */
export async function runMutants(opts: MutantsOptions = {}): Promise<MutantsReport> {
  const t0 = performance.now();
  const root = (opts.root ?? ROOT).replace(/\/?$/, "/");
  const log = opts.log ?? ((l: string) => console.log(l));
  const timeoutSeconds = opts.timeoutSeconds ?? 300;
  const jobs = Math.max(1, opts.jobs ?? Math.min(2, navigator.hardwareConcurrency || 1));
  const all = opts.mutations ?? MUTATIONS;
  const only = opts.only;
  if (only) {
    const unknown = only.filter((n) => !all.some((m) => m.name === n));
    if (unknown.length) throw new RangeError(`unknown mutation ${unknown.join(", ")}`);
  }
  const selected = all.filter((m) => !only || only.includes(m.name));
  const secs = (from: number) => (performance.now() - from) / 1000;

  const results: MutantResult[] = [];
  const runnable: { m: Mutation; source: string }[] = [];
  for (const m of selected) {
    let text: string;
    try {
      text = await Deno.readTextFile(`${root}${m.file}`);
    } catch (e) {
      text = "";
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    const applied = applyMutation(m, text);
    if (typeof applied !== "string") {
      results.push({
        name: m.name,
        file: m.file,
        outcome: "pattern-missing",
        failed: [],
        seconds: 0,
        detail: applied.missing,
      });
      log(`PATTERN MISSING ${m.name}: ${applied.missing}`);
    } else if (m.native && opts.skipNative) {
      results.push({
        name: m.name,
        file: m.file,
        outcome: "skipped",
        failed: [],
        seconds: 0,
        detail: opts.skipNative,
      });
      log(`SKIP ${m.name}: ${opts.skipNative}`);
    } else {
      runnable.push({ m, source: applied });
    }
  }

  if (runnable.length === 0) {
    const ok = results.every((r) => r.outcome === "skipped");
    return { baselineError: null, baselineSeconds: 0, results, seconds: secs(t0), ok };
  }
  const files = await listFiles(root);
  const work = await Deno.makeTempDir({ prefix: "premap-mutants-" });
  if (opts.keep) log(`copies in ${work}`);
  let baselineError: string | null = null;
  let baselineSeconds = 0;
  try {
    // Baseline: the unmutated copy must pass every test file the mutants run.
    const tb = performance.now();
    const base = `${work}/baseline`;
    await copyTree(root, files, base);
    const nativeWhy = skipReason();
    const buildWhy = nativeWhy ?? await buildLib(base);
    const baseTests = [...new Set(runnable.flatMap((r) => r.m.tests))];
    if (buildWhy !== null && runnable.some((r) => r.m.native)) {
      baselineError = `cannot build ${LIB}: ${buildWhy}`;
    } else if (baseTests.length) {
      const run = await runTests(base, baseTests, timeoutSeconds);
      if (run.code !== 0) {
        baselineError = `the tests fail without any mutation (${
          run.timedOut ? "timed out" : `exit ${run.code}`
        }):\n${tail(run.output)}`;
      }
    }
    baselineSeconds = secs(tb);
    if (baselineError !== null) {
      log(`BASELINE FAILED (${baselineSeconds.toFixed(1)} s): ${baselineError}`);
      return { baselineError, baselineSeconds, results, seconds: secs(t0), ok: false };
    }
    log(
      `baseline: ${baseTests.length} test files pass unmutated (${baselineSeconds.toFixed(1)} s)`,
    );

    const one = async ({ m, source }: { m: Mutation; source: string }): Promise<MutantResult> => {
      const tm = performance.now();
      const dir = `${work}/${m.name}`;
      await copyTree(root, files, dir);
      await Deno.writeTextFile(`${dir}/${m.file}`, source);
      const r = { name: m.name, file: m.file, failed: [] as string[] };
      if (m.native) {
        const why = await buildLib(dir);
        if (why !== null) {
          return { ...r, outcome: "error", seconds: secs(tm), detail: `build failed: ${why}` };
        }
      } else if (buildWhy === null) {
        await Deno.mkdir(`${dir}/ffi/native/build`, { recursive: true });
        await Deno.copyFile(`${base}/${LIB}`, `${dir}/${LIB}`);
      }
      const run = await runTests(dir, m.tests, timeoutSeconds);
      if (!opts.keep) await Deno.remove(dir, { recursive: true });
      const seconds = secs(tm);
      if (run.timedOut) {
        return { ...r, outcome: "error", seconds, detail: `timed out after ${timeoutSeconds} s` };
      }
      if (run.code === 0) return { ...r, outcome: "survived", seconds };
      if (run.failed.length === 0) {
        return {
          ...r,
          outcome: "error",
          seconds,
          detail: `exit ${run.code} with no failed test (type check, load or build error):\n${
            tail(run.output)
          }`,
        };
      }
      return { ...r, outcome: "killed", failed: run.failed, seconds };
    };

    const queue = [...runnable];
    const done: MutantResult[] = [];
    await Promise.all(
      Array.from({ length: Math.min(jobs, queue.length) }, async () => {
        for (let next = queue.shift(); next; next = queue.shift()) {
          const res = await one(next);
          done.push(res);
          log(formatResult(res));
        }
      }),
    );
    const order = new Map(all.map((m, i) => [m.name, i]));
    results.push(...done);
    results.sort((a, b) => order.get(a.name)! - order.get(b.name)!);
  } finally {
    if (!opts.keep) await Deno.remove(work, { recursive: true }).catch(() => {});
  }
  const ok = results.every((r) => r.outcome === "killed" || r.outcome === "skipped");
  return { baselineError, baselineSeconds, results, seconds: secs(t0), ok };
}

/** One line per mutant (and the failing tests under a kill). */
export function formatResult(r: MutantResult): string {
  const head = `${r.outcome.toUpperCase().padEnd(15)} ${r.name.padEnd(26)} ${r.file} (${
    r.seconds.toFixed(1)
  } s)`;
  if (r.outcome === "killed") return [head, ...r.failed.map((f) => `    failed: ${f}`)].join("\n");
  return r.detail ? `${head}\n    ${r.detail.replaceAll("\n", "\n    ")}` : head;
}

/** The closing summary line. */
export function summary(rep: MutantsReport): string {
  const count = (o: Outcome) => rep.results.filter((r) => r.outcome === o).length;
  if (rep.baselineError !== null) return `mutants: baseline failed, nothing run`;
  return `mutants: ${count("killed")} killed, ${count("survived")} survived, ${
    count("error")
  } errors, ${count("pattern-missing")} patterns missing, ${count("skipped")} skipped (${
    rep.seconds.toFixed(1)
  } s)`;
}

function usage(msg: string): never {
  console.error(`mutants: ${msg}`);
  console.error(
    "usage: deno task mutants [-- --only=NAME,...] [--jobs=N] [--keep] [--timeout=SECONDS] [--list]",
  );
  Deno.exit(2);
}

if (import.meta.main) {
  const opts: MutantsOptions = {};
  for (const a of Deno.args) {
    const [k, v] = a.includes("=") ? [a.slice(0, a.indexOf("=")), a.slice(a.indexOf("=") + 1)] : [
      a,
      "",
    ];
    if (k === "--only") opts.only = v.split(",").filter((s) => s);
    else if (k === "--jobs" && /^[1-9][0-9]*$/.test(v)) opts.jobs = Number(v);
    else if (k === "--timeout" && /^[1-9][0-9]*$/.test(v)) opts.timeoutSeconds = Number(v);
    else if (k === "--keep" && v === "") opts.keep = true;
    else if (k === "--list" && v === "") {
      for (const m of MUTATIONS) console.log(`${m.name.padEnd(26)} ${m.file}: ${m.description}`);
      Deno.exit(0);
    } else usage(`bad argument ${a}`);
  }
  let rep: MutantsReport;
  try {
    rep = await runMutants(opts);
  } catch (e) {
    if (e instanceof RangeError) usage(e.message);
    throw e;
  }
  console.log(summary(rep));
  Deno.exit(rep.ok ? 0 : 1);
}
