/**
 * A PRP list that exactly fills its page: the last slot is the transfer's
 * last entry, not a pointer to another list page (NVMe Base 2.0, 4.1.1: the
 * last entry chains only when more than one entry remains).
 */
import assert from "node:assert/strict";
import { Host, pattern, putU64s } from "./harness.ts";
import { NVME_CMD } from "../../sim/device/nvme_spec.ts";

Deno.test("PRP list ending in the last slot of its page: three entries at offset 4072", () => {
  const h = Host.ready();
  const pages = [h.alloc(1), h.alloc(1), h.alloc(1), h.alloc(1)];
  const list = h.alloc(1);
  putU64s(list, 4072, pages.slice(1).map((p) => p.addr));
  const data = pattern(4 * 4096, 21);
  // The last data page holds page-aligned values: read as a list, they would pass the checks.
  const fake = new Uint8Array(4096);
  new DataView(fake.buffer).setBigUint64(0, pages[0].addr, true);
  data.set(fake, 3 * 4096);
  pages.forEach((p, i) => p.write(0, data.subarray(i * 4096, (i + 1) * 4096)));
  const c = h.run(1, {
    opcode: NVME_CMD.WRITE,
    nsid: 1,
    prp1: pages[0].addr,
    prp2: list.addr + 4072n,
    slba: 3n,
    nlb0: 3,
  });
  assert.equal(c.status, 0);
  assert.deepEqual(h.ctrl.mediaRead(1, 3 * 4096, 4 * 4096), data);
});

Deno.test("PRP list of 512 entries filling a whole page: 513 pages with MDTS 10", () => {
  const h = Host.ready({ mdts: 10 });
  const buf = h.alloc(513);
  const list = h.alloc(1);
  putU64s(list, 0, Array.from({ length: 512 }, (_, i) => buf.addr + BigInt((i + 1) * 4096)));
  const data = pattern(513 * 4096, 22);
  buf.write(0, data);
  let c = h.run(1, {
    opcode: NVME_CMD.WRITE,
    nsid: 1,
    prp1: buf.addr,
    prp2: list.addr,
    slba: 0n,
    nlb0: 512,
  });
  assert.equal(c.status, 0);
  assert.deepEqual(h.ctrl.mediaRead(1, 0, 513 * 4096), data);
  buf.write(0, new Uint8Array(513 * 4096));
  c = h.run(1, {
    opcode: NVME_CMD.READ,
    nsid: 1,
    prp1: buf.addr,
    prp2: list.addr,
    slba: 0n,
    nlb0: 512,
  });
  assert.equal(c.status, 0);
  assert.deepEqual(buf.read(0, 513 * 4096), data);
});
