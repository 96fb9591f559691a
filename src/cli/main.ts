// `inetboot` as run from a checkout (bin/inetboot.js) or the npm package: runs the program.
import { main } from "./program.ts";

process.exitCode = await main(process.argv);
