// The boot server's configuration: types (config/types.ts), parsing (config/parse.ts), host
// facts (config/host.ts). One import for the rest of the server.
export { parseConfig, loadConfig } from "./config/parse.ts";
export { probeHost, fakeHost } from "./config/host.ts";
export type { HostProbe } from "./config/host.ts";
export { BUILTIN_MENU, ConfigError } from "./config/types.ts";
export type { DhcpModeSetting, FileRef, ImageRef, MatchRule } from "./config/types.ts";
export type { Entry, ServeConfig } from "./config/serve-config.ts";
