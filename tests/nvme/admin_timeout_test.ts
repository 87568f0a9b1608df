import assert from "node:assert/strict";
import { Kernel, VirtualClock } from "../../sim/kernel.ts";
import { createDma } from "../../sim/dma/mapping.ts";
import { NVME_ADMIN_TIMEOUT_NS, NvmeDev } from "../../sim/nvme/pci.ts";
import { NvmeController } from "../../sim/device/controller.ts";
import { Errno } from "../../sim/uapi/errno.ts";
import type { NvmeControllerPort } from "../../sim/device/port.ts";

/** A controller whose doorbells reach nothing: the ready bit comes up, no command ever completes. */
function deafController(inner: NvmeControllerPort): NvmeControllerPort {
  return {
    readReg32: (o) => inner.readReg32(o),
    readReg64: (o) => inner.readReg64(o),
    writeReg32: (o, v) => {
      if (o < 0x1000) inner.writeReg32(o, v);
    },
    writeReg64: (o, v) => inner.writeReg64(o, v),
    setIrqHandler: (v, h) => inner.setIrqHandler(v, h),
  };
}

Deno.test("admin timeout: a command that never completes fails with -ETIMEDOUT after 60 s of the kernel's clock", () => {
  const clock = new VirtualClock();
  const kernel = new Kernel({ seed: 3, clock });
  using dma = createDma(kernel, { mode: "off" });
  const ctrl = new NvmeController(dma.port, { seed: 3 });
  using dev = new NvmeDev(kernel, deafController(ctrl), dma.api);
  const t0 = clock.nowNs();
  // Identify Controller is the first admin command of probe; nothing answers it.
  assert.equal(dev.probe(), -Errno.ETIMEDOUT);
  assert.equal(clock.nowNs() - t0, NVME_ADMIN_TIMEOUT_NS);
});

Deno.test("nvme_wait_ready: a controller that never sets CSTS.RDY fails probe after (CAP.TO + 1) * 500 ms", () => {
  const clock = new VirtualClock();
  const kernel = new Kernel({ seed: 4, clock });
  using dma = createDma(kernel, { mode: "off" });
  const ctrl = new NvmeController(dma.port, { seed: 4 });
  const stuck: NvmeControllerPort = {
    ...deafController(ctrl),
    readReg32: (o) => (o === 0x1c ? 0 : ctrl.readReg32(o)), // CSTS reads 0 forever
  };
  using dev = new NvmeDev(kernel, stuck, dma.api);
  assert.equal(dev.probe(), -Errno.ENODEV);
  assert.equal(clock.nowNs(), (15 + 1) * 500e6); // the TS controller's CAP.TO is 15
});
