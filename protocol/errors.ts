// The base of every error that crosses a part's boundary: a stable `code` for
// programs (logs, NACK reasons, tests) beside the message for humans. Each part
// subclasses it once per family (BundleError, ChainError, …) so `name` says
// where the error came from.
export class CodedError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = new.target.name;
    this.code = code;
  }
}
