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

/** `deno run [flags] examples/<script> ...args`: no permissions unless `denoFlags` grant some. */
export function runExample(
  script: string,
  args: string[] = [],
  denoFlags: string[] = [],
): ExampleRun {
  const r = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...denoFlags,
      new URL(`../../examples/${script}`, import.meta.url).pathname,
      ...args,
    ],
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  const d = new TextDecoder();
  return { code: r.code, out: d.decode(r.stdout), err: d.decode(r.stderr) };
}
