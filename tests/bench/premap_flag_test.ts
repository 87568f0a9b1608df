/** --premap on the demo and bench: parsed, refused by name when wrong, recorded in the JSON. */
import assert from "node:assert/strict";
import { parseRunArgs, type RunOptions, UsageError } from "../../bench/cli.ts";

const base: RunOptions = {
  backend: "sim",
  paths: ["dma"],
  bs: [4096],
  qd: [1],
  rw: ["randread"],
  iommu: ["strict"],
  ios: 8,
  seed: 1,
};

Deno.test("cli: --premap=v2,hardened parses; an unknown variant is refused naming --premap", () => {
  assert.deepEqual(parseRunArgs(["--premap=v2,hardened"], base).premap, ["v2", "hardened"]);
  assert.equal(parseRunArgs([], base).premap, undefined);
  assert.deepEqual(parseRunArgs(["--premap=v3"], base).premap, ["v3"]);
  assert.throws(() => parseRunArgs(["--premap=v4"], base), (e) => {
    assert.ok(e instanceof UsageError);
    assert.match(e.message, /--premap/);
    return true;
  });
});

Deno.test("bench --premap=v2,hardened: one record per variant, each carrying it", async () => {
  const json = await Deno.makeTempFile({ suffix: ".json" });
  try {
    const bench = new URL("../../bench/bench.ts", import.meta.url).pathname;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", bench, "--premap=v2,hardened", "--path=dma", "--bs=4k", "--qd=1"]
        .concat(["--iommu=strict", "--ios=8", `--json=${json}`]),
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const { records } = JSON.parse(Deno.readTextFileSync(json));
    assert.deepEqual(records.map((r: { premap: string }) => r.premap), ["v2", "hardened"]);
    assert.match(new TextDecoder().decode(out.stdout), /per I\/O, premap=hardened iommu=strict/);
  } finally {
    Deno.removeSync(json);
  }
});
