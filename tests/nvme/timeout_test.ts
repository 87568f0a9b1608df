/**
 * nvme_timeout(): an I/O the controller never completes is aborted at its
 * first timeout and the controller reset at its second; the reset cancels
 * what was in flight (NVME_SC_HOST_ABORTED_CMD) and the block layer retries
 * it on the re-created queues. A controller that does not come back is
 * removed and the I/O fails with -EIO. All on the virtual clock.
 */
import assert from "node:assert/strict";
import { Kernel } from "../../sim/kernel.ts";
import { attachNvme } from "../../sim/host.ts";
import { NvmeController } from "../../sim/device/controller.ts";
import { NVME_REG, type NvmeControllerPort } from "../../sim/device/port.ts";
import { BLK_DEFAULT_RQ_TIMEOUT_NS } from "../../sim/block/blk-mq.ts";
import { iovIterUbuf } from "../../sim/block/iov_iter.ts";
import { O } from "../../sim/uapi/io_uring.ts";
import { Errno } from "../../sim/uapi/errno.ts";
import { type Rig, rw } from "../block/helpers.ts";

const P = 4096;
/** The I/O SQ 1 tail doorbell (DSTRD 0). */
const SQ1_DB = NVME_REG.DBS + 2 * 4;

/**
 * A rig whose controller misses I/O doorbells while `lose()` says so, as a
 * device that dropped commands would; `reenable` says whether CC.EN can bring
 * it back after a reset.
 */
function lossyRig(seed: number, lose: (resets: number) => boolean, reenable = true) {
  const kernel = new Kernel({ seed, timing: false });
  let disabledOnce = false;
  const ref: { resets: () => number } = { resets: () => 0 };
  const host = attachNvme(kernel, {
    iommu: "strict",
    controller: (dma) => {
      const c = new NvmeController(dma.port, { seed }, kernel.stats);
      const port: NvmeControllerPort = {
        readReg32: (o) => c.readReg32(o),
        readReg64: (o) => c.readReg64(o),
        writeReg64: (o, v) => c.writeReg64(o, v),
        setIrqHandler: (v, h) => c.setIrqHandler(v, h),
        writeReg32: (o, v) => {
          if (o === SQ1_DB && lose(ref.resets())) return;
          if (o === NVME_REG.CC && (v & 1) === 0 && kernel.clock.nowNs() > 0) disabledOnce = true;
          if (o === NVME_REG.CC && (v & 1) === 1 && disabledOnce && !reenable) return;
          c.writeReg32(o, v);
        },
      };
      return { port, step: () => c.poll(), [Symbol.dispose]() {} };
    },
  });
  const f = kernel.devices.get(host.namespaces[0].path)!(
    host.namespaces[0].path,
    O.RDWR | O.DIRECT,
  );
  if (typeof f === "number") throw new Error(`open ${f}`);
  ref.resets = () => host.driver.resets;
  const rig: Rig = { kernel, host, file: f };
  return rig;
}

Deno.test("timeout: abort at 30 s, reset at 60 s, the I/O retried on the new queues completes", () => {
  const rig = lossyRig(61, (resets) => resets === 0);
  const k = rig.kernel;
  const d = rig.host.driver;
  const src = k.mm.mmap(2 * P);
  src.bytes.fill(0x3d);
  const t0 = k.clock.nowNs();
  const s0 = k.stats.snapshot();
  // Doorbells are lost until the first reset (the queues are then re-created).
  assert.equal(rw(rig, iovIterUbuf("write", src.start, 2 * P), 0n), 2 * P);
  assert.equal(k.clock.nowNs() - t0, 2 * BLK_DEFAULT_RQ_TIMEOUT_NS);
  assert.deepEqual(
    [d.timeouts, d.abortsSent, d.resets, d.retriedCommands],
    [2, 1, 1, 1],
  );
  const c = k.stats.counters;
  assert.equal(c.nvmeTimeouts - s0.counters.nvmeTimeouts, 2);
  assert.equal(c.nvmeResets - s0.counters.nvmeResets, 1);
  assert.match(
    d.log.join("\n"),
    /QID 1 timeout, aborting[\s\S]*Abort status[\s\S]*QID 1 timeout, reset controller/,
  );
  // The data went to the media once the retry ran.
  const dst = k.mm.mmap(2 * P);
  assert.equal(rw(rig, iovIterUbuf("read", dst.start, 2 * P), 0n), 2 * P);
  assert.ok(dst.bytes.every((b) => b === 0x3d));
  rig.host[Symbol.dispose]();
});

Deno.test("timeout: a controller that does not come back after the reset is removed; I/O fails with -EIO", () => {
  const rig = lossyRig(62, () => true, false);
  const k = rig.kernel;
  const src = k.mm.mmap(P);
  assert.equal(rw(rig, iovIterUbuf("write", src.start, P), 0n), -Errno.EIO);
  assert.equal(rig.host.driver.dead, true);
  assert.equal(rig.host.driver.resets, 1);
  // Later I/O fails at once.
  const t0 = k.clock.nowNs();
  assert.equal(rw(rig, iovIterUbuf("read", src.start, P), 0n), -Errno.EIO);
  assert.equal(k.clock.nowNs(), t0);
  rig.host[Symbol.dispose]();
});
