/**
 * Build every C source in `ffi/native/` into `ffi/native/build/`.
 *
 * Each `*.c` becomes a program when it defines `main`, else a shared library
 * `lib<name>.so`. Every target is built twice: plain (`-O2`) and with
 * AddressSanitizer + UBSan (suffix `-asan`). A target is rebuilt only when its
 * source (or this script) is newer than the output. Flags are strict:
 * `-std=c11 -O2 -Wall -Wextra -Werror`.
 *
 * When gcc or `/usr/include/liburing.h` is missing, prints why and exits 0 so
 * that `deno task test` still runs the simulation tests.
 *
 * @example
 * ```sh
 * deno run --allow-read --allow-write --allow-run --allow-env ffi/native/build.ts
 * ```
 *
 * @module
 */

const NATIVE_DIR = new URL(".", import.meta.url).pathname;
const BUILD_DIR = `${NATIVE_DIR}build/`;
const LIBURING_HEADER = "/usr/include/liburing.h";
const BASE_FLAGS = ["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-D_GNU_SOURCE"];
const ASAN_FLAGS = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g"];
/** Limit: a source file larger than this is not a hand-written C file of ours. */
const MAX_SOURCE_BYTES = 4 << 20;

/** One output to produce. */
export interface Target {
  /** Source path. */
  src: string;
  /** Output path. */
  out: string;
  /** Program or shared library. */
  kind: "program" | "library";
  /** Sanitizer variant. */
  asan: boolean;
}

/** True when the C source defines a `main` function. */
export function hasMain(source: string): boolean {
  return /^\s*(?:int|void)\s+main\s*\(/m.test(source);
}

/** The targets for one source file (plain and `-asan`). */
export function targetsFor(name: string, source: string, buildDir = BUILD_DIR): Target[] {
  const stem = name.replace(/\.c$/, "");
  const kind = hasMain(source) ? "program" : "library";
  const src = `${NATIVE_DIR}${name}`;
  return [false, true].map((asan) => {
    const suffix = asan ? "-asan" : "";
    const out = kind === "program"
      ? `${buildDir}${stem}${suffix}`
      : `${buildDir}lib${stem}${suffix}.so`;
    return { src, out, kind, asan };
  });
}

/** gcc argument vector for a target. */
export function gccArgs(t: Target): string[] {
  const args = [...BASE_FLAGS, ...(t.asan ? ASAN_FLAGS : [])];
  if (t.kind === "library") args.push("-fPIC", "-shared");
  args.push("-o", t.out, t.src, "-luring", "-lpthread");
  return args;
}

function mtimeMs(path: string): number | null {
  try {
    return Deno.statSync(path).mtime?.getTime() ?? null;
  } catch {
    return null;
  }
}

function which(cmd: string): boolean {
  for (const dir of (Deno.env.get("PATH") ?? "/usr/bin:/bin").split(":")) {
    if (mtimeMs(`${dir}/${cmd}`) !== null) return true;
  }
  return false;
}

/** Why the native build cannot run here, or null when it can. */
export function skipReason(): string | null {
  if (!which("gcc")) return "gcc not found on PATH";
  if (mtimeMs(LIBURING_HEADER) === null) return `${LIBURING_HEADER} missing (install liburing-dev)`;
  return null;
}

/** Build everything that is out of date; returns the number of failures. */
export async function build(): Promise<number> {
  Deno.mkdirSync(BUILD_DIR, { recursive: true });
  const scriptTime = mtimeMs(new URL(import.meta.url).pathname) ?? 0;
  const sources = [...Deno.readDirSync(NATIVE_DIR)]
    .filter((e) => e.isFile && e.name.endsWith(".c"))
    .map((e) => e.name)
    .sort();
  // Headers and included fragments: a change to any rebuilds every target.
  const includeTime = [...Deno.readDirSync(NATIVE_DIR)]
    .filter((e) => e.isFile && (e.name.endsWith(".h") || e.name.endsWith(".inc")))
    .reduce((m, e) => Math.max(m, mtimeMs(`${NATIVE_DIR}${e.name}`) ?? 0), 0);
  let failures = 0;
  for (const name of sources) {
    const path = `${NATIVE_DIR}${name}`;
    const size = Deno.statSync(path).size;
    if (size > MAX_SOURCE_BYTES) throw new Error(`${name}: ${size} bytes exceeds the limit`);
    const text = Deno.readTextFileSync(path);
    for (const t of targetsFor(name, text)) {
      const srcTime = Math.max(mtimeMs(t.src) ?? 0, scriptTime, includeTime);
      const outTime = mtimeMs(t.out);
      if (outTime !== null && outTime >= srcTime) continue;
      const args = gccArgs(t);
      const r = await new Deno.Command("gcc", { args, stdout: "inherit", stderr: "inherit" })
        .output();
      const rel = t.out.slice(NATIVE_DIR.length);
      if (r.success) console.log(`built ${rel}`);
      else {
        failures++;
        console.error(`FAILED ${rel}: gcc ${args.join(" ")}`);
      }
    }
  }
  return failures;
}

if (import.meta.main) {
  const reason = skipReason();
  if (reason !== null) {
    console.log(`ffi/native build skipped: ${reason}`);
    Deno.exit(0);
  }
  const failures = await build();
  if (failures > 0) Deno.exit(1);
}
