// The OpenAPI 3.1 document of the machine API (/api/v1, registry-routes.ts), served at
// /api/v1/openapi.json; the tests check every request and response against it.

const error = { $ref: "#/components/schemas/Error" };
const machine = { $ref: "#/components/schemas/Machine" };
const mac = {
  name: "mac",
  in: "path",
  required: true,
  description: "52:54:00:12:34:56 or 52-54-00-12-34-56",
  schema: { type: "string" },
};
const ifMatch = {
  name: "If-Match",
  in: "header",
  required: false,
  description: "The record's ETag: the write is refused (412) when the record changed since",
  schema: { type: "string" },
};
const errors = (...codes: number[]): Record<string, unknown> =>
  Object.fromEntries(
    // Every operation may fail inside the server (500), with the same error shape.
    [...codes, 500].map((c) => [
      String(c),
      { description: "an error", content: { "application/json": { schema: error } } },
    ]),
  );
const ok = (schema: unknown, description = "ok"): Record<string, unknown> => ({
  description,
  headers: { ETag: { schema: { type: "string" } } },
  content: { "application/json": { schema } },
});
const body = (schema: unknown): Record<string, unknown> => ({
  required: true,
  content: { "application/json": { schema } },
});
const write = { security: [{ writeToken: [] }] };
const pinned = {
  description: "the entry's pin now",
  content: {
    "application/json": {
      schema: {
        type: "object",
        required: ["entry", "pinned"],
        properties: { entry: { type: "string" }, pinned: { type: ["string", "null"] } },
        additionalProperties: false,
      },
    },
  },
};

export const OPENAPI = {
  openapi: "3.1.0",
  info: {
    title: "inetboot machine API",
    version: "1",
    description:
      "The machine registry of inetboot serve: records (host name, labels, the entry a machine boots, its next boot, notes) kept in STATE/machines.json; a registry record for a MAC wins over the YAML rules.",
  },
  components: {
    securitySchemes: { writeToken: { type: "http", scheme: "bearer" } },
    schemas: {
      Error: {
        type: "object",
        required: ["error"],
        properties: { error: { type: "string" }, field: { type: "string" } },
        additionalProperties: false,
      },
      MachineIn: {
        type: "object",
        properties: {
          hostname: { type: ["string", "null"], maxLength: 253 },
          labels: {
            type: ["object", "null"],
            additionalProperties: { type: "string", maxLength: 253 },
            maxProperties: 32,
          },
          entry: { type: ["string", "null"] },
          next: { type: ["string", "null"] },
          notes: { type: ["string", "null"], maxLength: 4096 },
        },
        additionalProperties: false,
      },
      Machine: {
        type: "object",
        required: ["mac", "version", "updated"],
        properties: {
          mac: { type: "string", pattern: "^([0-9a-f]{2}:){5}[0-9a-f]{2}$" },
          version: { type: "integer", minimum: 1 },
          updated: { type: "string" },
          hostname: { type: "string" },
          labels: { type: "object", additionalProperties: { type: "string" } },
          entry: { type: "string" },
          next: { type: "string" },
          notes: { type: "string" },
        },
        additionalProperties: false,
      },
    },
  },
  paths: {
    "/api/v1/machines": {
      get: {
        summary: "every registry record",
        responses: {
          "200": {
            description: "ok",
            content: {
              "application/json": {
                schema: {
                  type: "object",
                  required: ["machines"],
                  properties: { machines: { type: "array", items: machine } },
                  additionalProperties: false,
                },
              },
            },
          },
          ...errors(401, 503),
        },
      },
    },
    "/api/v1/machines/{mac}": {
      parameters: [mac],
      get: {
        summary: "a machine's record",
        responses: { "200": ok(machine), ...errors(400, 401, 404, 503) },
      },
      put: {
        summary: "make or replace a machine's record",
        ...write,
        parameters: [ifMatch],
        requestBody: body({ $ref: "#/components/schemas/MachineIn" }),
        responses: {
          "200": ok(machine, "replaced"),
          "201": ok(machine, "made"),
          ...errors(400, 415, 401, 403, 412, 413, 429, 507),
        },
      },
      patch: {
        summary: "change the fields given (null clears one)",
        ...write,
        parameters: [ifMatch],
        requestBody: body({ $ref: "#/components/schemas/MachineIn" }),
        responses: { "200": ok(machine), ...errors(400, 415, 401, 403, 404, 412, 413, 429) },
      },
      delete: {
        summary: "remove a machine's record (the rules choose for it again)",
        ...write,
        parameters: [ifMatch],
        responses: { "204": { description: "removed" }, ...errors(400, 401, 403, 404, 412, 429) },
      },
    },
    "/api/v1/machines/{mac}/next": {
      parameters: [mac],
      put: {
        summary: "the entry the machine's next boot uses, once",
        ...write,
        parameters: [ifMatch],
        requestBody: body({
          type: "object",
          required: ["entry"],
          properties: { entry: { type: "string" } },
          additionalProperties: false,
        }),
        responses: {
          "200": ok(machine),
          "201": ok(machine, "made (with its next boot)"),
          ...errors(400, 415, 401, 403, 412, 413, 429),
        },
      },
      delete: {
        summary: "clear the next boot",
        ...write,
        parameters: [ifMatch],
        responses: { "200": ok(machine), ...errors(400, 401, 403, 404, 412, 429) },
      },
    },
    "/api/v1/machines/{mac}/reset-disk": {
      parameters: [mac],
      post: {
        summary: "discard the machine's disk of an image entry (its next boot starts fresh)",
        ...write,
        requestBody: body({
          type: "object",
          required: ["entry"],
          properties: { entry: { type: "string" } },
        }),
        responses: {
          "200": {
            description: "reset",
            content: {
              "application/json": {
                schema: {
                  type: "object",
                  required: ["mac", "entry", "had"],
                  properties: {
                    mac: { type: "string" },
                    entry: { type: "string" },
                    had: { type: "boolean" },
                  },
                  additionalProperties: false,
                },
              },
            },
          },
          ...errors(400, 415, 401, 403, 413, 429, 503),
        },
      },
    },
    "/api/v1/images/{entry}/pin": {
      parameters: [{ name: "entry", in: "path", required: true, schema: { type: "string" } }],
      put: {
        summary: "pin an image entry to a release of its store (a roll-back)",
        ...write,
        requestBody: body({
          type: "object",
          required: ["release"],
          properties: { release: { type: "string", pattern: "^[0-9a-f]{64}$" } },
          additionalProperties: false,
        }),
        responses: { "200": pinned, ...errors(400, 415, 401, 403, 404, 413, 429, 503) },
      },
      delete: {
        summary: "unpin: the entry follows its store's latest release again",
        ...write,
        responses: { "200": pinned, ...errors(401, 403, 404, 429, 503) },
      },
    },
    "/api/v1/reload": {
      post: {
        summary: "read the configuration file again and use it (as SIGHUP does)",
        ...write,
        responses: {
          "200": {
            description: "reloaded",
            content: {
              "application/json": {
                schema: {
                  type: "object",
                  required: ["reloaded", "changes"],
                  properties: { reloaded: { const: true }, changes: { type: "string" } },
                  additionalProperties: false,
                },
              },
            },
          },
          ...errors(401, 403, 409, 422, 429),
        },
      },
    },
  },
} as const;
