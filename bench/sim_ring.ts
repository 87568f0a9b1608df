/**
 * Raw NOP rate of the sim backend's io_uring mirror, measured the way the
 * live ring is in `bench/ring.ts`: fill `batch` NOP SQEs, one enter that
 * submits and waits for them, reap the CQEs.
 *
 * @module
 */

import { Kernel } from "../sim/kernel.ts";
import { SimRing } from "../sim/io_uring/io_uring.ts";
import { encodeSqe, IORING_OP, PARAMS } from "../sim/uapi/io_uring.ts";

/** NOPs per second through the sim ring at `batch` per enter, over about `ops` NOPs. */
export function simNopOpsPerS(batch: number, ops: number): number {
  const kernel = new Kernel({ seed: 1, timing: false });
  const ring = SimRing.setup(kernel, Math.max(8, batch), new Uint8Array(PARAMS.SIZE));
  if (typeof ring === "number") throw new Error(`sim io_uring_setup: ${ring}`);
  try {
    const sqe = encodeSqe({ opcode: IORING_OP.NOP, userData: 1n });
    const rounds = Math.max(1, Math.floor(ops / batch));
    const run = (n: number) => {
      for (let r = 0; r < n; r++) {
        for (let i = 0; i < batch; i++) ring.pushSqe(sqe);
        const s = ring.submit(batch);
        if (s !== batch) throw new Error(`sim submit returned ${s}, want ${batch}`);
        if (ring.reap().length !== batch) throw new Error("sim ring lost a CQE");
      }
    };
    run(Math.max(1, Math.floor(rounds / 10))); // warm up the JIT
    const t0 = performance.now();
    run(rounds);
    const s = (performance.now() - t0) / 1000;
    return (rounds * batch) / s;
  } finally {
    ring[Symbol.dispose]();
  }
}
