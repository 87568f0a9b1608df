/**
 * fio as the live-kernel reference: the argument builder (fixedbufs=0 for
 * none, 1 for bvec), parsing fio's JSON captured from running fio here, and
 * `--fio` outside `--backend=real` as a usage error naming the flag.
 */

import assert from "node:assert/strict";
import { fioArgs, type FioJob, fioUnavailable, parseFioJson, runFio } from "../../bench/fio.ts";
import { parseRunArgs, type RunOptions, UsageError } from "../../bench/cli.ts";
import { WorkloadError } from "../../bench/workload.ts";
import { realBackendUnavailable } from "../../mod.ts";

const DEFAULTS: RunOptions = {
  backend: "sim",
  paths: ["none"],
  bs: [4096],
  qd: [1],
  rw: ["randread"],
  iommu: ["strict"],
  ios: 10,
  seed: 1,
};

function job(over: Partial<FioJob> = {}): FioJob {
  return {
    path: "none",
    bs: 4096,
    qd: 4,
    rw: "randread",
    ios: 300,
    regionBytes: 8 << 20,
    filename: "/tmp/x/f.dat",
    runtimeSec: 30,
    ...over,
  };
}

Deno.test("fio: argument builder maps none to fixedbufs=0 and bvec to fixedbufs=1", () => {
  assert.deepEqual(fioArgs(job()), [
    "--name=premap-none-randread-4096-qd4",
    "--thread",
    "--filename=/tmp/x/f.dat",
    "--ioengine=io_uring",
    "--direct=1",
    "--rw=randread",
    "--bs=4096",
    "--iodepth=4",
    "--size=8388608",
    "--io_size=1228800",
    "--number_ios=300",
    "--registerfiles=1",
    "--fixedbufs=0",
    "--slat_percentiles=1",
    "--percentile_list=50:99:99.9",
    "--runtime=30",
    "--output-format=json",
  ]);
  assert.deepEqual(
    fioArgs(job({ path: "bvec", rw: "randwrite", bs: 65536, qd: 16, ios: 5000, runtimeSec: 60 })),
    [
      "--name=premap-bvec-randwrite-65536-qd16",
      "--thread",
      "--filename=/tmp/x/f.dat",
      "--ioengine=io_uring",
      "--direct=1",
      "--rw=randwrite",
      "--bs=65536",
      "--iodepth=16",
      "--size=8388608",
      "--io_size=327680000",
      "--number_ios=5000",
      "--registerfiles=1",
      "--fixedbufs=1",
      "--slat_percentiles=1",
      "--percentile_list=50:99:99.9",
      "--runtime=60",
      "--output-format=json",
    ],
  );
});

Deno.test("fio: --fio with the sim backend is a usage error naming --fio", async () => {
  for (const args of [["--fio"], ["--backend=sim", "--fio"]]) {
    assert.throws(
      () => parseRunArgs(args, DEFAULTS),
      (e: unknown) => e instanceof UsageError && /--fio/.test(e.message),
    );
  }
  assert.equal(parseRunArgs(["--backend=real", "--fio"], DEFAULTS).fio, true);
  assert.equal(parseRunArgs(["--backend=real"], DEFAULTS).fio, undefined);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../../bench/bench.ts", import.meta.url).pathname, "--fio"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 2);
  assert.match(new TextDecoder().decode(out.stderr), /^bench: --fio: .*--backend=real/m);
});

/** Pids whose command line names `s` (fio's job processes would). */
function processesNaming(s: string): string[] {
  const pids: string[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      if (Deno.readTextFileSync(`/proc/${e.name}/cmdline`).includes(s)) pids.push(e.name);
    } catch { /* exited */ }
  }
  return pids;
}

const fioWhy = await fioUnavailable();
if (fioWhy !== null) console.log(`SKIP live fio tests: ${fioWhy}`);

Deno.test({
  name: "fio: JSON captured from fio here parses to a record with positive numbers",
  ignore: fioWhy !== null,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "premap-fio-test-" });
    try {
      for (const path of ["none", "bvec"] as const) {
        for (const rw of ["randwrite", "randread"] as const) {
          const j = job({ path, rw, filename: `${dir}/f-${path}-${rw}.dat` });
          const out = await new Deno.Command("fio", {
            args: fioArgs(j),
            stdout: "piped",
            stderr: "piped",
          }).output();
          const text = new TextDecoder().decode(out.stdout);
          assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
          const r = parseFioJson(text, j);
          const what = `${path} ${rw}`;
          assert.equal(r.backend, "fio");
          assert.equal(r.path, path);
          assert.equal(r.rw, rw);
          assert.equal(r.ios, 300, what);
          assert.equal(r.verified, true, what);
          for (
            const [k, v] of Object.entries({
              iops: r.iops,
              slatMean: r.slat.mean,
              slatP50: r.slat.p50,
              slatP99: r.slat.p99,
              clatMean: r.clat.mean,
              clatP50: r.clat.p50,
              clatP99: r.clat.p99,
            })
          ) {
            assert.equal(typeof v, "number", `${what} ${k}`);
            assert.ok(v > 0, `${what} ${k} = ${v}`);
          }
          assert.ok(r.slat.p99 >= r.slat.p50 && r.clat.p99 >= r.clat.p50, what);
          // The options fio echoes back are the ones we built.
          const opts = JSON.parse(text.slice(text.indexOf("{"))).jobs[0]["job options"];
          assert.equal(opts.fixedbufs, path === "bvec" ? "1" : "0", what);
          assert.equal(opts.registerfiles, "1", what);
          // A job fio reports as failed is not verified; a wrong direction is an error.
          const doc = JSON.parse(text.slice(text.indexOf("{")));
          doc.jobs[0].error = 5;
          assert.equal(parseFioJson(JSON.stringify(doc), j).verified, false, what);
          doc.jobs[0][rw === "randread" ? "read" : "write"] = {};
          assert.throws(() => parseFioJson(JSON.stringify(doc), j), WorkloadError);
        }
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "fio: runFio sets up the target, runs fio bounded, and removes the file",
  ignore: fioWhy !== null,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "premap-fio-test-" });
    try {
      const j = job({ path: "bvec", rw: "randwrite", qd: 8, filename: `${dir}/w.dat` });
      const r = await runFio(j);
      assert.equal(r.backend, "fio");
      assert.equal(r.verified, true);
      assert.ok(r.iops > 0 && r.clat.p50 > 0);
      assert.deepEqual([...Deno.readDirSync(dir)], []);
      // fio is killed from here when it overruns, never waited on for ever.
      const long = job({ rw: "randwrite", qd: 1, ios: 10_000_000, filename: `${dir}/long.dat` });
      await assert.rejects(
        runFio(long, 300),
        (e: unknown) => e instanceof WorkloadError && /killed after 300 ms/.test(e.message),
      );
      assert.deepEqual([...Deno.readDirSync(dir)], []);
      assert.deepEqual(processesNaming(long.filename), [], "no fio left running");
      // fio failing (it cannot lay out a file in /proc) is a WorkloadError with fio's words.
      await assert.rejects(
        runFio(job({ filename: "/proc/version" })),
        (e: unknown) => e instanceof WorkloadError && /fio exited 1/.test(e.message),
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

const realWhy = realBackendUnavailable();
if (realWhy !== null) console.log(`SKIP bench without fio: ${realWhy}`);

Deno.test({
  name: "fio: bench --fio without fio on PATH says so in one line and runs our ring anyway",
  ignore: realWhy !== null,
  async fn() {
    const bench = new URL("../../bench/bench.ts", import.meta.url).pathname;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", bench, "--backend=real", "--fio", "--bs=4k", "--qd=1", "--ios=20"],
      env: { PATH: "/nonexistent" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const lines = text.split("\n").filter((l) => /fio/.test(l) && !/^not run/.test(l));
    assert.deepEqual(lines, [
      "fio: fio is not installed (no 'fio' on PATH): install it with apt-get install -y fio; " +
      "running without it",
    ]);
    assert.match(text, /real +v2 +n\/a +randread +4k +1 +none +20 /);
  },
});
