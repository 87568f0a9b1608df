/**
 * The mutation check (`deno task mutants`) as part of the suite: every PRP
 * boundary mutation of issue 8 is killed by the tests, and a mutation whose
 * source text has drifted is reported by name, never silently skipped; one
 * that no test catches is reported as a survivor.
 */
import assert from "node:assert/strict";
import {
  applyMutation,
  formatResult,
  type Mutation,
  MUTATIONS,
  runMutants,
  summary,
} from "./mutants.ts";
import { nvmeEmuUnavailable } from "../../ffi/nvme_emu.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

Deno.test("mutants: each mutation's text occurs exactly once in today's sources", () => {
  for (const m of MUTATIONS) {
    const src = Deno.readTextFileSync(`${ROOT}${m.file}`);
    const out = applyMutation(m, src);
    assert.equal(typeof out, "string", typeof out === "string" ? "" : out.missing);
    assert.notEqual(out, src, m.name);
    assert.equal((out as string).length - src.length, m.replace.length - m.find.length, m.name);
  }
});

Deno.test("mutants: a missing or repeated pattern is an error naming the mutation", async () => {
  const m = MUTATIONS.find((x) => x.name === "d-small-pool-lt")!;
  const missing = applyMutation(m, "const small = nprps <= 32;");
  assert.ok(typeof missing !== "string");
  assert.match(missing.missing, /mutation d-small-pool-lt .* occurs 0 times, not once/);
  const twice = applyMutation(m, `${m.find}\n${m.find}`);
  assert.ok(typeof twice !== "string");
  assert.match(twice.missing, /occurs 2 times/);
  // A drifted tree: the run reports the pattern by name and is not ok.
  const root = await Deno.makeTempDir({ prefix: "mutants-drift-" });
  try {
    await Deno.mkdir(`${root}/sim/nvme`, { recursive: true });
    await Deno.writeTextFile(`${root}/sim/nvme/pci.ts`, "const small = nprps <= 32;\n");
    const lines: string[] = [];
    const rep = await runMutants({ root, only: [m.name], log: (l) => lines.push(l) });
    assert.equal(rep.ok, false);
    assert.equal(rep.results.length, 1);
    assert.equal(rep.results[0].outcome, "pattern-missing");
    assert.match(lines.join("\n"), /^PATTERN MISSING d-small-pool-lt: sim\/nvme\/pci.ts/m);
    assert.match(summary(rep), /0 killed, 0 survived, 0 errors, 1 patterns missing/);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
  await assert.rejects(() => runMutants({ only: ["no-such-mutation"] }), RangeError);
});

Deno.test("mutants: a mutation no test catches survives, and the run is not ok", async () => {
  // More host frames for the C host: a change no test can see.
  const harmless: Mutation = {
    name: "harmless",
    description: "one more host frame in CHost",
    file: "tests/device/c_host.ts",
    find: "const DEFAULT_FRAMES = 2048;",
    replace: "const DEFAULT_FRAMES = 2049;",
    tests: ["tests/device/prp_list_test.ts"],
  };
  const rep = await runMutants({ mutations: [harmless], log: () => {} });
  assert.equal(rep.baselineError, null);
  assert.deepEqual(rep.results.map((r) => [r.name, r.outcome]), [["harmless", "survived"]]);
  assert.equal(rep.ok, false);
  assert.match(summary(rep), /0 killed, 1 survived/);
});

const nativeWhy = nvmeEmuUnavailable("plain");
if (nativeWhy !== null) console.log(`SKIP the C controller's mutation: ${nativeWhy}`);

Deno.test("mutants: every PRP boundary mutation is killed by a test (deno task mutants)", async () => {
  const rep = await runMutants({ skipNative: nativeWhy, log: () => {} });
  for (const r of rep.results) console.log(formatResult(r));
  console.log(summary(rep));
  assert.equal(rep.baselineError, null, rep.baselineError ?? "");
  assert.equal(rep.results.length, MUTATIONS.length);
  for (const r of rep.results) {
    if (r.outcome === "skipped") continue;
    assert.equal(r.outcome, "killed", formatResult(r));
    assert.ok(r.failed.length > 0);
  }
  assert.equal(rep.ok, true);
});
