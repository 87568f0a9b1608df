/**
 * The live block-device reference: with root and losetup, `--fio` runs our
 * ring and fio on one loop device with direct I/O (the kernel's bio and
 * blk-mq), says so and that the work is equal, and leaves no loop device
 * attached; without, it says why and falls back to an O_DIRECT file.
 */

import assert from "node:assert/strict";
import { fioUnavailable } from "../../bench/fio.ts";
import { loopAttached, loopUnavailable } from "../../bench/loopdev.ts";
import { realBackendUnavailable } from "../../mod.ts";

const why = realBackendUnavailable() ?? await fioUnavailable() ?? await loopUnavailable();
if (why !== null) console.log(`SKIP loop-device reference tests: ${why}`);

function bench(args: string[]) {
  const r = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../../bench/bench.ts", import.meta.url).pathname, ...args],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  const d = new TextDecoder();
  return { code: r.code, out: d.decode(r.stdout), err: d.decode(r.stderr) };
}

Deno.test({
  name: "bench --fio: our ring and fio on one loop device, equal work, nothing left attached",
  ignore: why !== null,
  fn() {
    const json = Deno.makeTempFileSync({ suffix: ".json" });
    try {
      const r = bench([
        "--backend=real",
        "--fio",
        "--path=none,bvec",
        "--bs=4k",
        "--qd=1",
        "--ios=300",
        "--size=16m",
        `--json=${json}`,
      ]);
      assert.equal(r.code, 0, r.err + r.out);
      assert.match(r.out, /work: equal: neither our ring nor fio checks the bytes it reads/);
      const dev = /live reference: (\/dev\/loop\d+), a loop device \(direct I\/O\)/.exec(r.out);
      assert.ok(dev, r.out);
      const { records } = JSON.parse(Deno.readTextFileSync(json));
      assert.deepEqual(
        records.map((x: { backend: string; target: string }) => [x.backend, x.target]),
        [["real", dev[1]], ["fio", dev[1]], ["real", dev[1]], ["fio", dev[1]]],
      );
      for (const x of records) assert.equal(x.dataChecked, false);
      assert.equal(loopAttached(dev[1]), false, `${dev[1]} still attached`);
    } finally {
      Deno.removeSync(json);
    }
  },
});

Deno.test({
  name: "bench --fio --verify=1 says the work is not equal",
  ignore: why !== null,
  fn() {
    const r = bench(["--backend=real", "--fio", "--path=none", "--bs=4k", "--qd=1", "--ios=50"]
      .concat(["--size=16m", "--verify=1"]));
    assert.match(r.out, /work: NOT equal: our ring checks every byte it reads \(--verify=1\)/);
  },
});
