/**
 * The examples run as a user runs them (subprocesses, no permissions for sim)
 * and print what their doc comments promise.
 */

import assert from "node:assert/strict";
import { runExample } from "./_run_example.ts";

const run = runExample;

Deno.test("examples/prp_walk.ts: PRP2 into the flat array, then a pool list across its page", () => {
  const { code, out, err } = run("prp_walk.ts");
  assert.equal(code, 0, err);
  assert.equal((out.match(/data ok/g) ?? []).length, 4, out);
  assert.match(
    out,
    /64k at buffer offset 0:[^\n]*\n[^\n]*\n[^\n]*\n {2}PRP2 points into the flat array/,
  );
  assert.match(out, /PRP2 is a PRP list from the pool \(1 block\(s\)\)/);
  const bad = run("prp_walk.ts", ["--backend=real"]);
  assert.equal(bad.code, 2);
  assert.match(bad.err, /--backend=real/);
});

Deno.test("examples/premap_rules.ts: each rule's errno on sim, EPERM without the capability", () => {
  const { code, out, err } = run("premap_rules.ts");
  assert.equal(code, 0, err);
  for (
    const line of [
      /NULL argument +-> -22 \(EINVAL\)/,
      /nr_args = 2 +-> -22 \(EINVAL\)/,
      /flags = 1 +-> -22 \(EINVAL\)/,
      /slot 3 is empty +-> -9 \(EBADF\)/,
      /without O_DIRECT +-> -95 \(EOPNOTSUPP\)/,
      /\(no dma_map\) +-> -22 \(EINVAL\)/,
      /clamped to 2 +-> 0/,
      /map buffer 1 again +-> -16 \(EBUSY\)/,
      /old mapping is gone\) +-> 0/,
      /premapped buffer +-> 8192/,
      /unmap naming slot 3 \(empty\): fd is only range-checked +-> 0$/m,
      /map it again \(the unmap undid it\) +-> 0$/m,
    ]
  ) assert.match(out, line);
  const noCap = run("premap_rules.ts", ["--no-cap-sys-admin"]);
  assert.equal(noCap.code, 0, noCap.err);
  // The dispatch's checks come before the capability check; everything after it is -EPERM.
  assert.match(noCap.out, /NULL argument +-> -22 \(EINVAL\)/);
  assert.match(noCap.out, /nr_args = 2 +-> -22 \(EINVAL\)/);
  assert.match(noCap.out, /flags = 1 +-> -1 \(EPERM\)/);
  assert.match(noCap.out, /slot 3 is empty +-> -1 \(EPERM\)/);
});
