// Runs MicroPython scripts in the 32-bit webassembly port (npm package
// @micropython/micropython-webassembly-pyscript), headless under node, for the heap gauge
// (bench/heap32/gauge.py drives it; docs/memory.md).
//
// stdin: JSON {"package": dir of the npm package, "jobs": [{"heapsize": bytes,
//   "files": {"/abs/path": base64}, "script": python source}]}.
// Each job gets a fresh interpreter (its own wasm instance), so one job's garbage or
// imports never show up in another's figures. Its files are written into the port's
// in-memory filesystem (emscripten MEMFS) before the script runs; the script runs with
// runPythonAsync, so it may `await` (the port's asyncio is driven by node's event loop).
// stdout: the scripts' output, then one line "@@END <job index> ok" or
// "@@END <job index> error <Type>: <message>" per job: a Python exception is reported as
// one short line (the port would otherwise print its whole minified source).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const spec = JSON.parse(readFileSync(0, "utf8"));
const { loadMicroPython } = await import(pathToFileURL(join(spec.package, "micropython.mjs")).href);

function mkdirs(FS, path) {
  let cur = "";
  for (const part of path.split("/").slice(1, -1)) {
    cur += "/" + part;
    try { FS.mkdir(cur); } catch (e) { /* exists */ }
  }
}

for (let i = 0; i < spec.jobs.length; i++) {
  const job = spec.jobs[i];
  const mp = await loadMicroPython({
    heapsize: job.heapsize,
    stdout: (line) => process.stdout.write(line + "\n"),
    stderr: (line) => process.stdout.write("@@STDERR " + line + "\n"),
  });
  for (const [path, b64] of Object.entries(job.files || {})) {
    mkdirs(mp.FS, path);
    mp.FS.writeFile(path, Buffer.from(b64, "base64"));
  }
  try {
    await mp.runPythonAsync(job.script);
    process.stdout.write(`@@END ${i} ok\n`);
  } catch (e) {
    if (e.name !== "PythonError") throw e;
    const lines = String(e.message).trim().split("\n");
    process.stdout.write(`@@END ${i} error ${lines[lines.length - 1]}\n`);
    for (const l of lines) process.stdout.write("@@TRACE " + l + "\n");
  }
}
// the port's asyncio may hold timers (tasks still sleeping): do not wait for them
process.exit(0);
