import assert from "node:assert/strict";
import { makeRig, rw } from "./helpers.ts";
import { iovIterUbuf } from "../../sim/block/iov_iter.ts";

Deno.test("smoke: ubuf write then read", () => {
  const rig = makeRig(1);
  const buf = rig.kernel.mm.mmap(65536);
  rig.kernel.rng.fill(buf.bytes);
  const n = rw(rig, iovIterUbuf("write", buf.start, 16384), 8192n);
  assert.equal(n, 16384);
  const out = rig.kernel.mm.mmap(65536);
  const m = rw(rig, iovIterUbuf("read", out.start + 512n, 16384), 8192n);
  assert.equal(m, 16384);
  assert.deepEqual(out.bytes.subarray(512, 512 + 16384), buf.bytes.subarray(0, 16384));
});
