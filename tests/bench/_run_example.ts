/**
 * Run a script of examples/ the way a user does: `deno run` with no
 * permissions, in a subprocess, capturing exit code and output.
 *
 * @module
 */

/** Exit code, stdout and stderr of one run. */
export interface ExampleRun {
  /** Exit code. */
  code: number;
  /** Standard output. */
  out: string;
  /** Standard error. */
  err: string;
}

/** `deno run examples/<script> ...args` with no permissions. */
export function runExample(script: string, args: string[] = []): ExampleRun {
  const r = new Deno.Command(Deno.execPath(), {
    args: ["run", new URL(`../../examples/${script}`, import.meta.url).pathname, ...args],
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  const d = new TextDecoder();
  return { code: r.code, out: d.decode(r.stdout), err: d.decode(r.stderr) };
}
