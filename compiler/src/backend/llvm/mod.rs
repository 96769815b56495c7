//! What the CPU and CUDA backends share on the way to LLVM: the IR building blocks
//! (`ir`), f32 math built from arithmetic alone (`math`), the lowering of the Kernel IR's
//! index and value expressions (`expr`), and the optimisation and emission steps.
//! Nothing here knows a target's threads, vectors or address spaces.

pub(crate) mod expr;
pub(crate) mod ir;
pub(crate) mod math;

use crate::backend::{llvm_err, BackendError};
use inkwell::module::Module;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{FileType, TargetMachine};

/// Verifies `module` and runs the O3 pipeline tuned for `tm`'s CPU on it.
pub(crate) fn optimize(module: &Module<'_>, tm: &TargetMachine) -> Result<(), BackendError> {
    module.set_triple(&tm.get_triple());
    module.set_data_layout(&tm.get_target_data().get_data_layout());
    module
        .verify()
        .map_err(|e| llvm_err("verifying the generated IR")(e.to_string()))?;
    module
        .run_passes("default<O3>", tm, PassBuilderOptions::create())
        .map_err(|e| llvm_err("optimising")(e.to_string()))
}

/// Machine code (object file) or assembly text for an optimised module.
pub(crate) fn emit(
    module: &Module<'_>,
    tm: &TargetMachine,
    kind: FileType,
) -> Result<Vec<u8>, BackendError> {
    let buffer = tm
        .write_to_memory_buffer(module, kind)
        .map_err(|e| llvm_err("emitting code")(e.to_string()))?;
    Ok(buffer.as_slice().to_vec())
}
