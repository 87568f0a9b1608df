/**
 * The TypeScript NVMe controller and the C one (libnvme_emu, inline mode) fed
 * the same seeded command stream must agree on every completion, interrupt,
 * register, host byte and media byte. CI runs at least 100,000 commands under
 * AddressSanitizer + UBSan in a child `deno` (the ASan runtime must be the
 * first library loaded, so it cannot be this process), plus a short
 * in-process run on the plain library and a TS-vs-TS run of the harness. Even
 * seeds put the C side's namespaces in temporary files (its io_uring media
 * path, O_DIRECT or bounced), odd seeds keep them in memory.
 *
 * Replay one seed: `DEVDIFF_SEED=N [DEVDIFF_CMDS=M] deno test -A tests/device/differential_test.ts`.
 * Longer runs: `deno run -A tests/device/differential_main.ts --cmds=N --seed=S --seeds=K`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { NvmeEmu, nvmeEmuLibraryPath, nvmeEmuUnavailable } from "../../ffi/nvme_emu.ts";
import { DiffMismatch, runDifferential } from "./differential.ts";

const MAIN = new URL("./differential_main.ts", import.meta.url).pathname;
const replaySeed = Deno.env.get("DEVDIFF_SEED");
const replayCmds = Number(Deno.env.get("DEVDIFF_CMDS") ?? "20000");

/** CI under the sanitizers: seeds x commands >= 100,000. */
const ASAN_SEEDS = 5;
const ASAN_CMDS = 20_000;

const plainWhy = nvmeEmuUnavailable("plain");
if (plainWhy !== null) console.log(`SKIP differential vs C: ${plainWhy}`);

function runtime(name: string): string | null {
  try {
    const out = new Deno.Command("gcc", { args: [`-print-file-name=${name}`], stdout: "piped" })
      .outputSync();
    const p = new TextDecoder().decode(out.stdout).trim();
    if (!p.includes("/")) return null;
    Deno.statSync(p);
    return p;
  } catch {
    return null;
  }
}

function asanSetup(): { why: string | null; preload: string } {
  if (plainWhy !== null) return { why: plainWhy, preload: "" };
  try {
    Deno.statSync(nvmeEmuLibraryPath("asan"));
  } catch {
    return { why: `${nvmeEmuLibraryPath("asan")} not built (deno task build)`, preload: "" };
  }
  const asan = runtime("libasan.so");
  const ubsan = runtime("libubsan.so");
  if (asan === null || ubsan === null) {
    return { why: "gcc -print-file-name finds no libasan.so/libubsan.so", preload: "" };
  }
  return { why: null, preload: `${asan}:${ubsan}` };
}
const asan = asanSetup();
if (asan.why !== null) console.log(`SKIP differential under ASan: ${asan.why}`);

function report(e: unknown): never {
  if (e instanceof DiffMismatch) console.error(e.message);
  throw e;
}

Deno.test("differential harness: the TS controller against itself agrees (harness self-check)", () => {
  try {
    const s = runDifferential({ seed: 101, cmds: 3000, variant: "ts", strictCounters: true });
    assert.ok(s.cmds >= 3000);
    assert.ok((s.statuses["Successful Completion (0x0/0x0)"] ?? 0) > s.cmds / 3);
  } catch (e) {
    report(e);
  }
});

Deno.test({
  name: "differential: TS controller vs libnvme_emu.so in process (short run)",
  ignore: plainWhy !== null,
  fn: () => {
    const seeds = replaySeed !== undefined ? [Number(replaySeed)] : [11, 12];
    const cmds = replaySeed !== undefined ? replayCmds : 5000;
    for (const seed of seeds) {
      try {
        const s = runDifferential({
          seed,
          cmds,
          variant: "plain",
          strictCounters: true,
          fileMedia: seed % 2 === 0,
        });
        if (s.counterDiffs.length) {
          console.log(`seed ${seed} counters differ:\n${s.counterDiffs.join("\n")}`);
        }
      } catch (e) {
        report(e);
      }
      assert.equal(NvmeEmu.ledger("plain"), 0, "nvme_emu_ledger() after destroy");
    }
  },
});

Deno.test({
  name: "differential under ASan+UBSan: >= 100,000 commands, clean child, ledger 0",
  ignore: asan.why !== null,
  fn: async () => {
    const args = replaySeed !== undefined
      ? [`--seed=${replaySeed}`, `--cmds=${replayCmds}`, "--seeds=1"]
      : ["--seed=1", `--seeds=${ASAN_SEEDS}`, `--cmds=${ASAN_CMDS}`];
    args.push("--strict-counters", "--file-media=even");
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", MAIN, "--variant=asan", ...args],
      env: {
        LD_PRELOAD: asan.preload,
        ASAN_OPTIONS: "halt_on_error=1:detect_leaks=0",
        UBSAN_OPTIONS: "halt_on_error=1:print_stacktrace=1",
      },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    const stderr = new TextDecoder().decode(out.stderr);
    if (out.code !== 0 || stderr.trim() !== "") {
      console.error(stderr.slice(0, 20000));
      console.error(stdout.slice(-4000));
    }
    assert.doesNotMatch(stderr, /AddressSanitizer|UndefinedBehaviorSanitizer|runtime error:/);
    assert.equal(out.code, 0, "child exit status");
    assert.doesNotMatch(stdout, /^SKIP/m);
    assert.match(stdout, /^LEDGER 0$/m);
    const m = stdout.match(/^(\d+) commands in/m);
    assert.ok(m, "child reports its command count");
    if (replaySeed === undefined) assert.ok(Number(m[1]) >= 100_000, `${m[1]} commands`);
    console.log(stdout.slice(stdout.indexOf(m[0])));
  },
});
