/**
 * Fault rules through `mod.ts` on both backends: `openTestbed({ faults })`
 * puts rules in the controller before the driver probes it, and
 * `tb.nvmeFaults` adds and clears rules later and reads the counts. (What
 * the host does with each fault, retries, timeouts, resets, is tested with
 * the driver; here only that the rules reach the controller and fire.)
 */
import assert from "node:assert/strict";
import {
  type Backend,
  NVME_FAULT_KINDS,
  O,
  openTestbed,
  realNvmeUnavailable,
  type TestbedOptions,
} from "../../mod.ts";
import { NVME_ADMIN } from "../../sim/device/nvme_spec.ts";

const BLOCK = 4096;
const NAMESPACES = [{ lbaSize: 4096 as const, sizeBytes: 16n << 20n }];

const realWhy = realNvmeUnavailable();
if (realWhy !== null) console.log(`SKIP testbed fault rules on real: ${realWhy}`);

function opts(backend: Backend, extra: TestbedOptions): TestbedOptions {
  return {
    backend,
    seed: 3,
    namespaces: NAMESPACES,
    ...(backend === "real" ? { mediaInMemory: true } : {}),
    ...extra,
  };
}

for (const backend of ["sim", "real"] as const) {
  const ignore = backend === "real" && realWhy !== null;

  Deno.test({
    name: `testbed faults [${backend}]: rules at open and added later fire and are counted`,
    ignore,
    fn() {
      using tb = openTestbed(opts(backend, {
        faults: [{ kind: "read-error", slbaFirst: 8n, slbaLast: 8n, dnr: true }],
      }));
      assert.ok(tb.nvmeFaults);
      const fd = tb.open(tb.nvmeDevice!, O.RDWR | O.DIRECT);
      using ring = tb.ring({ entries: 4 });
      using buf = tb.allocBuffer(BLOCK);
      const io = (write: boolean, block: number) => {
        if (write) ring.write(fd, buf.addr, BLOCK, BigInt(block * BLOCK));
        else ring.read(fd, buf.addr, BLOCK, BigInt(block * BLOCK));
        return ring.submitAndReap(1)[0].res;
      };
      assert.equal(io(false, 7), BLOCK);
      assert.ok(io(false, 8) < 0, "a read of the faulty block fails");
      assert.equal(tb.nvmeFaults.injected["read-error"], 1, "DNR: not retried");
      tb.nvmeFaults.add({ kind: "write-fault", count: 1, dnr: true });
      assert.ok(io(true, 3) < 0, "the write hit by the rule fails");
      assert.equal(io(true, 3), BLOCK, "count 1: the next write succeeds");
      tb.nvmeFaults.clear();
      assert.equal(io(false, 8), BLOCK, "no rule after clear");
      const inj = tb.nvmeFaults.injected;
      assert.deepEqual(Object.keys(inj).sort(), [...NVME_FAULT_KINDS].sort());
      assert.equal(inj["write-fault"], 1);
      assert.throws(() => tb.nvmeFaults!.add({ kind: "drop", count: 0 }), RangeError);
      tb.close(fd);
    },
  });

  Deno.test({
    name: `testbed faults [${backend}]: an Identify failing at probe fails openTestbed`,
    ignore,
    fn() {
      assert.throws(() =>
        openTestbed(opts(backend, {
          faults: [{ kind: "admin-fail", opcode: NVME_ADMIN.IDENTIFY, dnr: true }],
        }))
      );
    },
  });
}
