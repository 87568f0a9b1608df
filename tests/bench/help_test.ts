/**
 * Every command answers --help with its own flags and defaults (exit 0), and
 * a command run without a permission it needs says, in one line, which flag
 * to add (no stack trace).
 */

import assert from "node:assert/strict";
import { runExample } from "./_run_example.ts";
import { isPermissionError, permissionLine } from "../../bench/main.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

function run(script: string, args: string[], perms: string[] = []) {
  const r = new Deno.Command(Deno.execPath(), {
    args: ["run", ...perms, `${ROOT}${script}`, ...args],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  const d = new TextDecoder();
  return { code: r.code, out: d.decode(r.stdout), err: d.decode(r.stderr) };
}

const HELP: [string, RegExp[]][] = [
  ["examples/demo.ts", [/--iommu=.*\(default lazy\)/, /--ios=N .*\(default 256\)/]],
  ["examples/prp_walk.ts", [/--iommu=.*\(default strict\)/]],
  ["examples/premap_rules.ts", [/--backend=sim\|real .*\(default sim\)/, /--no-cap-sys-admin/]],
  ["examples/unmap_race.ts", [/--seed=N .*\(default 1\)/]],
  ["bench/bench.ts", [/--iommu=.*\(default lazy,strict\)/, /--html=FILE/]],
  ["bench/ring.ts", [/--batch=N,\.\.\. .*\(default 1,8,32,128\)/, /--repeat=N .*\(default 25\)/]],
  ["bench/fit_costs.ts", [/--check/]],
  ["bench/measure_costs.ts", [/--rounds=N/]],
  ["bench/readme_excerpts.ts", [/--check/, /--only=NAMES/]],
];

for (const [script, want] of HELP) {
  Deno.test(`${script} --help: its flags and defaults, exit 0`, () => {
    const r = run(script, ["--help"], ["-A"]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^usage: /);
    for (const re of want) assert.match(r.out, re);
    assert.doesNotMatch(r.out + r.err, /Unknown option/);
  });
}

Deno.test("demo --help lists none of the bench's own flags", () => {
  const r = runExample("demo.ts", ["--help"]);
  assert.equal(r.code, 0);
  assert.doesNotMatch(r.out, /--json|--svg|--html|--fio/);
});

Deno.test("without a permission it needs, a command prints one line naming the flag", () => {
  for (
    const [script, args, flag] of [
      ["examples/premap_rules.ts", ["--backend=real"], "--allow-ffi"],
      ["examples/demo.ts", ["--backend=real"], "--allow-ffi"],
      [
        "bench/bench.ts",
        ["--ios=4", "--path=dma", "--bs=4k", "--qd=1", "--svg=x.svg"],
        "--allow-read",
      ],
    ] as const
  ) {
    const r = run(script, [...args]);
    assert.notEqual(r.code, 0, script);
    assert.ok(r.err.includes(flag), `${script}: ${r.err}`);
    assert.equal(r.err.trim().split("\n").length, 1, `${script}: ${r.err}`);
    assert.doesNotMatch(r.err, /^ {4}at /m, "no stack trace");
  }
});

Deno.test("permission errors are recognised and named by their flag", () => {
  const e = new Deno.errors.NotCapable(
    'Requires ffi access to "liburing.so.2", run again with the --allow-ffi flag',
  );
  assert.ok(isPermissionError(e));
  assert.ok(!isPermissionError(new Error("EINVAL")));
  assert.match(permissionLine("demo", e), /^demo: needs --allow-ffi \(Requires ffi access/);
});
