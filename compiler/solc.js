#!/usr/bin/env node
// A `solc`-compatible command line over solc-js's standard-JSON compile(), for crytic-compile / Slither.
//
//   node compiler/solc.js SOLC_JS_DIR --version
//   node compiler/solc.js SOLC_JS_DIR [prefix=target ...] FILE... --combined-json abi,ast,bin,... [--allow-paths P]
//                         [--base-path P] [--include-path P]...
//   node compiler/solc.js SOLC_JS_DIR --standard-json < input.json
//
// SOLC_JS_DIR is an installed npm `solc` package (compiler/__init__.py's ensure_solc writes a shim that passes it).
// Only what crytic-compile asks for is implemented: unknown options are an error, not silently ignored.
// Imports resolve against the working directory, --base-path, --include-path and `node_modules` in each of them
// and their parents (how npm packages import each other); remappings go to the compiler's settings.
"use strict";
const fs = require("fs");
const path = require("path");

function fail(msg) {
  process.stderr.write(`error: ${msg}\n`);
  process.exit(1);
}

function parseArgs(argv) {
  const a = { files: [], remappings: [], roots: [], combined: null, version: false, standard: false };
  for (let i = 0; i < argv.length; i++) {
    const x = argv[i];
    const value = () => (i + 1 < argv.length ? argv[++i] : fail(`${x} needs a value`));
    if (x === "--version") a.version = true;
    else if (x === "--standard-json") a.standard = true;
    else if (x === "--combined-json") a.combined = value().split(",");
    else if (x === "--allow-paths") value(); // solc-js reads through our callback, which only reads files anyway
    else if (x === "--base-path" || x === "--include-path") a.roots.push(value());
    else if (x.startsWith("--")) fail(`option ${x} is not supported by the solc-js wrapper`);
    else if (x.includes("=")) a.remappings.push(x);
    else a.files.push(x);
  }
  return a;
}

function semverOf(solc) {
  const m = /^(\d+)\.(\d+)\.(\d+)/.exec(solc.version());
  return m ? [+m[1], +m[2], +m[3]] : fail(`cannot read the version of ${solc.version()}`);
}

const located = {}; // source unit name -> the file the import callback read it from

function makeReader(roots) {
  const bases = [process.cwd(), ...roots.map((r) => path.resolve(r))];
  return function findImport(name) {
    for (const base of bases) {
      const tried = [path.resolve(base, name)];
      for (let d = base; ; d = path.dirname(d)) {
        tried.push(path.join(d, "node_modules", name));
        if (path.dirname(d) === d) break;
      }
      for (const p of tried) {
        if (fs.existsSync(p) && fs.statSync(p).isFile()) {
          located[name] = p;
          return { contents: fs.readFileSync(p, "utf8") };
        }
      }
    }
    return { error: `File not found: ${name}` };
  };
}

function compileStandard(solc, input, reader) {
  const [, minor] = semverOf(solc);
  // 0.4/0.5 take a bare read callback; 0.6+ take {import: callback}.
  const out = minor < 6 ? solc.compileStandardWrapper(JSON.stringify(input), reader)
                        : solc.compile(JSON.stringify(input), { import: reader });
  return JSON.parse(out);
}

const WANT = {
  abi: ["abi"], bin: ["evm.bytecode.object"], "bin-runtime": ["evm.deployedBytecode.object"],
  srcmap: ["evm.bytecode.sourceMap"], "srcmap-runtime": ["evm.deployedBytecode.sourceMap"],
  userdoc: ["userdoc"], devdoc: ["devdoc"], hashes: ["evm.methodIdentifiers"],
};

function combinedJson(solc, args) {
  if (args.files.length === 0) fail("no input file given");
  const [, minor] = semverOf(solc);
  const sources = {};
  for (const f of args.files) {
    try { sources[f] = { content: fs.readFileSync(f, "utf8") }; } catch (e) { fail(`cannot read ${f}: ${e.message}`); }
  }
  const selected = [];
  for (const k of args.combined) {
    if (k === "ast" || k === "compact-format") continue; // the standard-JSON AST is the compact one on every version
    if (!WANT[k]) fail(`--combined-json ${k} is not supported by the solc-js wrapper`);
    selected.push(...WANT[k]);
  }
  const input = {
    language: "Solidity", sources,
    settings: { remappings: args.remappings, outputSelection: { "*": { "*": selected, "": ["ast"] } } },
  };
  let out = compileStandard(solc, input, makeReader(args.roots));
  const errors = (out.errors || []).filter((e) => e.severity === "error");
  for (const e of out.errors || []) process.stderr.write((e.formattedMessage || e.message) + "\n");
  if (errors.length) process.exit(1);
  // crytic-compile finds a source by its name relative to the working directory (or ./contracts, or node_modules
  // here and above). A name found only through --include-path ("src/lib/A.sol") is renamed to where it lies,
  // in the AST's absolutePath fields too, so Slither's import scopes still match.
  const rename = {};
  for (const name of Object.keys(out.sources || {})) {
    if (located[name] && !cryticFinds(name)) rename[name] = path.relative(process.cwd(), located[name]);
  }
  if (Object.keys(rename).length) out = renameSources(out, rename);
  // Before 0.8 solc's --combined-json printed abi, userdoc and devdoc as JSON strings; crytic-compile expects that.
  const asText = (v) => (minor < 8 ? JSON.stringify(v) : v);
  const contracts = {};
  for (const [file, byName] of Object.entries(out.contracts || {})) {
    for (const [name, c] of Object.entries(byName)) {
      const evm = c.evm || {};
      const e = {};
      if (args.combined.includes("abi")) e.abi = asText(c.abi || []);
      if (args.combined.includes("bin")) e.bin = (evm.bytecode || {}).object || "";
      if (args.combined.includes("bin-runtime")) e["bin-runtime"] = (evm.deployedBytecode || {}).object || "";
      if (args.combined.includes("srcmap")) e.srcmap = (evm.bytecode || {}).sourceMap || "";
      if (args.combined.includes("srcmap-runtime")) e["srcmap-runtime"] = (evm.deployedBytecode || {}).sourceMap || "";
      if (args.combined.includes("userdoc")) e.userdoc = asText(c.userdoc || {});
      if (args.combined.includes("devdoc")) e.devdoc = asText(c.devdoc || {});
      if (args.combined.includes("hashes")) e.hashes = evm.methodIdentifiers || {};
      contracts[`${file}:${name}`] = e;
    }
  }
  // sourceList is ordered by source id: the AST's src fields ("start:length:id") index into it.
  const sourceList = Object.keys(out.sources || {}).sort((x, y) => out.sources[x].id - out.sources[y].id);
  const srcs = {};
  for (const f of sourceList) srcs[f] = { AST: out.sources[f].ast };
  return { contracts, sourceList, sources: srcs, version: solc.version() };
}

function cryticFinds(name) {
  const isFile = (p) => fs.existsSync(p) && fs.statSync(p).isFile();
  const cwd = process.cwd();
  if (isFile(path.resolve(cwd, name)) || isFile(path.join(cwd, "contracts", name))) return true;
  for (let d = cwd; ; d = path.dirname(d)) {
    if (isFile(path.join(d, "node_modules", name))) return true;
    if (path.dirname(d) === d) return false;
  }
}

function renameSources(out, rename) {
  const walk = (node) => {
    if (Array.isArray(node)) node.forEach(walk);
    else if (node && typeof node === "object") {
      if (typeof node.absolutePath === "string" && rename[node.absolutePath]) node.absolutePath = rename[node.absolutePath];
      Object.values(node).forEach(walk);
    }
  };
  const sources = {};
  for (const [name, s] of Object.entries(out.sources)) { walk(s.ast); sources[rename[name] || name] = s; }
  const contracts = {};
  for (const [name, c] of Object.entries(out.contracts || {})) contracts[rename[name] || name] = c;
  return { ...out, sources, contracts };
}

function main() {
  const [dir, ...rest] = process.argv.slice(2);
  if (!dir) fail("usage: solc.js SOLC_JS_DIR [solc options]");
  const args = parseArgs(rest);
  if (args.version) {
    // crytic-compile reads the first x.y.z of stdout; reading package.json avoids loading the 10 MB compiler.
    const v = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8")).version;
    process.stdout.write(`solc, the solidity compiler commandline interface\nVersion: ${v}+solc-js\n`);
    return;
  }
  const solc = require(path.resolve(dir));
  if (args.standard) {
    const input = JSON.parse(fs.readFileSync(0, "utf8"));
    process.stdout.write(JSON.stringify(compileStandard(solc, input, makeReader(args.roots))));
    return;
  }
  if (!args.combined) fail("give --version, --standard-json or --combined-json");
  process.stdout.write(JSON.stringify(combinedJson(solc, args)));
}

main();
