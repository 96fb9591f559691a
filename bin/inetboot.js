#!/usr/bin/env node
// Entry point for `npx inetboot`: Node 24 runs the TypeScript sources directly (type stripping).
/* global process, console */
const major = Number(process.versions.node.split(".")[0]);
if (major < 24) {
  console.error(
    `inetboot needs Node.js 24 or newer; this is ${process.version}.\n` +
      "Run it as `npx inetboot ...` (or `npm start`) inside the project: npm ci installs the pinned Node 24.",
  );
  process.exit(1);
}
await import("../src/cli/main.ts");
