/**
 * The progress bar: drawn with an ETA on a terminal, nothing when piped.
 */

import assert from "node:assert/strict";
import { clock, Progress, progressLine, type ProgressSink } from "../../bench/progress.ts";

function sink(isTerminal: boolean): ProgressSink & { out: string[] } {
  const out: string[] = [];
  return { isTerminal, out, write: (s) => out.push(s) };
}

Deno.test("progress: the line shows the bar, the count, the step and the ETA", () => {
  assert.equal(clock(31_400), "0:31");
  assert.equal(clock(3_725_000), "1:02:05");
  assert.equal(
    progressLine(12, 48, "4k qd=1 dma lazy", 12_000),
    "[######------------------] 12/48  4k qd=1 dma lazy  ETA 0:36",
  );
  assert.equal(progressLine(0, 4, "first", 0), "[------------------------] 0/4  first");
});

Deno.test("progress: a terminal gets the bar redrawn in place and cleared at the end", () => {
  let t = 0;
  const s = sink(true);
  const p = new Progress(2, s, () => t);
  p.start("a");
  t = 1000;
  p.step();
  p.start("b");
  p.step();
  p.end();
  assert.equal(s.out.length, 3);
  assert.ok(s.out[0].startsWith("\r\x1b[2K"), "redrawn in place");
  assert.match(s.out[0].slice(5), /^\[-+\] 0\/2 {2}a$/);
  assert.match(s.out[1], /1\/2 {2}b {2}ETA 0:01$/);
  assert.equal(s.out[2], "\r\x1b[2K");
});

Deno.test("progress: nothing at all when stderr is not a terminal", () => {
  const s = sink(false);
  const p = new Progress(3, s);
  p.start("a");
  p.step();
  p.end();
  assert.deepEqual(s.out, []);
  const r = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../../bench/bench.ts", import.meta.url).pathname]
      .concat(["--path=dma", "--bs=4k", "--qd=1", "--ios=8", "--iommu=lazy"]),
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  assert.equal(r.code, 0);
  const err = new TextDecoder().decode(r.stderr);
  assert.doesNotMatch(err, /ETA|\[#/);
  assert.ok(!err.includes("\x1b[2K"), "no terminal control sequence");
});
