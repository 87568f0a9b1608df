/**
 * What a walk-through as a new user found (issue 9, point 6) and the report
 * files: outputs land where the user ran the task, a bad output path is
 * refused before anything runs, stray outputs are ignored by git, sizes in
 * fio's units, --size, repeated list values, the qd-above-ios warning,
 * per-command --help, and the vega-lite charts showing every record.
 */

import assert from "node:assert/strict";
import {
  checkOutput,
  dedupe,
  parseRunArgs,
  parseSize,
  resolveOutput,
  type RunOptions,
  usage,
  warnings,
} from "../../bench/cli.ts";
import { sizeBytes, sizeLabel } from "../../bench/size.ts";
import { EVENT_STAGE, modelLinesSpec, reportSpec, stageStackSpec } from "../../bench/charts.ts";
import { COST_TABLE } from "../../bench/cost_model.ts";
import { openTestbed } from "../../mod.ts";
import { runWorkload, type WorkloadRecord } from "../../bench/workload.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const BENCH = `${ROOT}bench/bench.ts`;
const SMALL = ["--path=dma", "--bs=4k", "--qd=1", "--ios=8", "--iommu=lazy"];

function bench(args: string[], env: Record<string, string> = {}) {
  const r = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", BENCH, ...args],
    cwd: ROOT,
    env: { NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  const d = new TextDecoder();
  return { code: r.code, out: d.decode(r.stdout), err: d.decode(r.stderr) };
}

Deno.test("bench: relative --json/--svg/--html land where the user ran deno task (INIT_CWD)", () => {
  const dir = Deno.makeTempDirSync({ prefix: "premap-initcwd-" });
  try {
    const r = bench([...SMALL, "--json=r.json", "--svg=r.svg", "--html=r.html"], {
      INIT_CWD: dir,
    });
    assert.equal(r.code, 0, r.err);
    for (const f of ["r.json", "r.svg", "r.html"]) {
      assert.ok(Deno.statSync(`${dir}/${f}`).size > 0, f);
      assert.throws(() => Deno.statSync(`${ROOT}${f}`), `${f} written into the repository`);
    }
    const svg = Deno.readTextFileSync(`${dir}/r.svg`);
    assert.match(svg, /^<svg[^>]*>\s*<rect[^>]*fill="white"/);
    const html = Deno.readTextFileSync(`${dir}/r.html`);
    assert.match(html, /<svg/);
    assert.match(html, /<h2>records<\/h2>/);
    assert.match(html, /<h2>published against the kernel cost model<\/h2>/);
    assert.equal(JSON.parse(Deno.readTextFileSync(`${dir}/r.json`)).records.length, 1);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("bench: an output in a missing directory exits 2 naming the flag, before any run", () => {
  for (const flag of ["json", "svg", "html"]) {
    const t0 = performance.now();
    const r = bench([...SMALL, `--${flag}=/nonexistent-premap-dir/x.${flag}`]);
    assert.equal(r.code, 2);
    assert.match(r.err, new RegExp(`--${flag}=/nonexistent-premap-dir/x\\.${flag}: directory`));
    assert.equal(r.out, "", "nothing ran");
    assert.ok(performance.now() - t0 < 60_000);
  }
});

Deno.test("outputs: resolveOutput and checkOutput", () => {
  assert.equal(resolveOutput("a/b.json", "/home/u/"), "/home/u/a/b.json");
  assert.equal(resolveOutput("/abs.json", "/home/u"), "/abs.json");
  assert.equal(resolveOutput("x.json", null), "x.json");
  const dir = Deno.makeTempDirSync();
  try {
    assert.equal(checkOutput("json", `${dir}/new.json`), null);
    assert.throws(() => Deno.statSync(`${dir}/new.json`), "the check leaves no file");
    Deno.writeTextFileSync(`${dir}/keep.json`, "old");
    assert.equal(checkOutput("json", `${dir}/keep.json`), null);
    assert.equal(Deno.readTextFileSync(`${dir}/keep.json`), "old", "nothing truncated");
    assert.match(checkOutput("svg", `${dir}/keep.json/x.svg`)!, /--svg=.*is not a directory/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("git ignores stray bench outputs in the repository root", () => {
  const r = new Deno.Command("git", {
    args: ["check-ignore", "out.json", "out.svg", "out.html"],
    cwd: ROOT,
    stdout: "piped",
  }).outputSync();
  assert.equal(r.code, 0);
  assert.deepEqual(new TextDecoder().decode(r.stdout).trim().split("\n"), [
    "out.json",
    "out.svg",
    "out.html",
  ]);
  const tracked = new Deno.Command("git", {
    args: ["check-ignore", "deno.json"],
    cwd: ROOT,
  }).outputSync();
  assert.equal(tracked.code, 1, "deno.json is not ignored");
});

const D: RunOptions = {
  backend: "sim",
  paths: ["none", "bvec", "dma"],
  bs: [4096],
  qd: [1],
  rw: ["randread"],
  iommu: ["lazy"],
  ios: 100,
  seed: 1,
};

Deno.test("cli: sizes in fio's units both ways (1m, 1g), --size, repeated values dropped", () => {
  assert.equal(sizeLabel(1 << 20), "1m");
  assert.equal(sizeLabel(1 << 30), "1g");
  assert.equal(sizeLabel(65536), "64k");
  assert.equal(sizeLabel(3 << 20), "3m");
  assert.equal(sizeBytes("1g"), 1 << 30);
  assert.equal(parseSize("bs", "1G"), 1 << 30);
  assert.equal(parseSize("bs", "2m"), 2 << 20);
  assert.throws(() => parseSize("bs", "1t"), /--bs: '1t' is not a size/);
  const o = parseRunArgs(["--bs=2m", "--size=1g", "--qd=16,1,16", "--bs=4k,4k"], D);
  assert.equal(o.sizeBytes, 1 << 30);
  assert.deepEqual(o.qd, [16, 1]);
  assert.deepEqual(o.bs, [4096]);
  assert.deepEqual(parseRunArgs(["--path=dma,dma,none", "--iommu=lazy,lazy"], D).paths, [
    "dma",
    "none",
  ]);
  assert.deepEqual(dedupe([3, 1, 3]), [3, 1]);
  assert.throws(() => parseRunArgs(["--size=2g"], D), /--size: 2g is larger than the namespace/);
  assert.throws(() => parseRunArgs(["--size=12345"], D), /--size: 12345 must be/);
});

Deno.test("bench: --bs=2m --qd=16 runs with --size=1g, and needs it", () => {
  const small = bench(["--path=dma", "--bs=2m", "--qd=16", "--ios=16", "--iommu=lazy"]);
  assert.equal(small.code, 1);
  assert.match(small.out, /not run: .*bs=2097152 qd=16 dma: region 67108864 B/);
  const big = bench(["--path=dma", "--bs=2m", "--qd=16", "--ios=16", "--iommu=lazy", "--size=1g"]);
  assert.equal(big.code, 0, big.err + big.out);
  assert.match(big.out, / 2m +16 +dma +16 /);
});

Deno.test("cli: --qd above --ios is warned about, not refused", () => {
  assert.deepEqual(warnings({ ...D, qd: [1, 16], ios: 100 }), []);
  const w = warnings({ ...D, qd: [64], ios: 10 });
  assert.equal(w.length, 1);
  assert.match(w[0], /--qd=64 is above --ios=10/);
  const r = bench([...SMALL.filter((a) => !a.startsWith("--qd")), "--qd=16", "--ios=8"]);
  assert.match(r.err, /bench: warning: --qd=16 is above --ios=8/);
});

Deno.test("cli: each command's --help lists its own flags with their defaults", () => {
  const demo = usage("demo", { ...D, iommu: ["lazy"], qd: [4] });
  assert.match(demo, /--iommu=\S+ +.*\(default lazy\)/);
  assert.match(demo, /--qd=N,\.\.\. +.*\(default 4\)/);
  assert.doesNotMatch(demo, /--json|--svg|--html|--fio/);
  const b = usage("bench", D);
  for (const f of ["--json", "--svg", "--html", "--fio", "--size", "--iodepth_batch"]) {
    assert.ok(b.includes(f), f);
  }
  const r = bench(["--help"]);
  assert.equal(r.code, 0);
  assert.match(r.out, /usage: deno task bench/);
});

function records(): WorkloadRecord[] {
  using tb = openTestbed({ backend: "sim", seed: 1, iommu: "lazy", dmaDebug: false });
  const out: WorkloadRecord[] = [];
  for (const bs of [4096, 65536]) {
    for (const path of ["none", "bvec", "dma"] as const) {
      for (const qd of [1, 4]) {
        out.push(
          runWorkload(
            tb,
            { path, bs, qd, rw: "randread", ios: 16, seed: 1, verify: false },
            "lazy",
          ),
        );
      }
    }
  }
  return out;
}

Deno.test("charts: every record is a point of the model lines, published cells are reference points", () => {
  const recs = records();
  const spec = modelLinesSpec(recs, "slat") as { data: { values: Record<string, unknown>[] } };
  const model = spec.data.values.filter((v) => v.source === "model");
  assert.equal(model.length, recs.length);
  for (const r of recs) {
    assert.ok(
      model.some((v) => v.path === r.path && v.bsBytes === r.bs && v.qd === `QD${r.qd}`),
      `${r.path} ${r.bs} ${r.qd}`,
    );
  }
  const pub = spec.data.values.filter((v) => v.source !== "model");
  // Published cells exist at QD1 and QD16 for 4k and 64k; this run has QD1 only of those.
  assert.equal(pub.length, 6);
  const stages = stageStackSpec(recs) as { data: { values: { rec: number; ns: number }[] } };
  assert.deepEqual(new Set(stages.data.values.map((v) => v.rec)).size, recs.length);
  const full = reportSpec(recs) as { vconcat: unknown[]; config: { background: string } };
  assert.equal(full.vconcat.length, 5);
  assert.equal(full.config.background, "white");
});

Deno.test("charts: every priced event has a stage of the stacked bars", () => {
  for (const e of Object.keys(COST_TABLE.events)) assert.ok(e in EVENT_STAGE, e);
});
