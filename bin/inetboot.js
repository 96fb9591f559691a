#!/usr/bin/env node
// Entry point for `inetboot`: from a checkout, Node 24 runs the TypeScript sources directly (type
// stripping); the npm package carries them compiled to JavaScript in dist/ (Node does not strip
// types under node_modules).
/* global process, console, URL */
import { existsSync } from "node:fs";
import { enableCompileCache } from "node:module";

const major = Number(process.versions.node.split(".")[0]);
if (major < 24) {
  console.error(
    `inetboot needs Node.js 24 or newer; this is ${process.version}.\n` +
      "In a checkout, run it as `npx inetboot ...` (or `npm start`): npm ci installs the pinned Node 24. " +
      "Without Node 24, use the single executable or the Debian package (docs/install.md).",
  );
  process.exit(1);
}
// Node's compile cache keeps each module's compiled code, and for TypeScript its stripped
// JavaScript: a run after the first starts faster and never loads the stripper (~20 MB).
enableCompileCache();
const source = new URL("../src/cli/main.ts", import.meta.url);
await import(
  existsSync(source) ? source.href : new URL("../dist/cli/main.js", import.meta.url).href
);
