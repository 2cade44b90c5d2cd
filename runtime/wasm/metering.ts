// Load-time isolation for filters: a fuel meter and a memory cap written into
// the module itself, so a filter stuck in an endless loop or growing memory
// without bound traps like any other failing filter instead of hanging or
// exhausting the sidecar.
//
// In:  module bytes and FilterLimits.
// Out: new module bytes that (1) decrement the exported i32 global
//      `meshc_fuel` on every function entry, loop iteration and return and
//      execute `unreachable` once it is below zero (starting at one callback's
//      fuel, for the start function), and (2) declare a memory
//      maximum of at most `memoryMaxBytes`. The host sets `meshc_fuel` before
//      each callback (runtime/wasm/vm.ts).
//
// The meter is binaryen's `log-execution` pass (it inserts a call at exactly
// those three points) with the logging import replaced by a small internal
// function, which binaryen then inlines. The memory maximum is rewritten in
// the binary's memory section directly: a few bytes, no re-encoding of the
// data segments. Only the metering worker imports this module: binaryen costs
// tens of MiB, which the sidecar's main thread should not carry.
import binaryen from 'binaryen';
import { FUEL_GLOBAL, MeteringError, type FilterLimits } from './limits.ts';

const WASM_PAGE = 65536;
/** wasm32's own limit: 4 GiB. */
const MAX_PAGES = 65536;
const METER_IMPORT = 'log_execution';
/** Expression nodes in the meter function body; the inliner's size limit. */
const METER_SIZE = 12;

/**
 * The finished proposals Node 24's V8 runs by default. Not `All`: binaryen
 * would then be free to emit encodings of proposals V8 does not accept.
 */
const F = binaryen.Features;
const FEATURES =
  F.MutableGlobals | F.NontrappingFPToInt | F.SIMD128 | F.BulkMemory | F.BulkMemoryOpt | F.SignExt |
  F.TailCall | F.ReferenceTypes | F.Multivalue | F.ExtendedConst;

/** Rewrites module bytes with the fuel meter (when fuel > 0) and the memory cap. */
export function instrumentModule(bytes: Uint8Array, limits: FilterLimits): Uint8Array {
  const metered = limits.fuelPerCallback > 0 ? addFuelMeter(bytes, limits.fuelPerCallback) : bytes;
  return capMemory(metered, Math.min(MAX_PAGES, Math.floor(limits.memoryMaxBytes / WASM_PAGE)));
}

function addFuelMeter(bytes: Uint8Array, initialFuel: number): Uint8Array {
  let module: binaryen.Module;
  try {
    module = binaryen.readBinary(bytes);
  } catch (err) {
    throw new MeteringError('FILTER_METERING', `cannot read the module to meter it: ${(err as Error).message}`);
  }
  try {
    if (module.getFunction(METER_IMPORT) !== 0) {
      throw new MeteringError('FILTER_METERING', `module already defines a function named ${METER_IMPORT}`);
    }
    module.setFeatures(FEATURES);
    module.runPasses(['log-execution']);
    // The pass imported env.log_execution(i32); make it internal: fuel -= 1; trap below zero.
    module.removeFunction(METER_IMPORT);
    // The start function (if any) runs at instantiation, before the host can set the meter: give it one callback's worth.
    module.addGlobal(FUEL_GLOBAL, binaryen.i32, true, module.i32.const(Math.min(initialFuel, 0x7fffffff)));
    module.addGlobalExport(FUEL_GLOBAL, FUEL_GLOBAL);
    const fuel = (): number => module.global.get(FUEL_GLOBAL, binaryen.i32);
    module.addFunction(
      METER_IMPORT,
      binaryen.i32,
      binaryen.none,
      [],
      module.block(null, [
        module.global.set(FUEL_GLOBAL, module.i32.sub(fuel(), module.i32.const(1))),
        module.if(module.i32.lt_s(fuel(), module.i32.const(0)), module.unreachable()),
      ]),
    );
    // Inline the meter everywhere (it is tiny) and drop the unused id argument.
    // Sizes chosen so the meter (10 nodes) is inlined and the filter's own functions mostly are not.
    const saved = [binaryen.getAlwaysInlineMaxSize(), binaryen.getFlexibleInlineMaxSize(), binaryen.getOneCallerInlineMaxSize()] as const;
    binaryen.setAlwaysInlineMaxSize(METER_SIZE);
    binaryen.setFlexibleInlineMaxSize(0);
    binaryen.setOneCallerInlineMaxSize(0);
    try {
      module.runPasses(['inlining', 'simplify-locals-nostructure', 'vacuum', 'remove-unused-module-elements']);
    } finally {
      binaryen.setAlwaysInlineMaxSize(saved[0]);
      binaryen.setFlexibleInlineMaxSize(saved[1]);
      binaryen.setOneCallerInlineMaxSize(saved[2]);
    }
    if (!module.validate()) throw new MeteringError('FILTER_METERING', 'the metered module does not validate');
    return module.emitBinary();
  } finally {
    module.dispose();
  }
}

// ---- memory cap: the binary's memory section, edited in place ----

function readLeb(bytes: Uint8Array, offset: number): { value: number; next: number } {
  let value = 0;
  let shift = 0;
  let pos = offset;
  for (;;) {
    if (pos >= bytes.length) throw new MeteringError('FILTER_METERING', 'truncated LEB128 in the module');
    const b = bytes[pos++]!;
    value += (b & 0x7f) * 2 ** shift;
    shift += 7;
    if ((b & 0x80) === 0) return { value, next: pos };
  }
}

function writeLeb(value: number): number[] {
  const out: number[] = [];
  do {
    let b = value % 128;
    value = Math.floor(value / 128);
    if (value > 0) b |= 0x80;
    out.push(b);
  } while (value > 0);
  return out;
}

/**
 * Sets the defined memory's maximum to min(declared maximum, capPages).
 * Refuses a module whose initial memory already exceeds the cap, and shared
 * or 64-bit memories (no proxy-wasm SDK emits them).
 */
export function capMemory(bytes: Uint8Array, capPages: number): Uint8Array {
  let pos = 8; // magic + version
  while (pos < bytes.length) {
    const id = bytes[pos]!;
    const size = readLeb(bytes, pos + 1);
    const start = size.next;
    const end = start + size.value;
    if (id === 5) {
      const count = readLeb(bytes, start);
      if (count.value !== 1) throw new MeteringError('FILTER_MEMORY', `module defines ${count.value} memories, expected 1`);
      const flags = bytes[count.next]!;
      if (flags > 1) throw new MeteringError('FILTER_MEMORY', `module memory has flags ${flags} (shared or 64-bit), not supported`);
      const initial = readLeb(bytes, count.next + 1);
      let max = capPages;
      if (flags === 1) max = Math.min(max, readLeb(bytes, initial.next).value);
      const limitsEnd = flags === 1 ? readLeb(bytes, initial.next).next : initial.next;
      if (initial.value > capPages) {
        throw new MeteringError(
          'FILTER_MEMORY',
          `module starts with ${initial.value * 64} KiB of memory, over the cap of ${capPages * 64} KiB`,
        );
      }
      const body = [...writeLeb(1), 1, ...writeLeb(initial.value), ...writeLeb(max), ...bytes.subarray(limitsEnd, end)];
      const section = [5, ...writeLeb(body.length), ...body];
      const out = new Uint8Array(pos + section.length + (bytes.length - end));
      out.set(bytes.subarray(0, pos), 0);
      out.set(section, pos);
      out.set(bytes.subarray(end), pos + section.length);
      return out;
    }
    pos = end;
  }
  // No memory section: the memory is imported (the host provides none, so instantiation reports it) or absent.
  return bytes;
}
