/**
 * examples/unmap_race.ts, run as a user runs it (sim, no permissions): UNMAP_BUFFERS with a
 * premapped I/O in flight, v2 (as posted) against hardened, IOMMU strict and off.
 */

import assert from "node:assert/strict";
import { runExample } from "./_run_example.ts";
import { realNvmeUnavailable } from "../../mod.ts";

/** The table row of one case: its cells, split on " | ". */
function row(out: string, variant: string, iommu: string, io: string): string[] {
  const re = new RegExp(`^${variant} +\\| ${iommu} +\\| ${io} +\\|.*$`, "m");
  const m = out.match(re);
  assert.ok(m, `no row ${variant}/${iommu}/${io} in:\n${out}`);
  return m[0].split("|").map((c) => c.trim());
}

// Columns: variant, iommu, I/O, mapped after UNMAP, CQE res, NVMe status, retries, IOMMU faults,
// dev errors, checker reports, KASAN, bytes via unmapped IOVAs, data moved (pages).
const RES = 4, STATUS = 5, FAULTS = 7, REPORTS = 9, KASAN = 10, UNMAPPED = 11, MOVED = 12;

Deno.test("examples/unmap_race.ts: v2 unmaps under the I/O, hardened waits for it", () => {
  const { code, out, err } = runExample("unmap_race.ts");
  assert.equal(code, 0, err);
  for (const io of ["READ_FIXED 16k", "WRITE_FIXED 16k"]) {
    for (const v of ["v2", "v3"]) {
      // strict: the controller's DMA faults in the IOMMU; the completion and the retry use
      // the freed mapping (two KASAN reports); -EIO, nothing moved, no DMA report.
      const strict = row(out, v, "strict", io);
      assert.equal(strict[RES], "-5 (EIO)");
      assert.equal(strict[STATUS], "Data Transfer Error");
      assert.ok(Number(strict[FAULTS]) > 0, strict.join(" | "));
      assert.equal(strict[REPORTS], "0");
      assert.equal(strict[KASAN], "2");
      assert.equal(strict[UNMAPPED], "0");
      assert.equal(strict[MOVED], "0/4");
      // off, 16k: the PRP list is read from the freed, poisoned array (24 bytes: three
      // entries); poison is no PRP, so the command fails with DNR before data moves.
      const off = row(out, v, "off", io);
      assert.equal(off[RES], "-5 (EIO)");
      assert.equal(off[STATUS], "PRP Offset Invalid, DNR");
      assert.equal(off[FAULTS], "0");
      assert.equal(off[REPORTS], "1");
      assert.equal(off[UNMAPPED], "24");
      assert.equal(off[KASAN], "1"); // the completion's nvme_unmap_data
      assert.equal(off[MOVED], "0/4");
    }
    // hardened: the unmap waits; full length, no fault, no report, in both modes.
    for (const iommu of ["strict", "off"]) {
      const h = row(out, "hardened", iommu, io);
      assert.equal(h[RES], "16384");
      assert.equal(h[FAULTS], "0");
      assert.equal(h[REPORTS], "0");
      assert.equal(h[KASAN], "0");
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
  assert.match(
    out,
    /device read from unmapped DMA address .*\+24\] \[unmapped bytes=24\] \[unmapped: was coherent/,
  );
});

Deno.test("examples/unmap_race.ts: a bad flag exits 2 naming it", () => {
  const bad = runExample("unmap_race.ts", ["--backend=nope"]);
  assert.equal(bad.code, 2);
  assert.match(bad.err, /--backend/);
});

const realWhy = realNvmeUnavailable();

Deno.test({
  name:
    "examples/unmap_race.ts --backend=real: the C device's outcomes and checker counts equal sim's",
  ignore: realWhy !== null,
  fn: () => {
    const sim = runExample("unmap_race.ts");
    const real = runExample("unmap_race.ts", ["--backend=real"], ["--allow-all"]);
    const out = real.out;
    assert.equal(real.code, 0, real.err);
    const cases: [string, string, string][] = [];
    for (const v of ["v2", "v3", "hardened"]) {
      for (const iommu of ["strict", "off"]) {
        for (const io of ["READ_FIXED 16k", "WRITE_FIXED 16k"]) cases.push([v, iommu, io]);
      }
    }
    cases.push(["v2", "off", "READ_FIXED 8k"], ["v2", "off", "WRITE_FIXED 8k"]);
    for (const [v, iommu, io] of cases) {
      const a = row(sim.out, v, iommu, io), b = row(out, v, iommu, io);
      // The DMA-API checker hears the C device through its access trace: same reports.
      for (const col of [RES, FAULTS, REPORTS, KASAN, UNMAPPED]) {
        assert.equal(b[col], a[col], `${v}/${iommu}/${io} column ${col}`);
      }
    }
  },
});
