/**
 * The README's main command, run as a user runs it (a subprocess with no
 * permissions): it must succeed, verify every byte, and show dma's per-I/O
 * DMA work at zero while bvec's grows with size. And CLI misuse exits 2 with
 * the flag named.
 */

import assert from "node:assert/strict";
import { runExample } from "./_run_example.ts";

function runDemo(args: string[]) {
  return runExample("demo.ts", args);
}

Deno.test("demo: sim backend, no permissions, verified, dma flat", () => {
  const { code, out, err } = runDemo(["--ios=32", "--qd=2"]);
  assert.equal(code, 0, err);
  assert.match(out, /backend=sim premap=v2 iommu=lazy/);
  assert.match(
    out,
    /randwrite qd=2: every completion full-length and every byte read verified: yes/,
  );
  assert.match(
    out,
    /randread qd=2: every completion full-length and every byte read verified: yes/,
  );
  const row = out.split("\n").find((l) => l.startsWith("IOMMU PTE writes+clears"))!;
  // Columns: 4k none bvec dma, 16k none bvec dma, 64k none bvec dma.
  const cells = row.split("|")[1].trim().split(/\s+/).map((x) => Number(x.replace(/,/g, "")));
  assert.deepEqual([cells[2], cells[5], cells[8]], [0, 0, 0]);
  assert.ok(cells[7] > cells[4] && cells[4] > cells[1], `bvec grows: ${row}`);
  assert.match(out, /dma skipped what bvec did/);
  assert.match(out, /64k: [^;]*PRP entries written 15 -> 0/);
});

Deno.test("demo: flags only the bench uses are refused by name", () => {
  for (const [flag, re] of [["--json=/tmp/x.json", /--json/], ["--svg=/tmp/x.svg", /--svg/]]) {
    const r = runDemo([flag as string]);
    assert.equal(r.code, 2);
    assert.match(r.err, re as RegExp);
  }
});

Deno.test("demo: an unknown flag or a bad value exits 2 naming it", () => {
  const a = runDemo(["--colour"]);
  assert.equal(a.code, 2);
  assert.match(a.err, /colour/);
  const b = runDemo(["--iommu=fast"]);
  assert.equal(b.code, 2);
  assert.match(b.err, /--iommu: 'fast'/);
});

Deno.test("demo: the posted v2 under bounce buffering fails verification (exit 1), hardened passes", () => {
  const args = ["--iommu=bounce", "--bs=64k", "--rw=randread", "--path=dma", "--ios=16"];
  const v2 = runDemo([...args, "--premap=v2"]);
  assert.equal(v2.code, 1, v2.err);
  assert.match(v2.out, /premap=v2 iommu=bounce/);
  assert.match(v2.out, /every byte read verified: NO\n {2}\(v2 is the posted code/);
  // The read-side sync loop misses the last of the 16 pages: 15 pages bounced per I/O.
  assert.match(v2.out, /bytes bounced \(swiotlb\) \|.* 61,440\n/);
  const h = runDemo([...args, "--premap=hardened"]);
  assert.equal(h.code, 0, h.err);
  assert.match(h.out, /every byte read verified: yes/);
  assert.match(h.out, /bytes bounced \(swiotlb\) \|.* 65,536\n/);
});
