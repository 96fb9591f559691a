// What commands share to report: JSON output, and a failure whose report is already printed.

/** Raised for a failed check whose report was already printed: exit 1 without another message. */
export class ReportedFailure extends Error {}

export function printJson(value: unknown): void {
  console.log(JSON.stringify(value, null, 2));
}
