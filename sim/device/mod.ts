/**
 * The simulated NVMe controller and the NVMe wire formats it shares with the
 * driver: re-exports of `controller.ts`, `nvme_spec.ts`, `regs.ts` and
 * `port.ts`.
 *
 * @module
 */

export * from "./controller.ts";
export * from "./nvme_spec.ts";
export * from "./regs.ts";
export * from "./port.ts";
export { DeviceDma } from "./dma.ts";
export { type DataSegment, nvmeMapDptr, nvmeMapPrp, nvmeMapSgl } from "./dptr.ts";
export { ID_CTRL, ID_NS, SGLS } from "./identify.ts";
export { SparseMedia } from "./media.ts";
