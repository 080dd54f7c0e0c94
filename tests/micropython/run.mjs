// Run a Python script on real MicroPython (the official WebAssembly port, in Node.js).
//
//   node run.mjs MANIFEST.json
//
// MANIFEST: {"micropython": path of the package's micropython.mjs (installed by npm ci from
//              package-lock.json into a cache directory, so not resolvable from here),
//            "files": [[source path on this machine, target path in MicroPython's FS], ...],
//            "script": path of the Python script to run, "path": [dirs to put on sys.path]}
//
// Writes the files (making their directories), prepends "path" to sys.path, runs the
// script, and passes its stdout through byte for byte. Exit status 0 when the script ran to
// the end; 1 with the Python traceback on stderr when it raised; 2 on a harness error.
// Used by tests/test_micropython_cores.py.
import { readFileSync } from "node:fs";
import { posix } from "node:path";
import { pathToFileURL } from "node:url";

function mkdirs(fs, dir) {
  let at = "";
  for (const part of dir.split("/").filter(Boolean)) {
    at += "/" + part;
    if (!fs.analyzePath(at).exists) fs.mkdir(at);
  }
}

async function main() {
  const manifest = JSON.parse(readFileSync(process.argv[2], "utf8"));
  const { loadMicroPython } = await import(pathToFileURL(manifest.micropython).href);
  const mp = await loadMicroPython({
    heapsize: 64 * 1024 * 1024,
    pystack: 16 * 1024,
    linebuffer: false,
    stdout: (data) => process.stdout.write(data),
    stderr: (data) => process.stderr.write(data),
  });
  for (const [source, target] of manifest.files) {
    mkdirs(mp.FS, posix.dirname(target));
    mp.FS.writeFile(target, readFileSync(source));
  }
  const script = readFileSync(manifest.script, "utf8");
  const prelude =
    "import sys\n" +
    (manifest.path || []).map((p) => `sys.path.insert(0, ${JSON.stringify(p)})\n`).reverse().join("");
  mp.runPython(prelude);
  // A script that raises throws a PythonError whose message is the formatted traceback.
  mp.runPython(script);
}

main().then(
  () => process.exit(0),
  (error) => {
    if (error && error.name === "PythonError") {
      process.stderr.write(`MicroPython raised ${error.type}:\n${error.message}\n`);
      process.exitCode = 1;
    } else {
      process.stderr.write(`harness error: ${error && error.stack ? error.stack : error}\n`);
      process.exitCode = 2;
    }
    process.exit();
  },
);
