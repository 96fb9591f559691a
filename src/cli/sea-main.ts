// `inetboot` as the single executable (scripts/build-sea.ts bundles from here): the bundle is
// CommonJS, which has no top-level await, so the exit code is set when the program settles.
import { main } from "./program.ts";

void main(process.argv).then((code) => {
  process.exitCode = code;
});
