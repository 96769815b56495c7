//! The CUDA backend: Kernel IR → a thread program per kernel → PTX through LLVM's NVPTX
//! target, launched by the runtime through the CUDA driver.
//!
//! **Launch model.** Every kernel takes `(void *const *bufs, const int64_t *dims)`: the
//! device addresses of its buffers (the same argument list as on the CPU) and the symbol
//! values. Blocks have [`PTX_THREADS`] threads; a kernel is launched with a few blocks
//! per SM ([`Grid::PerSm`]) and loops over its work (grid-stride loops over elements,
//! warps or tiles), so launch shapes do not depend on run-time sizes and the manifest
//! gives them as constants; a scan runs in one block ([`Grid::One`]).
//!
//! **Testing without a GPU.** The same generators also emit the thread program for the
//! host ([`Mode::Host`]): special registers read from a context, the barrier and the
//! shuffle called through it. `sim` runs that library with one OS thread per GPU thread
//! and real barriers, so index arithmetic, tiling, bounds, barriers and shuffles are
//! checked against the evaluator on any machine; `ptxas` checks the PTX itself.
//!
//! - `simt` — the primitives for both modes.
//! - `lower` — the kernel kinds.
//! - `sim` — the host simulator.

mod lower;
pub mod sim;
mod simt;

pub use lower::{Grid, KernelLaunch, Tiling};
pub use simt::{Mode, STATIC_SHARED_BYTES};

use crate::backend::llvm::ir::Ir;
use crate::backend::{llvm_err, BackendError};
use crate::kernel::Program;
use inkwell::context::Context;
use inkwell::targets::{
    CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetMachine,
};
use inkwell::OptimizationLevel;
use std::path::PathBuf;

/// Threads per block on the GPU.
pub const PTX_THREADS: u64 = 256;
/// Threads per block in the host simulator (fewer OS threads; the generators are written
/// for any multiple of 32 that divides 256).
pub const SIM_THREADS: u64 = 64;

/// SM generations archc generates for.
pub const SMS: [u32; 2] = [80, 90];

/// A program lowered for the GPU.
pub struct CudaLowered {
    pub ptx: String,
    /// The PTX's `.target` (`sm_80`, `sm_90`, or `sm_90a` for `wgmma` tiles) and the
    /// PTX ISA feature it was emitted with.
    pub arch: String,
    pub features: String,
    /// The module before optimisation (for `ARCHC_DUMP`-style inspection and snapshots).
    pub llvm_ir: String,
    /// One launch per kernel of the program, in order.
    pub kernels: Vec<KernelLaunch>,
    pub threads: u64,
}

/// A program lowered for the host simulator.
pub struct SimLowered {
    pub object: Vec<u8>,
    pub kernels: Vec<KernelLaunch>,
    pub threads: u64,
}

fn check_sm(sm: u32) -> Result<(), BackendError> {
    if SMS.contains(&sm) {
        Ok(())
    } else {
        Err(BackendError::Unsupported(format!(
            "sm_{sm}: archc generates PTX for sm_80 (Ampere) and sm_90 (Hopper)"
        )))
    }
}

/// The NVPTX target machine for `sm_{sm}` (PTX ISA 7.8, which both generations accept),
/// or with `wgmma` for `sm_90a` (PTX ISA 8.0: Hopper's warpgroup instructions, which run
/// on sm_90 parts only).
fn nvptx_machine(sm: u32, wgmma: bool) -> Result<TargetMachine, BackendError> {
    check_sm(sm)?;
    Target::initialize_nvptx(&InitializationConfig::default());
    let triple = inkwell::targets::TargetTriple::create("nvptx64-nvidia-cuda");
    let target = Target::from_triple(&triple)
        .map_err(|e| llvm_err("finding the NVPTX target")(e.to_string()))?;
    let (cpu, features) = if wgmma {
        (format!("sm_{sm}a"), "+ptx80")
    } else {
        (format!("sm_{sm}"), "+ptx78")
    };
    target
        .create_target_machine(
            &triple,
            &cpu,
            features,
            OptimizationLevel::Aggressive,
            RelocMode::Default,
            CodeModel::Default,
        )
        .ok_or_else(|| BackendError::Unsupported(format!("LLVM cannot target {cpu}")))
}

/// Whether `ARCHC_MMA` asks for Hopper's warpgroup products: `wgmma`, or `mma` (the
/// default: `mma.sync`, which every generation runs). Unverified on a GPU so far, so
/// chosen only on request (see ARCHITECTURE.md, "wgmma tiles").
pub fn wgmma_requested() -> Result<bool, BackendError> {
    match std::env::var("ARCHC_MMA") {
        Err(_) => Ok(false),
        Ok(v) if v == "mma" => Ok(false),
        Ok(v) if v == "wgmma" => Ok(true),
        Ok(v) => Err(BackendError::Unsupported(format!(
            "ARCHC_MMA={v}: the tensor-core instructions are mma (mma.sync, the default) and wgmma (sm_90 with --dtype bf16|f16)"
        ))),
    }
}

/// The shared-memory stages of the matmuls' k loop asked for by `ARCHC_STAGES` (2 to 6;
/// `None`: the tiling's own). More stages keep more k steps in flight; past 48 KiB a
/// block's stages are dynamic shared memory. The defaults stay until a GPU times them
/// (`tools/device_check.sh` times 3 and 4).
pub fn stages_requested() -> Result<Option<u64>, BackendError> {
    match std::env::var("ARCHC_STAGES") {
        Err(_) => Ok(None),
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(n @ 2..=6) => Ok(Some(n)),
            _ => Err(BackendError::Unsupported(format!(
                "ARCHC_STAGES={v}: the matmuls' shared-memory stages are 2 to 6"
            ))),
        },
    }
}

/// The 4-byte words of k per staged row asked for by `ARCHC_KWORDS` (16, the default,
/// or 32; `None`: the default): twice the k per stage halves the waits and barriers per
/// flop for twice the shared memory. Stays 16 until a GPU times 32
/// (`tools/device_check.sh`).
pub fn kwords_requested() -> Result<Option<u64>, BackendError> {
    match std::env::var("ARCHC_KWORDS") {
        Err(_) => Ok(None),
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(n @ (16 | 32)) => Ok(Some(n)),
            _ => Err(BackendError::Unsupported(format!(
                "ARCHC_KWORDS={v}: the words of k per staged matmul row are 16 (the default) or 32"
            ))),
        },
    }
}

/// The matmul tiling of `prog` for `sm_{sm}`: [`Tiling::wgmma`] on sm_90 with
/// half-precision products when [`wgmma_requested`], else the `mma.sync` one; with
/// [`stages_requested`]'s stages and [`kwords_requested`]'s k when asked.
pub fn ptx_tiling(prog: &Program, sm: u32) -> Result<Tiling, BackendError> {
    let mut t = if sm == 90 && prog.half_matmul.is_some() && wgmma_requested()? {
        Tiling::wgmma()
    } else {
        Tiling::for_mode(Mode::Ptx { sm })
    };
    if let Some(n) = stages_requested()? {
        t.stages = n;
    }
    if let Some(kw) = kwords_requested()? {
        t.kw = kw;
    }
    if !ldmatrix_requested()? {
        t.ldmatrix = false;
    }
    Ok(t)
}

/// Whether `mma.sync` fragments are loaded by `ldmatrix` (`ARCHC_LDMATRIX=1`, the
/// default) or one shared-memory word at a time (`ARCHC_LDMATRIX=0`, to time against).
pub fn ldmatrix_requested() -> Result<bool, BackendError> {
    match std::env::var("ARCHC_LDMATRIX").as_deref() {
        Err(_) | Ok("1") => Ok(true),
        Ok("0") => Ok(false),
        Ok(v) => Err(BackendError::Unsupported(format!(
            "ARCHC_LDMATRIX={v}: 1 (the default) loads mma fragments by ldmatrix, 0 word by word"
        ))),
    }
}

/// Lowers `prog` to PTX for `sm_{sm}`.
pub fn lower_ptx(prog: &Program, sm: u32) -> Result<CudaLowered, BackendError> {
    lower_ptx_for(prog, &[sm]).map(|mut v| v.remove(0))
}

/// Lowers `prog` to PTX for each SM generation of `sms`: where their thread programs are
/// the same (the same [`ptx_tiling`]), the module is built and optimised once and only
/// instruction selection runs per generation.
pub fn lower_ptx_for(prog: &Program, sms: &[u32]) -> Result<Vec<CudaLowered>, BackendError> {
    let tilings = sms
        .iter()
        .map(|&sm| ptx_tiling(prog, sm))
        .collect::<Result<Vec<_>, _>>()?;
    let Some(&tiling) = tilings.first() else {
        return Ok(Vec::new());
    };
    if tilings.iter().any(|&t| t != tiling) {
        return sms
            .iter()
            .zip(tilings)
            .map(|(&sm, t)| lower_ptx_tiled(prog, &[sm], t).map(|mut v| v.remove(0)))
            .collect();
    }
    lower_ptx_tiled(prog, sms, tiling)
}

/// [`lower_ptx_for`] with the matmuls tiled as `tiling` for every generation of `sms`
/// ([`Tiling::wgmma`] targets sm_90a).
pub fn lower_ptx_tiled(
    prog: &Program,
    sms: &[u32],
    tiling: Tiling,
) -> Result<Vec<CudaLowered>, BackendError> {
    if sms.is_empty() {
        return Ok(Vec::new());
    }
    if tiling.wgmma && (sms.iter().any(|&sm| sm != 90) || prog.half_matmul.is_none()) {
        return Err(BackendError::Unsupported(
            "wgmma tiles are for sm_90 with half-precision products (--dtype bf16|f16)".into(),
        ));
    }
    let max_head_dim = crate::package::max_value_dim(prog);
    let machines = sms
        .iter()
        .map(|&sm| nvptx_machine(sm, tiling.wgmma))
        .collect::<Result<Vec<_>, _>>()?;
    let first = &machines[0];
    let ctx = Context::create();
    let ir = Ir::new(&ctx, "archc_cuda");
    let kernels = lower::emit_kernels(
        &ir,
        prog,
        Mode::Ptx { sm: sms[0] },
        PTX_THREADS,
        max_head_dim,
        tiling,
    )?;
    let llvm_ir = ir.module.print_to_string().to_string();
    crate::backend::llvm::optimize(&ir.module, first)?;
    machines
        .iter()
        .zip(sms)
        .map(|(tm, &sm)| {
            let bytes = crate::backend::llvm::emit(&ir.module, tm, FileType::Assembly)?;
            let ptx = String::from_utf8(bytes)
                .map_err(|e| llvm_err("emitting PTX")(format!("PTX is not UTF-8: {e}")))?;
            let (arch, features) = if tiling.wgmma {
                (format!("sm_{sm}a"), "+ptx80")
            } else {
                (format!("sm_{sm}"), "+ptx78")
            };
            Ok(CudaLowered {
                ptx: ptx.trim_end_matches('\0').to_string(),
                arch,
                features: features.into(),
                llvm_ir: llvm_ir.clone(),
                kernels: kernels.clone(),
                threads: PTX_THREADS,
            })
        })
        .collect()
}

/// Lowers `prog` to the host simulator's object code.
pub fn lower_sim(prog: &Program) -> Result<SimLowered, BackendError> {
    lower_sim_tiled(prog, Tiling::for_mode(Mode::Host))
}

/// [`lower_sim`] with the matmuls tiled as `tiling` (a GPU's, to run its tiles here),
/// in blocks of [`SIM_THREADS`] threads — of [`PTX_THREADS`] for `wgmma` tiles, which
/// need whole warpgroups: the GPU's blocks.
pub fn lower_sim_tiled(prog: &Program, tiling: Tiling) -> Result<SimLowered, BackendError> {
    let threads_per_block = if tiling.wgmma {
        PTX_THREADS
    } else {
        SIM_THREADS
    };
    let max_head_dim = crate::package::max_value_dim(prog);
    let target = crate::backend::cpu::CpuTarget::host()?;
    let tm = crate::backend::cpu::target_machine(&target)?;
    let ctx = Context::create();
    let ir = Ir::new(&ctx, "archc_cuda_sim");
    let kernels = lower::emit_kernels(
        &ir,
        prog,
        Mode::Host,
        threads_per_block,
        max_head_dim,
        tiling,
    )?;
    // The block size the thread programs were generated for, for the runtime's simulator.
    let threads = ir.module.add_global(ir.i64, None, "archc_sim_threads");
    threads.set_initializer(&ir.i64.const_int(threads_per_block, false));
    threads.set_constant(true);
    // The simulator interface the kernels call through, for the runtime to check.
    let abi = ir.module.add_global(ir.i64, None, "archc_sim_abi");
    abi.set_initializer(
        &ir.i64
            .const_int(arch_runtime::device::sim::SIM_ABI as u64, false),
    );
    abi.set_constant(true);
    crate::backend::llvm::optimize(&ir.module, &tm)?;
    let object = crate::backend::llvm::emit(&ir.module, &tm, FileType::Object)?;
    Ok(SimLowered {
        object,
        kernels,
        threads: threads_per_block,
    })
}

/// `ptxas` from `$ARCHC_PTXAS`, `$PATH`, or the `nvidia-cuda-nvcc-cu12` Python package
/// (where `tools/prereqs.sh` installs it), if any.
pub fn find_ptxas() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ARCHC_PTXAS") {
        return Some(PathBuf::from(p));
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    for base in [
        Some(PathBuf::from("/usr/local/lib")),
        Some(PathBuf::from("/usr/lib")),
        home.map(|h| h.join(".local/lib")),
    ]
    .into_iter()
    .flatten()
    {
        if let Ok(rd) = std::fs::read_dir(&base) {
            for e in rd.flatten() {
                let name = e.file_name();
                if name.to_string_lossy().starts_with("python3") {
                    for sp in ["site-packages", "dist-packages"] {
                        dirs.push(e.path().join(sp).join("nvidia/cuda_nvcc/bin"));
                    }
                }
            }
        }
    }
    dirs.push(PathBuf::from("/opt/archc-ptxas/nvidia/cuda_nvcc/bin"));
    dirs.into_iter()
        .map(|d| d.join("ptxas"))
        .find(|p| p.is_file())
}

/// Assembles `ptx` for `sm_{sm}` — for the architecture its `.target` names, when it
/// names one (`sm_90a` for `wgmma` tiles) — with `ptxas`; its complaint when it refuses.
pub fn ptxas_check(ptxas: &std::path::Path, ptx: &str, sm: u32) -> Result<(), String> {
    run_ptxas(ptxas, ptx, sm, false)
}

/// What [`ptxas_check`] checks short of generating machine code: `ptxas` for the
/// virtual architecture (`compute_{sm}`) parses `ptx` and checks every instruction,
/// type, operand and state space against that target, in a tenth of the time; it does
/// not allocate registers or check resources (shared memory per block), which
/// [`ptxas_check`] does.
pub fn ptxas_parse_check(ptxas: &std::path::Path, ptx: &str, sm: u32) -> Result<(), String> {
    run_ptxas(ptxas, ptx, sm, true)
}

fn run_ptxas(ptxas: &std::path::Path, ptx: &str, sm: u32, parse_only: bool) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!(
        "archc-ptxas-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let src = dir.join("kernels.ptx");
    std::fs::write(&src, ptx).map_err(|e| e.to_string())?;
    // -O1: whether ptxas accepts the PTX does not depend on how hard it optimizes, and
    // -O1 is the fastest level (measured on ALBERT-base's forward for sm_80: -O0 4.5 s,
    // -O1 2.8 s, the default -O3 3.7 s; the `--Ofast-compile` levels are all slower).
    let arch = ptx
        .lines()
        .find_map(|l| l.trim().strip_prefix(".target "))
        .and_then(|t| t.split([',', ' ']).next())
        .map_or(format!("sm_{sm}"), str::to_string);
    let arch = match arch.strip_prefix("sm_") {
        Some(v) if parse_only => format!("compute_{v}"),
        _ => arch,
    };
    let out = std::process::Command::new(ptxas)
        .arg("-O1")
        .arg(format!("-arch={arch}"))
        .arg("-o")
        .arg(dir.join("kernels.cubin"))
        .arg(&src)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", ptxas.display()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
