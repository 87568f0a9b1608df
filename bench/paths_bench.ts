/**
 * `deno bench bench/paths_bench.ts`: one READ_FIXED/READ round trip through
 * the simulated host per iteration, for each buffer path, grouped by block
 * size with `bvec` as the baseline, so Deno's own report gives the ratio
 * (e.g. "dma 1.9x faster than bvec") within one run on this machine.
 *
 * @module
 */

import { IOSQE, O, openTestbed, type Ring, type Testbed, type UserBuffer } from "../mod.ts";

interface Setup {
  tb: Testbed;
  ring: Ring;
  buf: UserBuffer;
}

function setup(path: "none" | "bvec" | "dma", bs: number): Setup {
  const tb = openTestbed({ backend: "sim", seed: 1, iommu: "strict", timing: false });
  const fd = tb.open(tb.nvmeDevice!, O.RDWR | O.DIRECT);
  const ring = tb.ring({ entries: 8 });
  const buf = tb.allocBuffer(bs);
  const ok = (r: { ok: boolean; res: number }, what: string) => {
    if (!r.ok) throw new Error(`${what}: ${r.res}`);
  };
  ok(ring.registerFiles([fd]), "register files");
  if (path !== "none") ok(ring.registerBuffers([{ addr: buf.addr, len: bs }]), "register buffers");
  if (path === "dma") ok(ring.mapBuffers(0, 0, 1), "map buffers");
  return { tb, ring, buf };
}

function oneRead(s: Setup, path: "none" | "bvec" | "dma", bs: number, off: bigint): void {
  const o = { flags: IOSQE.FIXED_FILE };
  if (path === "none") s.ring.read(0, s.buf.addr, bs, off, o);
  else s.ring.readFixed(0, s.buf.addr, bs, off, 0, o);
  const [c] = s.ring.submitAndReap(1);
  if (c.res !== bs) throw new Error(`read returned ${c.res}`);
}

for (const bs of [4096, 16384, 65536]) {
  for (const path of ["none", "bvec", "dma"] as const) {
    const s = setup(path, bs);
    let i = 0;
    Deno.bench({
      name: `${path} ${bs / 1024}k`,
      group: `randread ${bs / 1024}k, iommu strict`,
      baseline: path === "bvec",
      fn() {
        oneRead(s, path, bs, BigInt(((i++ * 7919) % 4096) * bs));
      },
    });
  }
}
