/**
 * README's excerpts, regenerated from the commands README shows beside them.
 *
 *   deno task readme            # rerun each command, rewrite each excerpt in README.md
 *   deno task readme -- --check # exit 1 naming each excerpt that differs (what the test runs)
 *
 * An excerpt sits between `<!-- excerpt:NAME -->` and `<!-- /excerpt -->`, in a
 * fenced block; only deterministic output is quoted (counts and the model
 * computed from them, never wall time), so a rerun reproduces it exactly.
 *
 * @module
 */

import { parseArgs } from "node:util";

const ROOT = new URL("../", import.meta.url).pathname;
const README = `${ROOT}README.md`;

/** One excerpt: the command README shows and the lines of its output quoted. */
export interface Excerpt {
  /** Marker name. */
  name: string;
  /** The command as README shows it. */
  shown: string;
  /** argv that runs it (deno's), from the repository root. */
  argv: string[];
  /** The quoted part of its stdout. */
  pick: (stdout: string) => string;
}

function between(out: string, start: string, end: string | null): string[] {
  const i = out.indexOf(start);
  if (i < 0) throw new Error(`output has no '${start}'`);
  const j = end === null ? out.length : out.indexOf(end, i + start.length);
  return out.slice(i, j < 0 ? out.length : j).trimEnd().split("\n");
}

const RUN = ["run", "--allow-read", "--allow-write", "--allow-ffi", "--allow-env", "--allow-run"];

/** The excerpts README carries. */
export const EXCERPTS: readonly Excerpt[] = [
  {
    name: "demo",
    shown: "deno task demo",
    argv: [...RUN, "examples/demo.ts"],
    // The count rows of the random-write table (times are wall time and vary).
    pick: (out) =>
      between(out, "randwrite qd=4", "randread qd=4")
        .filter((l) => /^(per I\/O|-{10}|[a-zA-Z].*\|)/.test(l) && !/wall/.test(l))
        .filter((l) => !l.startsWith("randwrite"))
        .join("\n"),
  },
  {
    name: "costs-fit",
    shown: "deno task costs:fit -- --check",
    argv: [...RUN, "bench/fit_costs.ts", "--check"],
    pick: (out) => out.trimEnd(),
  },
  {
    name: "bench-model",
    shown:
      "deno task bench -- --bs=4k,16k,64k --qd=1,16 --path=none,bvec,dma --iommu=lazy,strict --ios=500",
    argv: [
      ...RUN,
      "bench/bench.ts",
      "--bs=4k,16k,64k",
      "--qd=1,16",
      "--path=none,bvec,dma",
      "--iommu=lazy,strict",
      "--ios=500",
    ],
    pick: (out) => between(out, "published (Busch", "\n\n").join("\n"),
  },
];

/** Run one excerpt's command and return what README should quote. */
export async function generate(e: Excerpt): Promise<string> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: e.argv,
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const d = new TextDecoder();
  if (!r.success) {
    throw new Error(`${e.shown} exited ${r.code}: ${d.decode(r.stderr).slice(0, 2000)}`);
  }
  return e.pick(d.decode(r.stdout));
}

const OPEN = (name: string) => `<!-- excerpt:${name} -->`;
const CLOSE = "<!-- /excerpt -->";

/** The text README holds for an excerpt now (inside its fence), or null without markers. */
export function current(readme: string, name: string): string | null {
  const i = readme.indexOf(OPEN(name));
  if (i < 0) return null;
  const j = readme.indexOf(CLOSE, i);
  const block = readme.slice(i + OPEN(name).length, j);
  const m = /```[a-z]*\n([\s\S]*?)\n```/.exec(block);
  return m ? m[1] : null;
}

/** README with one excerpt replaced. */
export function replace(readme: string, name: string, text: string): string {
  const i = readme.indexOf(OPEN(name));
  const j = readme.indexOf(CLOSE, i);
  if (i < 0 || j < 0) throw new Error(`README has no ${OPEN(name)} ... ${CLOSE}`);
  return readme.slice(0, i) + `${OPEN(name)}\n\n\`\`\`\n${text}\n\`\`\`\n\n` + readme.slice(j);
}

async function main(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: args[0] === "--" ? args.slice(1) : args,
      strict: true,
      options: {
        check: { type: "boolean" },
        only: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (e) {
    console.error(`readme: ${(e as Error).message}`);
    return 2;
  }
  if (values.help) {
    console.log(`usage: deno task readme -- [flags]
  --check        rerun and compare, write nothing; exit 1 naming each stale excerpt
  --only=NAMES   these excerpts only (${EXCERPTS.map((e) => e.name).join(", ")})`);
    return 0;
  }
  const only = values.only?.split(",");
  for (const n of only ?? []) {
    if (!EXCERPTS.some((e) => e.name === n)) {
      console.error(`readme: --only: '${n}' is not one of ${EXCERPTS.map((e) => e.name)}`);
      return 2;
    }
  }
  let readme = Deno.readTextFileSync(README);
  let stale = 0;
  for (const e of EXCERPTS.filter((x) => !only || only.includes(x.name))) {
    const text = await generate(e);
    if (current(readme, e.name) === text) continue;
    stale++;
    if (values.check) console.error(`readme: excerpt '${e.name}' differs from \`${e.shown}\``);
    else readme = replace(readme, e.name, text);
  }
  if (values.check) return stale ? 1 : 0;
  Deno.writeTextFileSync(README, readme);
  console.log(`README.md: ${stale} excerpt(s) rewritten`);
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
