/**
 * End to end through the block device file: random writes then reads at many
 * sizes and in-buffer offsets return exactly the bytes written, with ubuf,
 * bvec and dma-tag iterators, in all five IOMMU modes.
 */
import assert from "node:assert/strict";
import { makeRig, pinBvecs, rw } from "./block/helpers.ts";
import { iovIterBvec, iovIterDmaTag, iovIterUbuf } from "../sim/block/iov_iter.ts";
import { IOMMU_MODES, type IommuMode } from "../sim/dma/types.ts";
import { Rng } from "../sim/random.ts";
import type { DmaTag } from "../sim/block/bvec.ts";

const NS_BYTES = 8n << 20n;
const BUF = 512 * 1024;

for (const mode of IOMMU_MODES) {
  for (const kind of ["ubuf", "bvec", "dmatag"] as const) {
    Deno.test(`e2e ${mode} ${kind}: random writes then reads return the bytes written`, () => {
      const seed = 0x5eed + IOMMU_MODES.indexOf(mode) * 7 + kind.length;
      try {
        run(mode, kind, seed);
      } catch (e) {
        console.error(`seed ${seed}`);
        throw e;
      }
    });
  }
}

function run(mode: IommuMode, kind: "ubuf" | "bvec" | "dmatag", seed: number) {
  const rig = makeRig(seed, {
    iommu: mode,
    namespaces: [{ lbaSize: 512, sizeBytes: NS_BYTES }],
  });
  const rng = new Rng(seed);
  const src = rig.kernel.mm.mmap(BUF);
  const dst = rig.kernel.mm.mmap(BUF);
  const shadow = new Uint8Array(Number(NS_BYTES));
  const srcBv = pinBvecs(rig, src.start, BUF);
  const dstBv = pinBvecs(rig, dst.start, BUF);
  let srcTag: DmaTag | undefined;
  let dstTag: DmaTag | undefined;
  if (kind === "dmatag") {
    const a = rig.file.fOp.dmaMap!(rig.file, srcBv);
    const b = rig.file.fOp.dmaMap!(rig.file, dstBv);
    assert.equal(typeof a, "object");
    assert.equal(typeof b, "object");
    srcTag = a as DmaTag;
    dstTag = b as DmaTag;
  }
  const sizes = [512, 1024, 3584, 4096, 8192, 12288, 65536, 131072, 200704, 262144];
  for (let i = 0; i < 24; i++) {
    const len = i < sizes.length ? sizes[i] : rng.range(1, 256) * 512;
    const align = kind === "bvec" ? 512 : 4;
    const off = rng.int(Math.floor((BUF - len) / align) + 1) * align;
    const pos = BigInt(rng.int(Number(NS_BYTES) / 512 - len / 512 + 1) * 512);
    rng.fill(src.bytes.subarray(off, off + len));
    const w = kind === "ubuf"
      ? iovIterUbuf("write", src.start + BigInt(off), len)
      : kind === "bvec"
      ? iovIterBvec("write", srcBv, len, off)
      : iovIterDmaTag("write", srcTag!, off, len);
    assert.equal(rw(rig, w, pos), len, `write ${len}@${pos} off ${off}`);
    shadow.set(src.bytes.subarray(off, off + len), Number(pos));
    assert.deepEqual(
      rig.host.controller!.mediaRead(1, Number(pos), len),
      shadow.subarray(Number(pos), Number(pos) + len),
    );
    const roff = rng.int(Math.floor((BUF - len) / align) + 1) * align;
    const rpos = BigInt(rng.int(Number(NS_BYTES) / 512 - len / 512 + 1) * 512);
    dst.bytes.fill(0xa5);
    const r = kind === "ubuf"
      ? iovIterUbuf("read", dst.start + BigInt(roff), len)
      : kind === "bvec"
      ? iovIterBvec("read", dstBv, len, roff)
      : iovIterDmaTag("read", dstTag!, roff, len);
    assert.equal(rw(rig, r, rpos), len, `read ${len}@${rpos} off ${roff}`);
    assert.deepEqual(
      dst.bytes.subarray(roff, roff + len),
      shadow.subarray(Number(rpos), Number(rpos) + len),
      `read data ${len}@${rpos}`,
    );
    // Bytes around the read are untouched.
    if (roff > 0) assert.equal(dst.bytes[roff - 1], 0xa5);
    if (roff + len < BUF) assert.equal(dst.bytes[roff + len], 0xa5);
  }
  if (srcTag) rig.file.fOp.dmaUnmap!(rig.file, srcTag);
  if (dstTag) rig.file.fOp.dmaUnmap!(rig.file, dstTag);
  assert.equal(rig.host.driver.liveMappings, 0);
  assert.equal(rig.kernel.inFlight, 0);
  assert.equal(rig.kernel.stats.counters.deviceErrors, 0);
  assert.equal(rig.host.driver.retriedCommands, 0);
  rig.host[Symbol.dispose]();
}
