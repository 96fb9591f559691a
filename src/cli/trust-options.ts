// The --trust, --insecure and --state options of every command that opens a release, and the
// trust policy they make.
import type { Command } from "commander";
import { defaultStatePath, loadTrustedKeys } from "../store/trust.ts";
import type { TrustPolicy } from "../store/trust.ts";
import { collect } from "./options.ts";

/** The parsed --trust/--insecure/--state flags (--state is absent where it is not offered). */
export interface TrustFlags {
  trust: string[];
  insecure?: boolean;
  state?: string;
}

/** The help texts of the trust options; `state: null` leaves --state out. */
export interface TrustOptionsHelp {
  trust: string;
  insecure: string;
  state: string | null;
}

/** extract, verify, ls and diff. */
export const STORE_TRUST_HELP: TrustOptionsHelp = {
  trust: "trust releases signed by this minisign public key (file or base64; repeatable)",
  insecure:
    "accept unsigned releases and bare .caibx indexes, and signed releases when no --trust key is given",
  state: `anti-rollback state file (default ${defaultStatePath()})`,
};

const INSECURE_HELP = "accept unsigned releases and bare .caibx indexes (nothing is checked)";

/** attach. */
export const ATTACH_TRUST_HELP: TrustOptionsHelp = {
  trust: "trust releases signed by this minisign public key (repeatable)",
  insecure: INSECURE_HELP,
  state: "anti-rollback state file",
};

/** run and profile record. */
export const VM_TRUST_HELP: TrustOptionsHelp = {
  trust: "trust releases signed by this key (repeatable)",
  insecure: INSECURE_HELP,
  state: "anti-rollback state file",
};

/** cache status: it only reads the cache, so it keeps no anti-rollback state. */
export const CACHE_TRUST_HELP: TrustOptionsHelp = {
  trust: "trust releases signed by this key (repeatable)",
  insecure: INSECURE_HELP,
  state: null,
};

/** Adds --trust (repeatable), --insecure and, unless `help.state` is null, --state to `cmd`. */
export function addTrustOptions(cmd: Command, help: TrustOptionsHelp): Command {
  cmd.option("--trust <pubkey>", help.trust, collect, []).option("--insecure", help.insecure);
  if (help.state !== null) cmd.option("--state <file>", help.state);
  return cmd;
}

export interface TrustPolicyOptions {
  /** Record accepted releases in the anti-rollback state file (--state, else the default). */
  recordState: boolean;
  /**
   * For commands that only report (verify, diff, cache status): with no --trust key, signed
   * releases are read without checking their signature instead of being refused.
   */
  insecureWithoutTrust?: boolean;
}

/** The trust policy a command's flags ask for. */
export function trustPolicy(flags: TrustFlags, options: TrustPolicyOptions): TrustPolicy {
  const insecure = flags.insecure ?? false;
  return {
    trusted: loadTrustedKeys(flags.trust),
    insecure: insecure || (options.insecureWithoutTrust === true && flags.trust.length === 0),
    statePath: options.recordState ? (flags.state ?? defaultStatePath()) : null,
  };
}
