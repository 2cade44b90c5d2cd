// The module's abort handler (asc `--use abort=filters/abort/meshAbort`): logs
// the message through proxy_log and traps, so the host applies the filter's
// failure policy. In: the assertion message and location. Out: a trap.
import { proxy_log } from "./host";
import { LOG_ERROR } from "./constants";

export function meshAbort(message: string | null, fileName: string | null, line: u32, column: u32): void {
  let text = "meshc filter aborted: ";
  text += message !== null ? message : "(no message)";
  if (fileName !== null) text += " at " + fileName + ":" + line.toString() + ":" + column.toString();
  const bytes = String.UTF8.encode(text);
  proxy_log(LOG_ERROR, changetype<usize>(bytes), <usize>bytes.byteLength);
  unreachable();
}
