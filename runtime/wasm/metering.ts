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
// data segments. Only the metering process imports this module: binaryen costs
// tens of MiB, which the sidecar process should not carry.
import binaryen from 'binaryen';
import { FUEL_GLOBAL, MeteringError, type FilterLimits } from './limits.ts';
import { capMemoryBytes } from './memory-cap.ts';

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

/** Rewrites module bytes with the fuel meter and the memory cap. */
export function instrumentModule(bytes: Uint8Array, limits: FilterLimits): Uint8Array {
  return capMemoryBytes(addFuelMeter(bytes, limits.fuelPerCallback), limits.memoryMaxBytes);
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
