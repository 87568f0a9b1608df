/**
 * fsync on the NVMe block device: a Flush command reaches the controller only
 * when it reports a volatile write cache (Identify Controller VWC bit 0), as
 * blkdev_issue_flush() skips queues without QUEUE_FLAG_WC.
 */

import assert from "node:assert/strict";
import { Stats } from "../../sim/stats.ts";
import { NVME_CMD } from "../../sim/device/nvme_spec.ts";
import { Errno } from "../../sim/uapi/errno.ts";
import { makeRig, type Rig } from "../block/helpers.ts";

function fsync(rig: Rig): { res: number; opcodes: number[]; commands: number } {
  const opcodes: number[] = [];
  rig.host.driver.onSubmit = (ev) => {
    if (ev.qid !== 0) opcodes.push(ev.cmd.opcode);
  };
  const before = rig.kernel.stats.snapshot();
  let res: number | undefined;
  const r = rig.file.fOp.fsync!(rig.file, false, (x) => (res = x));
  if (r === -Errno.EIOCBQUEUED) rig.kernel.runUntil(() => res !== undefined);
  else res = r;
  const d = Stats.diff(before, rig.kernel.stats.snapshot()).counters;
  return { res: res!, opcodes, commands: d.nvmeCommands };
}

Deno.test("fsync: with a volatile write cache the driver sends one Flush, which succeeds", () => {
  const rig = makeRig(71, { volatileWriteCache: true });
  assert.equal(rig.host.driver.vwc, true);
  const f = fsync(rig);
  assert.equal(f.res, 0);
  assert.deepEqual(f.opcodes, [NVME_CMD.FLUSH]);
  assert.equal(f.commands, 1);
});

Deno.test("fsync: without a volatile write cache nothing reaches the device", () => {
  const rig = makeRig(72);
  assert.equal(rig.host.driver.vwc, false);
  const f = fsync(rig);
  assert.equal(f.res, 0);
  assert.deepEqual(f.opcodes, []);
  assert.equal(f.commands, 0);
});
