// The option haggling phase of one NBD connection (fixed newstyle, NBD protocol "Option
// haggling"): the client lists, inquires and chooses an export, turns on structured replies and
// base:allocation; it ends with the export chosen (NBD_OPT_GO, NBD_OPT_EXPORT_NAME) or an abort.
import type { Socket } from "node:net";
import type { BlockDevice } from "../block/block-device.ts";
import type { ByteQueue } from "./byte-queue.ts";
import type { ConnectionHost } from "./connection-host.ts";
import { drained } from "../lib/drained.ts";
import type { NbdExport } from "./options.ts";
import * as P from "./protocol.ts";

/** Unsent option replies (bytes) after which the server reads no more options until they drain. */
const MAX_UNSENT_OPTION_REPLIES = 1024 * 1024;

/** The id of the one metadata context served (base:allocation). */
export const BASE_ALLOCATION_ID = 1;

export function transmissionFlags(device: BlockDevice): number {
  let flags = P.NBD_FLAG_HAS_FLAGS | P.NBD_FLAG_SEND_DF | P.NBD_FLAG_SEND_CACHE;
  if (device.readOnly) flags |= P.NBD_FLAG_READ_ONLY | P.NBD_FLAG_CAN_MULTI_CONN;
  else {
    flags |=
      P.NBD_FLAG_SEND_FLUSH |
      P.NBD_FLAG_SEND_FUA |
      P.NBD_FLAG_SEND_TRIM |
      P.NBD_FLAG_SEND_WRITE_ZEROES;
  }
  return flags;
}

/** One connection's option haggling; `run` returns the export to serve (null: aborted). */
export class Negotiation {
  /** NBD_OPT_STRUCTURED_REPLY was negotiated. */
  structured = false;
  /** NBD_OPT_SET_META_CONTEXT selected base:allocation. */
  baseAllocation = false;
  readonly #host: ConnectionHost;
  readonly #socket: Socket;
  readonly #in: ByteQueue;
  readonly #noZeroes: boolean;

  constructor(
    host: ConnectionHost,
    connection: { socket: Socket; input: ByteQueue; noZeroes: boolean },
  ) {
    this.#host = host;
    this.#socket = connection.socket;
    this.#in = connection.input;
    this.#noZeroes = connection.noZeroes;
  }

  #reply(option: number, type: number, data?: Uint8Array): void {
    this.#socket.write(P.encodeOptionReply(option, type, data));
  }

  /** Option haggling; returns the export to serve, or null when the client aborted. */
  async run(): Promise<NbdExport | null> {
    for (;;) {
      // A client that sends options but never reads the replies is not buffered for.
      await drained(this.#socket, MAX_UNSENT_OPTION_REPLIES);
      const { option, length } = P.decodeOptionHeader(await this.#in.read(P.OPTION_HEADER_SIZE));
      if (length > P.MAX_OPTION_LENGTH) {
        await this.#in.skip(length);
        this.#reply(option, P.NBD_REP_ERR_TOO_BIG);
        continue;
      }
      const data = length > 0 ? await this.#in.read(length) : Buffer.alloc(0);
      switch (option) {
        case P.NBD_OPT_EXPORT_NAME: {
          const e = this.#host.exportNamed(data.toString("utf8"), this.#socket.remoteAddress);
          if (!e)
            throw new P.NbdProtocolError(
              `unknown export "${this.#host.logName(data.toString("utf8"))}" requested with NBD_OPT_EXPORT_NAME`,
            );
          this.#socket.write(
            P.encodeExportNameReply(e.device.size, transmissionFlags(e.device), this.#noZeroes),
          );
          return e;
        }
        case P.NBD_OPT_ABORT:
          this.#reply(option, P.NBD_REP_ACK);
          return null;
        case P.NBD_OPT_LIST:
          if (length !== 0) {
            this.#reply(option, P.NBD_REP_ERR_INVALID);
            break;
          }
          for (const name of this.#host.exportNames(this.#socket.remoteAddress))
            this.#reply(option, P.NBD_REP_SERVER, P.encodeServerEntry(name));
          this.#reply(option, P.NBD_REP_ACK);
          break;
        case P.NBD_OPT_INFO:
        case P.NBD_OPT_GO: {
          const e = this.#info(option, data);
          if (e && option === P.NBD_OPT_GO) return e;
          break;
        }
        case P.NBD_OPT_STRUCTURED_REPLY:
          if (length !== 0) this.#reply(option, P.NBD_REP_ERR_INVALID);
          else {
            this.structured = true;
            this.#reply(option, P.NBD_REP_ACK);
          }
          break;
        case P.NBD_OPT_LIST_META_CONTEXT:
        case P.NBD_OPT_SET_META_CONTEXT:
          this.#metaContext(option, data);
          break;
        default:
          this.#reply(option, P.NBD_REP_ERR_UNSUP);
      }
    }
  }

  /** NBD_OPT_INFO / NBD_OPT_GO: the export's size, flags and block sizes; null when refused. */
  #info(option: number, data: Buffer): NbdExport | null {
    let req: { name: string; requests: number[] };
    try {
      req = P.decodeInfoRequest(data);
    } catch {
      this.#reply(option, P.NBD_REP_ERR_INVALID);
      return null;
    }
    const e = this.#host.exportNamed(req.name, this.#socket.remoteAddress);
    if (!e) {
      this.#reply(option, P.NBD_REP_ERR_UNKNOWN, Buffer.from(`no export named "${req.name}"`));
      return null;
    }
    this.#reply(
      option,
      P.NBD_REP_INFO,
      P.encodeInfoExport(e.device.size, transmissionFlags(e.device)),
    );
    if (req.requests.includes(P.NBD_INFO_NAME))
      this.#reply(option, P.NBD_REP_INFO, P.encodeInfoString(P.NBD_INFO_NAME, e.name));
    if (req.requests.includes(P.NBD_INFO_DESCRIPTION) && e.description) {
      this.#reply(
        option,
        P.NBD_REP_INFO,
        P.encodeInfoString(P.NBD_INFO_DESCRIPTION, e.description),
      );
    }
    this.#reply(
      option,
      P.NBD_REP_INFO,
      P.encodeInfoBlockSize(1, 4096, this.#host.limits.maxRequestBytes),
    );
    this.#reply(option, P.NBD_REP_ACK);
    return e;
  }

  /** NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT: only base:allocation exists. */
  #metaContext(option: number, data: Buffer): void {
    let req: { name: string; queries: string[] };
    try {
      req = P.decodeMetaContextRequest(data);
    } catch {
      this.#reply(option, P.NBD_REP_ERR_INVALID);
      return;
    }
    if (!this.structured) {
      this.#reply(
        option,
        P.NBD_REP_ERR_INVALID,
        Buffer.from("negotiate NBD_OPT_STRUCTURED_REPLY first"),
      );
      return;
    }
    if (!this.#host.exportNamed(req.name, this.#socket.remoteAddress)) {
      this.#reply(option, P.NBD_REP_ERR_UNKNOWN);
      return;
    }
    const listAll = option === P.NBD_OPT_LIST_META_CONTEXT && req.queries.length === 0;
    const match = listAll || req.queries.some((q) => q === P.BASE_ALLOCATION || q === "base:");
    if (option === P.NBD_OPT_SET_META_CONTEXT) this.baseAllocation = match;
    if (match)
      this.#reply(
        option,
        P.NBD_REP_META_CONTEXT,
        P.encodeMetaContext(BASE_ALLOCATION_ID, P.BASE_ALLOCATION),
      );
    this.#reply(option, P.NBD_REP_ACK);
  }
}
