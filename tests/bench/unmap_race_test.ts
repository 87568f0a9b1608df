/**
 * examples/unmap_race.ts, run as a user runs it (sim, no permissions): UNMAP_BUFFERS with a
 * premapped I/O in flight, v2 (as posted) against hardened, IOMMU strict and off.
 */

import assert from "node:assert/strict";
import { runExample } from "./_run_example.ts";

/** The table row of one case: its cells, split on " | ". */
function row(out: string, variant: string, iommu: string, io: string): string[] {
  const re = new RegExp(`^${variant} +\\| ${iommu} +\\| ${io} +\\|.*$`, "m");
  const m = out.match(re);
  assert.ok(m, `no row ${variant}/${iommu}/${io} in:\n${out}`);
  return m[0].split("|").map((c) => c.trim());
}

// Columns: variant, iommu, I/O, mapped after UNMAP, CQE res, NVMe status, retries, IOMMU faults,
// dev errors, checker reports, bytes via unmapped IOVAs, data moved (pages).
const RES = 4, STATUS = 5, FAULTS = 7, REPORTS = 9, UNMAPPED = 10, MOVED = 11;

Deno.test("examples/unmap_race.ts: v2 unmaps under the I/O, hardened waits for it", () => {
  const { code, out, err } = runExample("unmap_race.ts");
  assert.equal(code, 0, err);
  for (const io of ["READ_FIXED 16k", "WRITE_FIXED 16k"]) {
    // v2, strict: the controller's DMA faults in the IOMMU; -EIO, nothing moved, no report.
    const strict = row(out, "v2", "strict", io);
    assert.equal(strict[RES], "-5 (EIO)");
    assert.equal(strict[STATUS], "Data Transfer Error");
    assert.ok(Number(strict[FAULTS]) > 0, strict.join(" | "));
    assert.equal(strict[REPORTS], "0");
    assert.equal(strict[UNMAPPED], "0");
    assert.equal(strict[MOVED], "0/4");
    // v2, off, 16k: the PRP list fetch from the freed flat array is refused (a freed frame is
    // gone from the sim's bus), so the command fails before any data moves and the checker
    // counts nothing. (A finding: real RAM would have been read; see the example's notes.)
    const off = row(out, "v2", "off", io);
    assert.equal(off[RES], "-5 (EIO)");
    assert.equal(off[STATUS], "Data Transfer Error");
    assert.equal(off[FAULTS], "0");
    assert.equal(off[UNMAPPED], "0");
    assert.equal(off[MOVED], "0/4");
    // hardened: the unmap waits; full length, no fault, no report, in both modes.
    for (const iommu of ["strict", "off"]) {
      const h = row(out, "hardened", iommu, io);
      assert.equal(h[RES], "16384");
      assert.equal(h[FAULTS], "0");
      assert.equal(h[REPORTS], "0");
      assert.equal(h[UNMAPPED], "0");
      assert.equal(h[MOVED], "4/4");
    }
  }
  // v2, off, 8k (no PRP list): the data moves through unmapped DMA addresses, the command
  // succeeds, and only the checker sees it, byte for byte.
  for (const [io, word] of [["READ_FIXED 8k", "write to"], ["WRITE_FIXED 8k", "read from"]]) {
    const small = row(out, "v2", "off", io);
    assert.equal(small[RES], "8192");
    assert.equal(small[UNMAPPED], "8192");
    assert.ok(Number(small[REPORTS]) > 0);
    assert.equal(small[MOVED], "2/2");
    assert.match(out, new RegExp(`DMA-API: nvme0: device ${word} unmapped DMA address`));
  }
});

Deno.test("examples/unmap_race.ts: a bad flag exits 2 naming it", () => {
  const bad = runExample("unmap_race.ts", ["--backend=nope"]);
  assert.equal(bad.code, 2);
  assert.match(bad.err, /--backend/);
});
