//! Spec → package directory (`docs/PACKAGE.md`): expand, prune to the requested outputs,
//! build the Kernel IR, plan buffers, lower to machine code, link `kernels.so`, and write
//! `manifest.json` with the IR dumps beside it. Packages are cached by a hash of
//! (spec, compiler version, target, options), so building the same spec twice is a copy.

use crate::backend::cpu::lower::{lower, Lowered};
use crate::backend::cpu::CpuTarget;
use crate::expand::{forward, ExpandOptions};
use crate::graph::{Dim, Graph};
use crate::kernel::{self, BufKind, Program};
use crate::passes::keep_outputs;
use arch_dsl::spec::{ArchSpec, Sublayer};
use arch_runtime::gguf::GgmlType;
use arch_runtime::manifest::{
    BufferKind, BufferSpec, Dtype, Entry, InputSpec, KernelSpec, Limits, Manifest, OutputSpec,
    ParamSpec, StateSpec, Target,
};
use arch_runtime::size::{SizeExpr, Term};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// What to build.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildOptions {
    pub target: CpuTarget,
    /// The graph takes an `attention_mask` input.
    pub attention_mask: bool,
    /// Outputs to keep (all of the forward graph's when empty).
    pub outputs: Vec<String>,
    /// Use and fill the package cache.
    pub cache: bool,
    /// Print what happens to stderr.
    pub verbose: bool,
    /// Which program: `forward`, the step program (`prefill` and `decode`, with session
    /// state) or an encoder-decoder's `encode`.
    pub kind: PackageKind,
    /// Parameters the kernels should read as ggml blocks (a GGUF file's quantized
    /// weights, or `--quant`): those whose only readers are matmuls over whole blocks get
    /// that storage, the others stay f32 (`kernel::quant`).
    pub quant: BTreeMap<String, GgmlType>,
    /// Build for an NVIDIA GPU of this SM generation (80 or 90): PTX instead of a CPU
    /// library (`backend::cuda`).
    pub cuda: Option<u32>,
    /// With `cuda`: also the thread programs compiled for this CPU (`kernels.sim.so`), so
    /// the package runs on the runtime's host simulator (`--backend cuda-sim`).
    pub sim: bool,
    /// Decode products over Q4_K, Q5_K and Q6_K weights in integers with the activations
    /// quantized per 256 values to 8 bits, as llama.cpp computes them (`--int-dots`):
    /// faster, and the logits move by that rounding (~1e-2 relative) from the f32 product
    /// over the dequantized weights.
    pub int_dots: bool,
    /// With `cuda`: the matmuls multiply bf16 or f16 operands on the tensor cores with f32
    /// accumulation (`--dtype bf16|f16`, [`BuildOptions::set_dtype`]).
    pub half_matmul: Option<GgmlType>,
}

/// The program a package holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackageKind {
    Forward,
    Step,
    Encode,
    /// A training program (`train_step`): forward, loss, backward and the optimizer
    /// (its `attention_mask` is the build's).
    Train(crate::train::TrainOptions),
}

impl PackageKind {
    /// The entry points the program serves.
    fn entries(&self) -> &'static [&'static str] {
        match self {
            PackageKind::Forward => &["forward"],
            // One step program serves prefill (seq = the prompt) and decode (seq = 1).
            PackageKind::Step => &["prefill", "decode"],
            PackageKind::Encode => &["encode"],
            PackageKind::Train(..) => &["train_step"],
        }
    }
}

impl BuildOptions {
    pub fn host() -> Result<BuildOptions, String> {
        Ok(BuildOptions {
            target: CpuTarget::host().map_err(|e| e.to_string())?,
            attention_mask: false,
            outputs: Vec::new(),
            cache: true,
            verbose: false,
            kind: PackageKind::Forward,
            quant: BTreeMap::new(),
            cuda: None,
            sim: false,
            int_dots: false,
            half_matmul: None,
        })
    }

    /// Every parameter of `spec` requested as blocks of `ty` (`--quant q8_0|q4_k|…`): the
    /// matmul weights whose rows are whole blocks get it, the rest stay f32.
    pub fn quantize_all(&mut self, spec: &ArchSpec, ty: &str) -> Result<(), String> {
        let t = GgmlType::from_name(ty)
            .filter(|t| t.kernel_storage())
            .ok_or_else(|| {
                format!("unknown --quant `{ty}`: the kernels read f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k and q6_k")
            })?;
        self.quant = crate::params::param_table(spec)
            .into_iter()
            .map(|p| (p.name, t))
            .collect();
        Ok(())
    }

    /// `--dtype f32|bf16|f16` of a cuda build: with a half type every matrix is stored in
    /// it (as `--quant` would; a GGUF file's blocks stay as they are) and the matmuls
    /// multiply operands rounded to it (on the tensor cores; decoding's matrix–vector
    /// products on the CUDA cores), accumulating in f32; the activations between kernels
    /// and the KV caches are stored in it too (`kernel::quant::store_activations`), while
    /// norms' and softmax's statistics and scans stay f32. An error for a CPU build (its matmuls
    /// multiply in f32; `--quant bf16` stores its weights in bf16) or a train package.
    pub fn set_dtype(&mut self, spec: &ArchSpec, dtype: &str) -> Result<(), String> {
        let t = match dtype.to_ascii_lowercase().as_str() {
            "f32" => return Ok(()),
            "bf16" => GgmlType::BF16,
            "f16" => GgmlType::F16,
            other => return Err(format!("unknown --dtype `{other}` (f32, bf16 or f16)")),
        };
        if self.cuda.is_none() {
            return Err(format!(
                "--dtype {dtype} is for cuda builds (the tensor cores' half-precision products); \
                 on the CPU `--quant {dtype}` stores the weights in {dtype}"
            ));
        }
        if matches!(self.kind, PackageKind::Train(_)) {
            return Err("training keeps its parameters and products in f32 (no --dtype)".into());
        }
        if self.quant.is_empty() {
            self.quantize_all(spec, t.name())?;
        }
        self.half_matmul = Some(t);
        Ok(())
    }

    /// Asks for integer dot products over K-quant weights (`--int-dots`); an error when no
    /// parameter is stored as Q4_K, Q5_K or Q6_K (nothing would change) or the build is
    /// for a GPU.
    pub fn set_int_dots(&mut self) -> Result<(), String> {
        if self.cuda.is_some() {
            return Err("--int-dots is a CPU decode path; the cuda backend computes in f32".into());
        }
        if !self
            .quant
            .values()
            .any(|&t| crate::backend::cpu::qdot_ir::has_int_dots(t))
        {
            let kinds: std::collections::BTreeSet<&str> =
                self.quant.values().map(|t| t.name()).collect();
            return Err(format!(
                "--int-dots takes Q4_K, Q5_K or Q6_K weights (a GGUF file's or `--quant q4_k`); these are {}",
                if kinds.is_empty() {
                    "f32".to_string()
                } else {
                    kinds.into_iter().collect::<Vec<_>>().join(", ")
                }
            ));
        }
        self.int_dots = true;
        Ok(())
    }

    /// [`BuildOptions::host`] for running with the weights at `weights`: a GGUF file's
    /// F16, BF16 and quantized matmul weights stay as stored
    /// ([`crate::weights::block_storage`]).
    pub fn for_weights(spec: &ArchSpec, weights: &Path) -> Result<BuildOptions, String> {
        crate::import_gguf::check_rope(spec, weights)?;
        Ok(BuildOptions {
            quant: crate::weights::block_storage(spec, weights),
            ..BuildOptions::host()?
        })
    }
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct Built {
    pub dir: PathBuf,
    /// Served from the cache.
    pub cached: bool,
    pub seconds: f64,
}

/// FNV-1a, 64 bits: stable across runs and Rust versions, unlike `DefaultHasher`.
fn fnv(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// This compiler build: its version and the id `build.rs` stamps on every rebuild, so a
/// changed compiler never reuses packages of an earlier build.
fn compiler_build() -> String {
    format!("{} {}", env!("CARGO_PKG_VERSION"), env!("ARCHC_BUILD_ID"))
}

/// The cache key of a build.
pub fn cache_key(spec: &ArchSpec, opts: &BuildOptions) -> String {
    let text = format!(
        "{:?}\n{}\n{}:{}:{:?}\n{}\n{:?}\n{:?}{}",
        spec,
        compiler_build(),
        opts.target.cpu,
        opts.target.features,
        opts.target.isa,
        opts.attention_mask,
        opts.outputs,
        opts.kind,
        // Absent when empty, so f32 packages keep their keys.
        if opts.quant.is_empty() {
            String::new()
        } else {
            format!("\n{:?}", opts.quant)
        } + &opts
            .cuda
            .map_or(String::new(), |sm| format!("\ncuda sm_{sm}"))
            + if opts.int_dots { "\nint dots" } else { "" }
            + &opts
                .half_matmul
                .map_or(String::new(), |t| format!("\n{} matmul", t.name()))
            // Hopper's warpgroup products on request (`ARCHC_MMA`, cuda::ptx_tiling).
            + if opts.cuda == Some(90)
                && opts.half_matmul.is_some()
                && crate::backend::cuda::wgmma_requested().unwrap_or(false)
            {
                "\nwgmma"
            } else {
                ""
            }
            + &opts
                .cuda
                .and_then(|_| crate::backend::cuda::stages_requested().ok().flatten())
                .map_or(String::new(), |n| format!("\n{n} stages"))
            + &opts
                .cuda
                .and_then(|_| crate::backend::cuda::kwords_requested().ok().flatten())
                .map_or(String::new(), |n| format!("\n{n} k words"))
            + if opts.cuda.is_some() && !crate::backend::cuda::ldmatrix_requested().unwrap_or(true) {
                "\nno ldmatrix"
            } else {
                ""
            }
    );
    format!("{}-{:016x}", spec.name, fnv(&text))
}

/// Where packages are cached: `$ARCHC_CACHE`, else `$XDG_CACHE_HOME/archc`, else
/// `~/.cache/archc`; the system temp directory when that cannot be created (a read-only
/// home, a sandbox).
pub fn cache_dir() -> PathBuf {
    let preferred = if let Some(d) = std::env::var_os("ARCHC_CACHE") {
        PathBuf::from(d)
    } else if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        PathBuf::from(d).join("archc")
    } else if let Some(h) = std::env::var_os("HOME") {
        PathBuf::from(h).join(".cache").join("archc")
    } else {
        std::env::temp_dir().join("archc-cache")
    };
    if std::fs::create_dir_all(&preferred).is_ok() {
        preferred
    } else {
        std::env::temp_dir().join("archc-cache")
    }
}

/// The files of a package: the kernels are `kernels.so` on the CPU, `kernels.ptx` for cuda.
fn files(opts: &BuildOptions) -> Vec<&'static str> {
    let kernels = if opts.cuda.is_some() {
        arch_runtime::package::PTX_FILE
    } else {
        arch_runtime::package::KERNELS_FILE
    };
    let mut f = vec![
        "manifest.json",
        kernels,
        "graph.txt",
        "kernels.txt",
        "kernels.ll",
    ];
    if opts.cuda.is_some() && opts.sim {
        f.push(arch_runtime::device::sim::SIM_FILE);
    }
    f
}

/// The subdirectories of a package that hold its step program and an encoder-decoder's
/// encoder program.
pub const STEP_DIR: &str = "step";
pub const ENCODE_DIR: &str = "encode";

/// Builds `spec` into `out` (into the cache when `out` is `None`). A forward package
/// written to `out` of a model that can generate also gets its step program in
/// `out/step` (and an encoder-decoder its encoder in `out/encode`), and its manifest lists
/// the `prefill`, `decode` (and `encode`) entries that run them.
pub fn build(spec: &ArchSpec, opts: &BuildOptions, out: Option<&Path>) -> Result<Built, String> {
    let start = Instant::now();
    if opts.cuda.is_some() {
        // Before the cache is consulted: a bad `ARCHC_MMA`, `ARCHC_STAGES`, … must not
        // pass as the default.
        crate::backend::cuda::wgmma_requested().map_err(|e| e.to_string())?;
        crate::backend::cuda::stages_requested().map_err(|e| e.to_string())?;
        crate::backend::cuda::kwords_requested().map_err(|e| e.to_string())?;
        crate::backend::cuda::ldmatrix_requested().map_err(|e| e.to_string())?;
    }
    let built = build_one(spec, opts, out)?;
    if let Some(o) = out {
        if opts.kind == PackageKind::Forward && crate::expand::step_unsupported(spec).is_none() {
            let mut subs = vec![(PackageKind::Step, STEP_DIR)];
            if spec.encoder.is_some() {
                subs.push((PackageKind::Encode, ENCODE_DIR));
            }
            let mut m = arch_runtime::Manifest::read(o).map_err(|e| e.to_string())?;
            for (kind, dir) in subs {
                let entries = kind.entries();
                let sub = BuildOptions {
                    kind,
                    outputs: Vec::new(),
                    attention_mask: false,
                    ..opts.clone()
                };
                build_one(spec, &sub, Some(&o.join(dir)))?;
                for entry in entries {
                    m.entries.insert(
                        entry.to_string(),
                        Entry {
                            kernels: Vec::new(),
                            package: Some(dir.to_string()),
                        },
                    );
                }
            }
            m.write(o).map_err(|e| e.to_string())?;
        }
    }
    Ok(Built {
        seconds: start.elapsed().as_secs_f64(),
        ..built
    })
}

/// What generation runs: the step program and, for an encoder-decoder, the encode program
/// of `spec`, built with `base`'s target into the package cache (or served from it).
pub fn generation_packages(
    spec: &ArchSpec,
    base: &BuildOptions,
) -> Result<(Built, Option<Built>), String> {
    if let Some(why) = crate::expand::step_unsupported(spec) {
        return Err(why);
    }
    let package = |kind| {
        let opts = BuildOptions {
            kind,
            outputs: Vec::new(),
            attention_mask: false,
            ..base.clone()
        };
        build(spec, &opts, None)
    };
    let step = package(PackageKind::Step)?;
    let encode = match spec.encoder {
        Some(_) => Some(package(PackageKind::Encode)?),
        None => None,
    };
    Ok((step, encode))
}

fn build_one(spec: &ArchSpec, opts: &BuildOptions, out: Option<&Path>) -> Result<Built, String> {
    let start = Instant::now();
    let key = cache_key(spec, opts);
    let cached_dir = cache_dir().join(&key);
    let complete = |d: &Path| files(opts).iter().all(|f| d.join(f).is_file());
    if opts.cache && complete(&cached_dir) {
        mark_used(&cached_dir);
        let dir = match out {
            Some(o) if o != cached_dir => {
                copy_files(&cached_dir, o, opts)?;
                o.to_path_buf()
            }
            _ => cached_dir,
        };
        return Ok(Built {
            dir,
            cached: true,
            seconds: start.elapsed().as_secs_f64(),
        });
    }
    let dir = match out {
        Some(o) => {
            write_package(spec, opts, o)?;
            if opts.cache {
                // Best effort: a read-only cache only makes later builds slower.
                let _ = copy_files(o, &cached_dir, opts);
                evict(&cache_dir(), cache_limit(), EVICT_MIN_AGE);
            }
            o.to_path_buf()
        }
        None => {
            // Build beside the cache entry and rename it into place, so a concurrent
            // build of the same package never sees (or leaves) a half-written one.
            let tmp = cache_dir().join(format!(
                ".{key}.{}.{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos())
            ));
            write_package(spec, opts, &tmp)?;
            if std::fs::rename(&tmp, &cached_dir).is_err() {
                // Another build got there first (or the entry was stale): use theirs
                // when complete, else replace it.
                if complete(&cached_dir) {
                    let _ = std::fs::remove_dir_all(&tmp);
                } else {
                    let _ = std::fs::remove_dir_all(&cached_dir);
                    std::fs::rename(&tmp, &cached_dir).map_err(|e| {
                        format!("cannot move the package into {}: {e}", cached_dir.display())
                    })?;
                }
            }
            evict(&cache_dir(), cache_limit(), EVICT_MIN_AGE);
            cached_dir
        }
    };
    Ok(Built {
        dir,
        cached: false,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The most bytes the package cache keeps: `$ARCHC_CACHE_LIMIT_MB` MiB, default 2 GiB.
/// Every compiler build has its own keys, so without a bound the entries of earlier builds
/// would pile up forever.
pub fn cache_limit() -> u64 {
    limit_from(std::env::var("ARCHC_CACHE_LIMIT_MB").ok().as_deref())
}

fn limit_from(mb: Option<&str>) -> u64 {
    mb.and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(2 << 30, |mb| mb.saturating_mul(1 << 20))
}

/// Entries used more recently than this are never evicted: another process may have just
/// built or found one and not loaded it yet.
pub const EVICT_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Marks a cache entry as used now (its manifest's modification time), for [`evict`].
fn mark_used(entry: &Path) {
    if let Ok(f) = std::fs::File::options()
        .append(true)
        .open(entry.join("manifest.json"))
    {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// When an entry was last used: its manifest's modification time (its directory's when it
/// has none).
fn last_used(entry: &Path) -> std::time::SystemTime {
    std::fs::metadata(entry.join("manifest.json"))
        .or_else(|_| std::fs::metadata(entry))
        .and_then(|m| m.modified())
        .unwrap_or(std::time::UNIX_EPOCH)
}

/// Bytes of the files under `p`.
fn tree_bytes(p: &Path) -> u64 {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| tree_bytes(&e.path())).sum())
            .unwrap_or(0),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

/// Keeps the package cache `dir` within `limit` bytes: removes the least recently used
/// entries until the rest fit, never one used within `min_age`, and removes half-written
/// build directories (`.key.pid.nanos`, left by a killed build) older than `min_age`.
/// Best effort: what cannot be read or removed is left. Returns the entries removed.
pub fn evict(dir: &Path, limit: u64, min_age: std::time::Duration) -> Vec<PathBuf> {
    let now = std::time::SystemTime::now();
    let old = |t: std::time::SystemTime| now.duration_since(t).is_ok_and(|a| a >= min_age);
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut entries = Vec::new();
    let mut removed = Vec::new();
    for e in rd.flatten() {
        let path = e.path();
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if e.file_name().to_string_lossy().starts_with('.') {
            if old(last_used(&path)) && std::fs::remove_dir_all(&path).is_ok() {
                removed.push(path);
            }
            continue;
        }
        entries.push((last_used(&path), tree_bytes(&path), path));
    }
    let mut total: u64 = entries.iter().map(|e| e.1).sum();
    entries.sort_by_key(|e| e.0);
    for (used, bytes, path) in entries {
        if total <= limit {
            break;
        }
        if old(used) && std::fs::remove_dir_all(&path).is_ok() {
            total -= bytes;
            removed.push(path);
        }
    }
    removed
}

fn copy_files(from: &Path, to: &Path, opts: &BuildOptions) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("cannot create {}: {e}", to.display()))?;
    for f in files(opts) {
        // Write under a temporary name, then rename: a reader never sees half a file.
        let tmp = to.join(format!(".{f}.tmp{}", std::process::id()));
        std::fs::copy(from.join(f), &tmp)
            .and_then(|_| std::fs::rename(&tmp, to.join(f)))
            .map_err(|e| format!("cannot copy {f} to {}: {e}", to.display()))?;
    }
    Ok(())
}

/// The forward graph a package computes: expanded, pruned to the requested outputs,
/// simplified (identities folded, common subexpressions merged).
pub fn package_graph(spec: &ArchSpec, opts: &BuildOptions) -> Result<Graph, String> {
    Ok(graph_and_inits(spec, opts)?.0)
}

/// [`package_graph`] and, for a step program, the initial value of each state.
fn graph_and_inits(
    spec: &ArchSpec,
    opts: &BuildOptions,
) -> Result<(Graph, Vec<(String, f32)>), String> {
    match &opts.kind {
        PackageKind::Step => {
            let step = crate::expand::step(spec)?;
            return Ok((crate::passes::simplify(&step.graph), step.inits));
        }
        PackageKind::Encode => {
            let g = crate::expand::encode(spec)?;
            return Ok((crate::passes::simplify(&g), Vec::new()));
        }
        PackageKind::Train(t) => {
            let t = crate::train::TrainOptions {
                attention_mask: opts.attention_mask,
                ..t.clone()
            };
            let (g, _) = crate::train::train_graph(spec, &t)?;
            return Ok((g, Vec::new()));
        }
        PackageKind::Forward => {}
    }
    let full = forward(
        spec,
        &ExpandOptions {
            attention_mask: opts.attention_mask,
            // Linear in seq, where the convolution form would store [d, seq, seq].
            recurrent_ssm: true,
        },
    )?;
    let kept = if opts.outputs.is_empty() {
        full
    } else {
        let names: Vec<&str> = opts.outputs.iter().map(String::as_str).collect();
        keep_outputs(&full, &names)?
    };
    Ok((crate::passes::simplify(&kept), Vec::new()))
}

/// The planned Kernel IR of a package.
pub fn package_program(graph: &Graph) -> Result<Program, String> {
    let mut prog = kernel::build(graph)?;
    kernel::plan::assign_slots(&mut prog);
    Ok(prog)
}

/// [`package_program`] with the parameters of `opts.quant` that qualify stored as blocks;
/// the others are reported when `opts.verbose`.
fn program_for(
    graph: &Graph,
    inits: &[(String, f32)],
    opts: &BuildOptions,
) -> Result<Program, String> {
    let mut prog = package_program(graph)?;
    prog.int_dots = opts.int_dots;
    prog.half_matmul = opts.half_matmul;
    if let (Some(ty), Some(_)) = (opts.half_matmul, opts.cuda) {
        kernel::quant::store_activations(&mut prog, ty, inits);
    }
    if !opts.quant.is_empty() {
        let refused = kernel::quant::store_quantized(&mut prog, &opts.quant);
        if opts.verbose {
            for (name, why) in &refused {
                eprintln!("archc: `{name}` stays f32: {why}");
            }
        }
    }
    Ok(prog)
}

/// Builds a package for a bare graph (a single layer, a test case): canonical parameter
/// names only, no limits on token ids or lengths. Not cached.
pub fn build_graph(
    graph: &Graph,
    name: &str,
    opts: &BuildOptions,
    dir: &Path,
) -> Result<(), String> {
    let prog = program_for(graph, &[], opts)?;
    let lowered = Code::of(&prog, opts)?;
    write_files(dir, graph, &prog, &lowered)?;
    let sources = prog
        .params
        .iter()
        .map(|(n, _, shape)| {
            Ok((
                n.clone(),
                arch_runtime::manifest::Source::Plain {
                    name: n.clone(),
                    shape: const_shape(shape)?,
                },
            ))
        })
        .collect::<Result<BTreeMap<_, _>, String>>()?;
    let limits = Limits {
        vocab: 0,
        context: 0,
        segments: 0,
        seq_multiple_of: 1,
        left_padding: true,
    };
    let namings = vec![arch_runtime::manifest::Naming {
        label: "canonical".into(),
        sources,
    }];
    let manifest = manifest(name, limits, namings, opts, &prog, &lowered)?;
    std::fs::write(dir.join("manifest.json"), manifest.to_json())
        .map_err(|e| format!("cannot write {}: {e}", dir.join("manifest.json").display()))
}

fn write_files(dir: &Path, graph: &Graph, prog: &Program, lowered: &Code) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let write = |name: &str, bytes: &[u8]| {
        std::fs::write(dir.join(name), bytes)
            .map_err(|e| format!("cannot write {}: {e}", dir.join(name).display()))
    };
    write("graph.txt", crate::graph::print(graph).as_bytes())?;
    write("kernels.txt", kernel::print(prog).as_bytes())?;
    match lowered {
        Code::Cpu(l) => {
            write("kernels.ll", l.llvm_ir.as_bytes())?;
            link(dir, &l.object)
        }
        Code::Cuda(c, _, sim) => {
            write("kernels.ll", c.llvm_ir.as_bytes())?;
            if let Some(object) = sim {
                link_as(dir, object, arch_runtime::device::sim::SIM_FILE)?;
            }
            write(arch_runtime::package::PTX_FILE, c.ptx.as_bytes())
        }
    }
}

fn write_package(spec: &ArchSpec, opts: &BuildOptions, dir: &Path) -> Result<(), String> {
    let log = |msg: &str| {
        if opts.verbose {
            eprintln!("archc: {msg}");
        }
    };
    let t = Instant::now();
    let (graph, inits) = graph_and_inits(spec, opts)?;
    let prog = program_for(&graph, &inits, opts)?;
    log(&format!(
        "{}: {} graph nodes → {} kernels, {} buffers in {} slots ({:.2} s)",
        spec.name,
        graph.nodes.len(),
        prog.kernels.len(),
        prog.buffers.len(),
        prog.slot_count,
        t.elapsed().as_secs_f64()
    ));
    let t = Instant::now();
    let lowered = Code::of(&prog, opts)?;
    log(&format!(
        "LLVM: {} ({:.2} s)",
        lowered.describe(opts),
        t.elapsed().as_secs_f64()
    ));
    write_files(dir, &graph, &prog, &lowered)?;
    // A step program takes any number of tokens (TTT's mini-batches are its state).
    let seq_multiple_of = if opts.kind == PackageKind::Step {
        1
    } else {
        spec.stacks()
            .flat_map(|(_, s)| s.layers.iter().flat_map(|l| l.sublayers.iter()))
            .filter_map(|s| match s {
                Sublayer::Ttt(t) => Some(t.mini_batch),
                _ => None,
            })
            .fold(1u64, lcm)
    };
    let limits = Limits {
        vocab: spec.vocab,
        context: spec.context,
        segments: spec.embed.segments,
        seq_multiple_of,
        left_padding: opts.kind != PackageKind::Step || crate::expand::step_takes_padding(spec),
    };
    let namings = crate::weights::manifest_namings(spec);
    let mut manifest = manifest(&spec.name, limits, namings, opts, &prog, &lowered)?;
    for s in &mut manifest.states {
        s.init = inits
            .iter()
            .find(|(n, _)| *n == s.name)
            .map_or(0.0, |(_, v)| *v);
    }
    std::fs::write(dir.join("manifest.json"), manifest.to_json())
        .map_err(|e| format!("cannot write {}: {e}", dir.join("manifest.json").display()))
}

/// A package's generated code.
enum Code {
    Cpu(Lowered),
    /// PTX for an SM generation, and the simulator's object code when asked.
    Cuda(crate::backend::cuda::CudaLowered, u32, Option<Vec<u8>>),
}

impl Code {
    fn of(prog: &Program, opts: &BuildOptions) -> Result<Code, String> {
        match opts.cuda {
            Some(sm) => {
                let ptx = crate::backend::cuda::lower_ptx(prog, sm).map_err(|e| e.to_string())?;
                let sim = if opts.sim {
                    // Warpgroup tiles run on the simulator as they are (in the GPU's
                    // blocks); the others in the simulator's narrower ones, with the
                    // PTX's stages and k per stage.
                    use crate::backend::cuda::{lower_sim_tiled, Mode, Tiling};
                    let tiling =
                        crate::backend::cuda::ptx_tiling(prog, sm).map_err(|e| e.to_string())?;
                    let lowered = if tiling.wgmma {
                        lower_sim_tiled(prog, tiling)
                    } else {
                        let host = Tiling::for_mode(Mode::Host);
                        lower_sim_tiled(
                            prog,
                            Tiling {
                                stages: tiling.stages,
                                ldmatrix: tiling.ldmatrix,
                                kw: tiling.kw,
                                ..host
                            },
                        )
                    };
                    Some(lowered.map_err(|e| e.to_string())?.object)
                } else {
                    None
                };
                Ok(Code::Cuda(ptx, sm, sim))
            }
            None => lower(prog, &opts.target, max_value_dim(prog))
                .map(Code::Cpu)
                .map_err(|e| e.to_string()),
        }
    }

    fn describe(&self, opts: &BuildOptions) -> String {
        match self {
            Code::Cpu(l) => format!(
                "{} bytes of machine code for {}",
                l.object.len(),
                opts.target.cpu
            ),
            Code::Cuda(c, sm, _) => format!("{} bytes of PTX for sm_{sm}", c.ptx.len()),
        }
    }
}

/// The largest value width an attention kernel accumulates (its scratch row).
pub(crate) fn max_value_dim(prog: &Program) -> u64 {
    fn walk(ks: &[kernel::Kernel], best: &mut u64) {
        for k in ks {
            match &k.body {
                kernel::Body::Attention(a) => {
                    // The accumulator row: dv (forward, dV) or d (dQ, dK).
                    for x in &a.sizes[4..6] {
                        if let Some(v) = x.as_const() {
                            *best = (*best).max(v as u64);
                        }
                    }
                }
                kernel::Body::Scan(s) => walk(&s.body, best),
                _ => {}
            }
        }
    }
    let mut best = 0;
    walk(&prog.kernels, &mut best);
    best
}

fn link(dir: &Path, object: &[u8]) -> Result<(), String> {
    link_as(dir, object, arch_runtime::package::KERNELS_FILE)
}

/// Links `object` into the shared library `dir/name`.
fn link_as(dir: &Path, object: &[u8], name: &str) -> Result<(), String> {
    let obj = dir.join("kernels.o");
    std::fs::write(&obj, object).map_err(|e| format!("cannot write {}: {e}", obj.display()))?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let lib = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let out = Command::new(&cc)
        .arg("-shared")
        .arg("-o")
        .arg(&tmp)
        .arg(&obj)
        .arg("-lm")
        .output()
        .map_err(|e| {
            format!("cannot run the C compiler `{cc}` to link kernels (install build-essential or set CC): {e}")
        })?;
    let _ = std::fs::remove_file(&obj);
    if !out.status.success() {
        return Err(format!(
            "`{cc} -shared` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    std::fs::rename(&tmp, &lib).map_err(|e| format!("cannot write {}: {e}", lib.display()))
}

fn size(d: &Dim) -> SizeExpr {
    if d.coef == 0 {
        return SizeExpr(Vec::new());
    }
    SizeExpr(vec![Term {
        coef: d.coef,
        div: d.div,
        syms: d.syms.clone(),
    }])
}

fn const_shape(shape: &[Dim]) -> Result<Vec<usize>, String> {
    shape
        .iter()
        .map(|d| {
            d.as_const()
                .map(|c| c as usize)
                .ok_or_else(|| format!("parameter dimension {d} is not a constant"))
        })
        .collect()
}

fn manifest(
    model: &str,
    limits: Limits,
    namings: Vec<arch_runtime::manifest::Naming>,
    opts: &BuildOptions,
    prog: &Program,
    lowered: &Code,
) -> Result<Manifest, String> {
    let dtype = |i64: bool| if i64 { Dtype::I64 } else { Dtype::F32 };
    // Temporaries hold half-precision activations under cuda `--dtype`; a parameter's
    // storage is its `ParamSpec::storage` (its buffer's dtype stays that of its values).
    let buffer_dtype = |b: &crate::kernel::Buffer| match (&b.kind, b.quant) {
        (BufKind::Temp | BufKind::State(_), Some(GgmlType::BF16)) => Dtype::Bf16,
        (BufKind::Temp | BufKind::State(_), Some(GgmlType::F16)) => Dtype::F16,
        _ => dtype(b.i64),
    };
    let buffers = prog
        .buffers
        .iter()
        .map(|b| BufferSpec {
            id: b.id,
            kind: match b.kind {
                BufKind::Input(_) => BufferKind::Input,
                BufKind::Param(_) => BufferKind::Param,
                BufKind::Output(_) => BufferKind::Output,
                BufKind::Temp => BufferKind::Temp,
                BufKind::State(_) => BufferKind::State,
            },
            dtype: buffer_dtype(b),
            elems: size(&b.elems),
            slot: prog.slots.get(b.id).copied().flatten(),
        })
        .collect();
    let kernels = match lowered {
        Code::Cpu(l) => prog
            .kernels
            .iter()
            .zip(&l.symbols)
            .map(|(k, (sym, range))| KernelSpec {
                symbol: sym.clone(),
                range: range.clone(),
                args: k.buffers(),
                kind: k.kind().to_string(),
                launch: None,
            })
            .collect(),
        Code::Cuda(c, ..) => prog
            .kernels
            .iter()
            .zip(&c.kernels)
            .map(|(k, l)| KernelSpec {
                symbol: l.symbol.clone(),
                range: String::new(),
                args: k.buffers(),
                kind: k.kind().to_string(),
                launch: Some(arch_runtime::manifest::CudaLaunch {
                    block: c.threads as u32,
                    blocks_per_sm: match l.grid {
                        crate::backend::cuda::Grid::PerSm(n) => Some(n),
                        crate::backend::cuda::Grid::One => None,
                    },
                    shared_bytes: l.shared_bytes as u32,
                    dynamic_shared: l.shared_bytes > crate::backend::cuda::STATIC_SHARED_BYTES,
                }),
            })
            .collect(),
    };
    let mut entries = BTreeMap::new();
    for name in opts.kind.entries() {
        entries.insert(
            name.to_string(),
            Entry {
                kernels: (0..prog.kernels.len()).collect(),
                package: None,
            },
        );
    }
    Ok(Manifest {
        format: arch_runtime::manifest::FORMAT.to_string(),
        compiler_version: env!("CARGO_PKG_VERSION").to_string(),
        model: model.to_string(),
        target: match lowered {
            Code::Cpu(_) => Target {
                kind: "cpu".into(),
                isa: opts.target.isa.to_string(),
                cpu: opts.target.cpu.clone(),
                features: opts.target.features.clone(),
                int_dots: opts.int_dots,
            },
            Code::Cuda(lowered, sm, _) => Target {
                kind: "cuda".into(),
                isa: format!("sm_{sm}"),
                cpu: lowered.arch.clone(),
                features: lowered.features.clone(),
                int_dots: false,
            },
        },
        syms: prog.syms.clone(),
        limits,
        inputs: prog
            .inputs
            .iter()
            .map(|(name, b, shape)| InputSpec {
                name: name.clone(),
                dtype: dtype(prog.buffers[*b].i64),
                shape: shape.iter().map(size).collect(),
                buffer: *b,
            })
            .collect(),
        outputs: prog
            .outputs
            .iter()
            .map(|(name, b, shape)| OutputSpec {
                name: name.clone(),
                dtype: Dtype::F32,
                shape: shape.iter().map(size).collect(),
                buffer: *b,
            })
            .collect(),
        params: prog
            .params
            .iter()
            .map(|(name, b, shape)| {
                Ok(ParamSpec {
                    name: name.clone(),
                    shape: const_shape(shape)?,
                    buffer: *b,
                    storage: prog.buffers[*b]
                        .quant
                        .map(|q| q.name().to_ascii_lowercase()),
                })
            })
            .collect::<Result<_, String>>()?,
        states: prog
            .states
            .iter()
            .map(|(name, b, shape)| StateSpec {
                name: name.clone(),
                dtype: buffer_dtype(&prog.buffers[*b]),
                shape: shape.iter().map(size).collect(),
                buffer: *b,
                init: 0.0,
            })
            .collect(),
        namings,
        buffers,
        slots: prog.slot_count,
        scratch_floats: match lowered {
            Code::Cpu(l) => l.scratch_floats,
            // GPU kernels keep their scratch in registers and shared memory.
            Code::Cuda(..) => 0,
        },
        entries,
        kernels,
    })
}

fn lcm(a: u64, b: u64) -> u64 {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    if a == 0 || b == 0 {
        a.max(b)
    } else {
        a / gcd(a, b) * b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    /// A cache entry of `bytes` bytes last used `ago` before now.
    fn entry(dir: &Path, name: &str, bytes: usize, ago: Duration) -> PathBuf {
        let e = dir.join(name);
        std::fs::create_dir_all(&e).unwrap();
        std::fs::write(e.join("kernels.so"), vec![0u8; bytes]).unwrap();
        std::fs::write(e.join("manifest.json"), b"{}").unwrap();
        let f = std::fs::File::options()
            .append(true)
            .open(e.join("manifest.json"))
            .unwrap();
        f.set_modified(SystemTime::now() - ago).unwrap();
        e
    }

    #[test]
    fn eviction_removes_least_recently_used_entries_beyond_the_limit() {
        let dir = std::env::temp_dir().join(format!("archc-evict-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let hour = Duration::from_secs(3600);
        let a = entry(&dir, "a-1", 1000, 3 * hour);
        let b = entry(&dir, "b-2", 1000, 2 * hour);
        let c = entry(&dir, "c-3", 1000, Duration::ZERO);
        let stale_tmp = entry(&dir, ".d-4.77.5", 10, 2 * hour);
        let fresh_tmp = entry(&dir, ".d-4.78.6", 10, Duration::ZERO);

        // Within the limit: only the killed build's old leftovers go.
        assert_eq!(evict(&dir, 1 << 20, hour), vec![stale_tmp.clone()]);
        assert!(a.is_dir() && b.is_dir() && c.is_dir() && fresh_tmp.is_dir());

        // 2,500 bytes allowed: the least recently used entry goes, then the rest fit.
        let removed = evict(&dir, 2500, hour);
        assert_eq!(removed, vec![a.clone()]);
        assert!(b.is_dir() && c.is_dir());

        // Nothing allowed: every entry old enough goes, the one just used stays.
        assert_eq!(evict(&dir, 0, hour), vec![b.clone()]);
        assert!(c.is_dir() && fresh_tmp.is_dir());

        // A hit marks the entry used: aged, it goes; marked, it stays.
        let e = entry(&dir, "e-5", 10, 5 * hour);
        mark_used(&e);
        assert!(evict(&dir, 0, hour).is_empty());
        assert!(e.is_dir());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cache_limit_is_in_mebibytes_with_a_default() {
        assert_eq!(limit_from(Some(" 3 ")), 3 << 20);
        assert_eq!(limit_from(Some("0")), 0);
        assert_eq!(limit_from(None), 2 << 30);
        assert_eq!(limit_from(Some("lots")), 2 << 30);
    }
}
