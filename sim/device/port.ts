/**
 * The seam between the nvme-pci driver and an NVMe controller: what a PCIe
 * function offers a host (BAR0 registers and doorbells, MSI-X vectors). The
 * TypeScript controller in `sim/device/` implements it; so can a controller
 * in native memory driven through FFI. Queues and data live in host memory
 * and the controller reaches them only through its {@link DeviceDmaPort}.
 *
 * Nothing simulator-only crosses this seam: no "make progress" call and no
 * count of commands in flight, since hardware offers neither. The driver
 * learns of completions from its completion queues and interrupts; the
 * simulation steps the TypeScript controller behind the seam (a kernel
 * poller in `sim/host.ts`), and the C controller runs on its own thread.
 *
 * Register offsets follow the NVMe Base Specification, section 3.1.4
 * (controller properties).
 *
 * @module
 */

export type { DeviceDmaPort } from "../dma/types.ts";

/** Controller register offsets in BAR0 (NVMe Base Spec 3.1.4). */
export const NVME_REG = {
  CAP: 0x00, // 64-bit
  VS: 0x08,
  INTMS: 0x0c,
  INTMC: 0x10,
  CC: 0x14,
  CSTS: 0x1c,
  NSSR: 0x20,
  AQA: 0x24,
  ASQ: 0x28, // 64-bit
  ACQ: 0x30, // 64-bit
  DBS: 0x1000, // doorbells start
} as const;

/** The host's view of a controller: MMIO and interrupts. */
export interface NvmeControllerPort {
  /** 32-bit MMIO read of BAR0 at `offset`. */
  readReg32(offset: number): number;
  /** 64-bit MMIO read. */
  readReg64(offset: number): bigint;
  /** 32-bit MMIO write (includes doorbell writes). */
  writeReg32(offset: number, value: number): void;
  /** 64-bit MMIO write. */
  writeReg64(offset: number, value: bigint): void;
  /** Install the handler for MSI-X vector `vector` (called when the controller posts to a CQ on it). */
  setIrqHandler(vector: number, handler: () => void): void;
}
