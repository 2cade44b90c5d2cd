// Structured logging: one JSON object per line on stderr (or a sink a test provides).
//
// In:  a component name and fields. Out: `{"ts":...,"level":...,"component":...,"msg":...}` lines.

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type LogSink = (line: Record<string, unknown>) => void;

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(component: string): Logger;
}

const stderrSink: LogSink = (line) => {
  process.stderr.write(JSON.stringify(line) + '\n');
};

/** A sink that drops everything: for tests and for `meshc up`, which prints its own summary. */
export const silentSink: LogSink = () => {};

export function createLogger(component: string, sink: LogSink = stderrSink): Logger {
  const emit = (level: LogLevel, msg: string, fields?: Record<string, unknown>): void => {
    sink({ ts: new Date().toISOString(), level, component, msg, ...fields });
  };
  return {
    debug: (msg, fields) => emit('debug', msg, fields),
    info: (msg, fields) => emit('info', msg, fields),
    warn: (msg, fields) => emit('warn', msg, fields),
    error: (msg, fields) => emit('error', msg, fields),
    child: (sub) => createLogger(`${component}.${sub}`, sink),
  };
}
