//! Host CPU → the instruction set and LLVM target (CPU name, feature string) that the
//! generated code is compiled for. Detected at run time, never assumed.

use crate::backend::BackendError;
use inkwell::targets::TargetMachine;
use std::fmt;

/// The vector instruction sets the CPU backend generates code for, widest last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VectorIsa {
    /// Plain x86-64: 128-bit SSE2 vectors, no FMA (multiply and add stay separate).
    Sse2,
    /// 256-bit AVX2 vectors with FMA3.
    Avx2,
    /// 512-bit AVX-512F vectors with FMA.
    Avx512,
}

impl VectorIsa {
    pub const ALL: [VectorIsa; 3] = [VectorIsa::Sse2, VectorIsa::Avx2, VectorIsa::Avx512];

    /// f32 lanes in one vector register.
    pub fn f32_lanes(self) -> u32 {
        match self {
            VectorIsa::Sse2 => 4,
            VectorIsa::Avx2 => 8,
            VectorIsa::Avx512 => 16,
        }
    }

    /// Architectural vector registers (xmm/ymm/zmm) the register allocator can use.
    pub fn vector_registers(self) -> u32 {
        match self {
            VectorIsa::Sse2 | VectorIsa::Avx2 => 16,
            VectorIsa::Avx512 => 32,
        }
    }

    /// The x86-64 micro-architecture level LLVM knows as a CPU name: the portable choice
    /// when code must run on any CPU with this instruction set.
    pub fn generic_cpu(self) -> &'static str {
        match self {
            VectorIsa::Sse2 => "x86-64",
            VectorIsa::Avx2 => "x86-64-v3",
            VectorIsa::Avx512 => "x86-64-v4",
        }
    }

    /// Whether the machine running this process can execute code for this set.
    pub fn runs_here(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                VectorIsa::Sse2 => true,
                VectorIsa::Avx2 => {
                    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
                }
                VectorIsa::Avx512 => std::is_x86_feature_detected!("avx512f"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }
}

impl fmt::Display for VectorIsa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VectorIsa::Sse2 => "sse2",
            VectorIsa::Avx2 => "avx2",
            VectorIsa::Avx512 => "avx512",
        })
    }
}

/// What code is generated for: the vector set that shapes the kernels (tile sizes) and
/// the CPU name and feature string that LLVM schedules and selects instructions for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CpuTarget {
    pub isa: VectorIsa,
    /// LLVM CPU name (`znver3`, `x86-64-v3`, …).
    pub cpu: String,
    /// LLVM feature string (`+avx2,+fma,-avx512f,…`); empty means the CPU's defaults.
    pub features: String,
}

impl CpuTarget {
    /// The machine this process runs on: the widest vector set it supports, and LLVM's
    /// own name and features for the host CPU (so scheduling matches the real core).
    /// `ARCHC_ISA=sse2|avx2|avx512` forces the portable target of that set instead (every
    /// code path can be run and timed on a machine with a wider one).
    pub fn host() -> Result<CpuTarget, BackendError> {
        if let Ok(name) = std::env::var("ARCHC_ISA") {
            let isa = VectorIsa::ALL
                .into_iter()
                .find(|i| i.to_string() == name)
                .ok_or_else(|| {
                    BackendError::Unsupported(format!(
                        "ARCHC_ISA={name}: the vector sets are sse2, avx2 and avx512"
                    ))
                })?;
            if !isa.runs_here() {
                return Err(BackendError::Unsupported(format!(
                    "ARCHC_ISA={name}: this CPU cannot run {isa} code"
                )));
            }
            return Ok(CpuTarget::generic(isa));
        }
        let isa = host_isa()?;
        Ok(CpuTarget {
            isa,
            cpu: TargetMachine::get_host_cpu_name().to_string(),
            features: TargetMachine::get_host_cpu_features().to_string(),
        })
    }

    /// Portable code for any CPU with `isa` (the x86-64 level as CPU, its default features).
    pub fn generic(isa: VectorIsa) -> CpuTarget {
        CpuTarget {
            isa,
            cpu: isa.generic_cpu().to_string(),
            features: String::new(),
        }
    }
}

/// The widest vector set the host runs, from CPUID via the standard library.
pub fn host_isa() -> Result<VectorIsa, BackendError> {
    if !cfg!(target_arch = "x86_64") {
        return Err(BackendError::Unsupported(format!(
            "the CPU backend generates x86-64 code; this machine is {}",
            std::env::consts::ARCH
        )));
    }
    Ok(VectorIsa::ALL
        .into_iter()
        .rev()
        .find(|isa| isa.runs_here())
        .unwrap_or(VectorIsa::Sse2))
}

/// A one-line description of the host for benchmark reports.
pub fn describe_host() -> String {
    let cpu = TargetMachine::get_host_cpu_name().to_string();
    let flags: Vec<&str> = [
        ("avx512f", VectorIsa::Avx512.runs_here()),
        ("avx2+fma", VectorIsa::Avx2.runs_here()),
    ]
    .into_iter()
    .filter_map(|(name, present)| present.then_some(name))
    .collect();
    let isa = host_isa()
        .map(|i| i.to_string())
        .unwrap_or_else(|e| e.to_string());
    format!(
        "LLVM host CPU `{cpu}`, features [{}], vector set {isa}",
        flags.join(", ")
    )
}
