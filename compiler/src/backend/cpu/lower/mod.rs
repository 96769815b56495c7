//! Kernel IR → LLVM IR for the CPU: one exported function pair per kernel with the C ABI
//! of `docs/PACKAGE.md` (`void k(bufs, dims, begin, end, scratch)` and
//! `i64 k_range(dims)`). Loop nests are written as scalar loops whose innermost axis is
//! contiguous, with reductions marked reassociable, so LLVM's vectoriser turns them into
//! AVX-512 / AVX2 / SSE code for the target; the matmul calls the register-tiled
//! microkernel of `sgemm_ir`, emitted once per module.
//!
//! This file holds the module, the ABI wrapper of a kernel, and the index and value
//! expressions every kernel kind uses; `loops.rs` (maps and reductions), `matmul.rs`,
//! `attention.rs` and `scan.rs` lower one kind each.

use super::codegen;
use super::ir::{Ir, IrError, IrResult, WholeSteps};
use super::math::Math;
use super::sgemm_ir::{emit_sgemm_all, SgemmTiles};
use super::target::CpuTarget;
use crate::backend::llvm::expr::{Exprs, Values};
use crate::backend::BackendError;
use crate::graph::ReduceOp;
use crate::kernel::{Attention, Body, BufId, Expr, Ix, Kernel, MatMul, Program, Scan};
use inkwell::context::Context;
use inkwell::module::Linkage;
use inkwell::targets::FileType;
use inkwell::values::{FloatValue, FunctionValue, IntValue, PointerValue};
use inkwell::{FloatPredicate, IntPredicate};
use std::collections::HashMap;

mod attention;
mod loops;
mod matmul;
mod scan;

/// Rows and columns of C per parallel matmul iteration, multiples of every MR and NR:
/// at most 576 rows and 384 columns (see `Lowerer::blocks`).
pub const MATMUL_ROWS: u64 = 576;
pub const MATMUL_COLS: u64 = 384;
/// Columns per parallel iteration of a matrix–vector product (at most `GEMV_MAX_ROWS`
/// rows): a multiple of the routine's column groups.
pub const GEMV_COLS: u64 = 64;
/// Row blocks are multiples of this, the AVX2 and AVX-512 MR (SSE2, MR = 4, gets edge tiles).
const ROW_QUANTUM: u64 = 6;
/// Keys per block of the attention kernel (scores held in scratch).
pub const KEY_BLOCK: u64 = 64;

/// The compiled program: object code, the IR it came from, and each kernel's symbols.
pub struct Lowered {
    pub object: Vec<u8>,
    pub llvm_ir: String,
    /// (kernel symbol, range symbol) per top-level kernel.
    pub symbols: Vec<(String, String)>,
    /// Scratch floats each thread must pass to a kernel call.
    pub scratch_floats: u64,
}

/// The matmul tiles of a package: NC of one parallel block's columns, so a packed B block
/// (KC × 384) stays in L2 while every row panel of A passes over it — measured faster
/// than NC = 4096 (B in L3) with A packed fewer times, at GPT-2's shapes.
pub fn package_tiles(target: &CpuTarget) -> SgemmTiles {
    SgemmTiles {
        nc: MATMUL_COLS as u32,
        ..SgemmTiles::for_isa(target.isa)
    }
}

/// Lowers, optimises and emits `prog` for `target`.
pub fn lower(
    prog: &Program,
    target: &CpuTarget,
    max_head_dim: u64,
) -> Result<Lowered, BackendError> {
    let ctx = Context::create();
    let (ir, symbols, tiles) = emit_module(&ctx, prog, target)?;
    let tm = codegen::target_machine(target)?;
    if let Some(path) = std::env::var_os("ARCHC_UNOPTIMIZED_LL") {
        // For investigating LLVM's decisions (`opt -pass-remarks-missed=…`).
        let _ = std::fs::write(path, ir.module.print_to_string().to_string());
    }
    codegen::optimize(&ir.module, &tm)?;
    let llvm_ir = ir.module.print_to_string().to_string();
    let object = codegen::emit(&ir.module, &tm, FileType::Object)?;
    let scratch = (tiles.workspace_floats() as u64)
        .max(max_head_dim + KEY_BLOCK + 16)
        .max(tiles.workspace_floats() as u64 + attention::grad_scratch_floats(max_head_dim))
        .max(tiles.workspace_floats() as u64 + attention::prompt_scratch_floats(max_head_dim))
        .max(widest_row_epilogue(&prog.kernels));
    Ok(Lowered {
        object,
        llvm_ir,
        symbols,
        scratch_floats: scratch,
    })
}

/// The widest row a row-local matmul epilogue stages in scratch.
fn widest_row_epilogue(kernels: &[Kernel]) -> u64 {
    kernels
        .iter()
        .map(|k| match &k.body {
            Body::MatMul(m) if m.whole_rows => m.n.as_const().map_or(0, |n| n as u64),
            Body::Scan(s) => widest_row_epilogue(&s.body),
            _ => 0,
        })
        .max()
        .unwrap_or(0)
}

/// The vector width in bytes of the integer-dot decode routine for a parameter of `ty`,
/// when the program asks for integer dots and the target has them: 64 with AVX-512BW, 32
/// with AVX2 (`vpmaddubsw`); none for SSE2 or block types other than the K-quants (f32
/// products).
fn int_dot_width(
    prog: &Program,
    target: &CpuTarget,
    ty: arch_runtime::gguf::GgmlType,
) -> Option<u32> {
    use super::target::VectorIsa;
    if !prog.int_dots || !super::qdot_ir::has_int_dots(ty) {
        return None;
    }
    // A host feature string lists every feature; the generic x86-64-v4 has AVX-512BW.
    let bw = target.features.is_empty() || target.features.split(',').any(|f| f == "+avx512bw");
    match target.isa {
        VectorIsa::Avx512 if bw => Some(64),
        VectorIsa::Avx512 | VectorIsa::Avx2 => Some(32),
        VectorIsa::Sse2 => None,
    }
}

/// A program's module, each kernel's (symbol, range symbol), and the matmul tiles.
type Module<'ctx> = (Ir<'ctx>, Vec<(String, String)>, SgemmTiles);

/// The module of a program: the matmul routines, then each distinct kernel.
fn emit_module<'ctx>(
    ctx: &'ctx Context,
    prog: &Program,
    target: &CpuTarget,
) -> Result<Module<'ctx>, BackendError> {
    let ir = Ir::new(ctx, "archc_kernels");
    let tiles = package_tiles(target);
    let [sgemm, sgemm_bt, sgemm_at, sgemm_at_bt] = emit_sgemm_all(&ir, &tiles)?;
    let gemv_bt = super::gemv_ir::emit_gemv_bt(&ir, &tiles)?;
    let mut quant = HashMap::new();
    for ty in prog.buffers.iter().filter_map(|b| b.quant) {
        if let std::collections::hash_map::Entry::Vacant(e) = quant.entry(ty) {
            let mut fns = super::quant_ir::emit_quant(&ir, &tiles, ty)?;
            if let Some(width) = int_dot_width(prog, target, ty) {
                fns.gemv_bt = super::qdot_ir::emit_gemv_q8(&ir, ty, width, fns.gemv_bt)?;
                let vnni = target.features.split(',').any(|f| f == "+avx512vnni");
                fns.sgemm_bt = super::qgemm_ir::emit_sgemm_q8(&ir, &tiles, ty, width, vnni)?;
            }
            e.insert(fns);
        }
    }
    let mut lw = Lowerer {
        ir: &ir,
        sgemm,
        sgemm_bt,
        sgemm_at,
        sgemm_at_bt,
        gemv_bt,
        quant,
        buf_quant: prog.buffers.iter().map(|b| b.quant).collect(),
        f16c: target.isa != super::target::VectorIsa::Sse2,
        symbols: Vec::new(),
        n_syms: prog.syms.len(),
        work_floats: tiles.workspace_floats() as u64,
    };
    // Kernels equal up to their buffers (the same op in every layer) share one function.
    let mut seen: HashMap<String, (String, String)> = HashMap::new();
    for (i, k) in prog.kernels.iter().enumerate() {
        // Kernels that read a parameter as blocks differ by the block types too.
        let key = k.lowering_key(&prog.buffers);
        if let Some(syms) = seen.get(&key) {
            lw.symbols.push(syms.clone());
            continue;
        }
        let name = format!("k{i}_{}", sanitize(&k.name));
        lw.kernel(&name, k, &k.buffers(), Linkage::External)?;
        let syms = (name.clone(), format!("{name}_range"));
        seen.insert(key, syms.clone());
        lw.symbols.push(syms);
    }
    let symbols = lw.symbols;
    Ok((ir, symbols, tiles))
}

/// The kernels of a program as LLVM IR before optimisation, without the shared matmul
/// routines and with attribute groups dropped: the form snapshot tests compare (LLVM's
/// optimiser and the host CPU do not change it).
pub fn kernels_llvm_ir(prog: &Program, target: &CpuTarget) -> Result<String, BackendError> {
    let ctx = Context::create();
    let (ir, _, _) = emit_module(&ctx, prog, target)?;
    let text = ir.module.print_to_string().to_string();
    let mut out = String::new();
    let mut keep = false;
    for line in text.lines() {
        if line.starts_with("define ") {
            keep = !line.contains("@archc_sgemm") && !line.contains("@archc_gemv");
        }
        if keep {
            // `#7`-style attribute group references vary with unrelated functions.
            match line.rfind(" #") {
                Some(i) if line.starts_with("define ") => {
                    out.push_str(&line[..i]);
                    out.push_str(" {");
                }
                _ => out.push_str(line),
            }
            out.push('\n');
        }
        if line == "}" {
            keep = false;
        }
    }
    Ok(out)
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

struct Lowerer<'a, 'ctx> {
    ir: &'a Ir<'ctx>,
    sgemm: FunctionValue<'ctx>,
    sgemm_bt: FunctionValue<'ctx>,
    /// A stored [k, m] (with B stored [k, n] or [n, k]).
    sgemm_at: FunctionValue<'ctx>,
    sgemm_at_bt: FunctionValue<'ctx>,
    /// The matrix–vector product for few rows of A (decoding).
    gemv_bt: FunctionValue<'ctx>,
    /// Both matmul paths over a B of ggml blocks, per block type the program reads.
    quant: HashMap<arch_runtime::gguf::GgmlType, super::quant_ir::QuantFns<'ctx>>,
    /// Each buffer's block type (a parameter stored quantized).
    buf_quant: Vec<Option<arch_runtime::gguf::GgmlType>>,
    /// The target converts f16 in hardware (every AVX2 and AVX-512 machine).
    f16c: bool,
    symbols: Vec<(String, String)>,
    n_syms: usize,
    /// Floats of scratch the sgemm's packing uses (kernels that call it place their own
    /// scratch after).
    work_floats: u64,
}

/// A matmul's parallel iterations: column blocks × row blocks (see `Lowerer::blocks`).
struct Blocks<'ctx> {
    col_block: IntValue<'ctx>,
    col_blocks: IntValue<'ctx>,
    row_block: IntValue<'ctx>,
    row_blocks: IntValue<'ctx>,
}

/// The values a function body sees: its parameters, symbol values and buffer bases.
struct Fx<'ctx> {
    f: FunctionValue<'ctx>,
    bufs_arg: PointerValue<'ctx>,
    dims_arg: PointerValue<'ctx>,
    scratch: PointerValue<'ctx>,
    vals: Values<'ctx>,
}

fn set_reassoc(v: FloatValue<'_>) {
    use inkwell::values::BasicValue;
    if let Some(inst) = v.as_instruction_value() {
        let _ = inst.set_fast_math_flags(
            inkwell::values::FastMathFlags::AllowReassoc
                | inkwell::values::FastMathFlags::AllowContract,
        );
    }
}

impl<'a, 'ctx> Lowerer<'a, 'ctx> {
    fn fn_type(&self) -> inkwell::types::FunctionType<'ctx> {
        let ir = self.ir;
        ir.ctx.void_type().fn_type(
            &[
                ir.ptr.into(),
                ir.ptr.into(),
                ir.i64.into(),
                ir.i64.into(),
                ir.ptr.into(),
            ],
            false,
        )
    }

    /// Emits `name` and `name_range` for kernel `k`; returns both functions.
    /// `args` lists the buffers whose addresses the `args` parameter holds, in order: the
    /// top-level kernel's own [`Kernel::buffers`], also for the scan bodies it calls.
    fn kernel(
        &mut self,
        name: &str,
        k: &Kernel,
        args: &[BufId],
        linkage: Linkage,
    ) -> IrResult<(FunctionValue<'ctx>, FunctionValue<'ctx>)> {
        // Nested kernels (scan bodies) first, so the scan can call them.
        let mut nested = Vec::new();
        if let Body::Scan(s) = &k.body {
            for (j, bk) in s.body.iter().enumerate() {
                let sub = format!("{name}_b{j}_{}", sanitize(&bk.name));
                nested.push(self.kernel(&sub, bk, args, Linkage::Internal)?);
            }
        }
        let ir = self.ir;
        // The range function.
        let range_ty = ir.i64.fn_type(&[ir.ptr.into()], false);
        let rf = ir
            .module
            .add_function(&format!("{name}_range"), range_ty, Some(linkage));
        ir.add_fn_attrs(rf, &[]);
        ir.b.position_at_end(ir.ctx.append_basic_block(rf, "entry"));
        let dims = ir.param_ptr(rf, 0)?;
        let syms = self.load_syms(dims)?;
        let count = self.range_of(k, &syms)?;
        ir.b.build_return(Some(&count))?;

        // The ABI function loads the buffer addresses and calls the body, which takes
        // each buffer as a `noalias` parameter: distinct buffers never overlap (slots are
        // shared only by buffers with disjoint lifetimes), and telling LLVM so lets it
        // vectorise without run-time overlap checks.
        let bufs_list = k.buffers();
        let mut impl_params: Vec<inkwell::types::BasicMetadataTypeEnum> =
            vec![ir.ptr.into(); bufs_list.len()];
        let tail: [inkwell::types::BasicMetadataTypeEnum; 5] = [
            ir.ptr.into(),
            ir.ptr.into(),
            ir.i64.into(),
            ir.i64.into(),
            ir.ptr.into(),
        ];
        impl_params.extend(tail);
        let body_ty = ir.ctx.void_type().fn_type(&impl_params, false);
        let fi = ir
            .module
            .add_function(&format!("{name}_body"), body_ty, Some(Linkage::Internal));
        ir.add_fn_attrs(fi, &[]);
        // Not for a scan: its body kernels reach the same buffers through the argument
        // table, which `noalias` parameters would forbid (LLVM then forwards the initial
        // copy of an in-place state to its final copy, skipping every step's update).
        if !matches!(k.body, Body::Scan(_)) {
            ir.mark_noalias(fi, &(0..bufs_list.len() as u32).collect::<Vec<_>>());
        }
        let nb = bufs_list.len() as u32;

        let f = ir.module.add_function(name, self.fn_type(), Some(linkage));
        ir.add_fn_attrs(f, &[]);
        ir.b.position_at_end(ir.ctx.append_basic_block(f, "entry"));
        let args_ptr = ir.param_ptr(f, 0)?;
        let mut call_args: Vec<inkwell::values::BasicMetadataValueEnum> = Vec::new();
        for &b in &bufs_list {
            let pos = args
                .binary_search(&b)
                .map_err(|_| IrError(format!("buffer b{b} is not an argument of {name}")))?;
            let slot = unsafe {
                ir.b.build_in_bounds_gep(ir.ptr, args_ptr, &[ir.int(pos as u64)], "")?
            };
            call_args.push(ir.b.build_load(ir.ptr, slot, &format!("b{b}"))?.into());
        }
        call_args.push(args_ptr.into());
        for i in 1..5 {
            call_args.push(
                f.get_nth_param(i)
                    .ok_or_else(|| IrError("missing parameter".into()))?
                    .into(),
            );
        }
        ir.b.build_call(fi, &call_args, "")?;
        ir.b.build_return(None)?;

        ir.b.position_at_end(ir.ctx.append_basic_block(fi, "entry"));
        let bufs_arg = ir.param_ptr(fi, nb)?;
        let dims_arg = ir.param_ptr(fi, nb + 1)?;
        let scratch = ir.param_ptr(fi, nb + 4)?;
        let syms = self.load_syms(dims_arg)?;
        let mut bufs = HashMap::new();
        for (i, &b) in bufs_list.iter().enumerate() {
            bufs.insert(b, ir.param_ptr(fi, i as u32)?);
        }
        let fx = Fx {
            f: fi,
            bufs_arg,
            dims_arg,
            scratch,
            vals: Values { syms, bufs },
        };
        let (begin, end) = (ir.param_int(fi, nb + 2)?, ir.param_int(fi, nb + 3)?);
        match &k.body {
            Body::Map {
                out,
                offset,
                extents,
                expr,
            } => self.map(&fx, begin, end, *out, offset, extents, expr)?,
            Body::Reduce {
                out,
                extents,
                axis,
                op,
                expr,
            } => self.reduce(&fx, begin, end, *out, extents, *axis, *op, expr)?,
            Body::MatMul(m) => self.matmul(&fx, begin, end, m)?,
            Body::Attention(a) => self.attention(&fx, begin, end, a)?,
            Body::Scatter(s) => self.scatter(&fx, begin, end, s)?,
            Body::Scan(s) => self.scan(&fx, s, &nested, args, begin, end)?,
        }
        ir.b.build_return(None)?;
        Ok((f, rf))
    }

    /// Loads every symbol value at function entry (they are few: batch, seq, …).
    fn load_syms(&self, dims: PointerValue<'ctx>) -> IrResult<Vec<IntValue<'ctx>>> {
        let ir = self.ir;
        (0..self.n_syms as u64)
            .map(|i| {
                let p = unsafe { ir.b.build_in_bounds_gep(ir.i64, dims, &[ir.int(i)], "")? };
                Ok(ir
                    .b
                    .build_load(ir.i64, p, &format!("s{i}"))?
                    .into_int_value())
            })
            .collect()
    }

    fn range_of(&self, k: &Kernel, syms: &[IntValue<'ctx>]) -> IrResult<IntValue<'ctx>> {
        let c = |x: &Ix| self.ix_pure(x, syms);
        let prod = |xs: &[Ix]| -> IrResult<IntValue<'ctx>> {
            let mut acc = self.ir.int(1);
            for x in xs {
                acc = self.ir.mul(acc, c(x)?)?;
            }
            Ok(acc)
        };
        match &k.body {
            Body::Map { extents, .. } => prod(&extents[..extents.len().saturating_sub(1)]),
            Body::Reduce { extents, axis, .. } => prod(&extents[..*axis]),
            Body::MatMul(m) => {
                let (mm, nn) = (c(&m.m)?, c(&m.n)?);
                let bl = self.blocks(mm, nn, m)?;
                self.ir
                    .mul(self.ir.mul(c(&m.batch)?, bl.row_blocks)?, bl.col_blocks)
            }
            Body::Attention(a) => {
                // The backward parts: one block of queries (of keys, for dK and dV of a
                // key/value head) per iteration.
                let blocks = |n: &Ix| -> IrResult<IntValue<'ctx>> {
                    let g = attention::GRAD_BLOCK;
                    let n = self.ir.add(c(n)?, self.ir.int(g - 1))?;
                    Ok(self.ir.b.build_int_unsigned_div(n, self.ir.int(g), "")?)
                };
                match a.part {
                    None => prod(&a.sizes[..3]),
                    Some(crate::graph::AttnPart::K | crate::graph::AttnPart::V) => self.ir.mul(
                        self.ir.mul(c(&a.sizes[0])?, c(&a.sizes[6])?)?,
                        blocks(&a.sizes[3])?,
                    ),
                    Some(_) => self.ir.mul(
                        self.ir.mul(c(&a.sizes[0])?, c(&a.sizes[1])?)?,
                        blocks(&a.sizes[2])?,
                    ),
                }
            }
            Body::Scatter(s) => {
                let cols = crate::kernel::SCATTER_COLUMNS;
                let w = self.ir.add(c(&s.width)?, self.ir.int(cols - 1))?;
                Ok(self.ir.b.build_int_signed_div(w, self.ir.int(cols), "")?)
            }
            // A scan whose rows run apart: one iteration a row.
            Body::Scan(s) => match &s.rows {
                Some(r) => syms
                    .get(r.sym as usize)
                    .copied()
                    .ok_or_else(|| IrError(format!("scan rows: no symbol {}", r.sym))),
                None => Ok(self.ir.int(1)),
            },
        }
    }

    /// How an m×n matmul is cut into parallel iterations (the range function and the
    /// kernel both ask this, so they always agree).
    ///
    /// Columns: blocks of 384, which keep a packed B block in L2, or the whole row when the
    /// epilogue reads across it. Rows: when column blocks are few, rows are split too so
    /// that the iterations come in an even number of at least four (two threads share them
    /// evenly, four nearly so): 1 column block → 4 row blocks, 2 → 2, an odd number below
    /// 8 → 2, else 1; whole-row matmuls pack all of B in every iteration and split rows
    /// in two. Row blocks are multiples of 6, at most 576, and of nearly equal size.
    fn blocks(&self, m: IntValue<'ctx>, n: IntValue<'ctx>, mm: &MatMul) -> IrResult<Blocks<'ctx>> {
        let ir = self.ir;
        let (col_block, cb, splits) = if mm.whole_rows {
            (self.max(n, ir.int(1))?, ir.int(1), ir.int(2))
        } else {
            let cb = self.ceil_div(n, MATMUL_COLS)?;
            let is = |v: u64| ir.eq(cb, ir.int(v));
            let odd = ir.eq(ir.b.build_and(cb, ir.int(1), "")?, ir.int(1))?;
            let few =
                ir.b.build_int_compare(IntPredicate::SLT, cb, ir.int(8), "")?;
            let split2 = ir.b.build_or(is(2)?, ir.b.build_and(odd, few, "")?, "")?;
            let rb =
                ir.b.build_select(split2, ir.int(2), ir.int(1), "")?
                    .into_int_value();
            let rb =
                ir.b.build_select(is(1)?, ir.int(4), rb, "")?
                    .into_int_value();
            // A decode step (the matrix–vector routine): narrower column blocks, so
            // every thread streams an equal share of the weights (n = 1024 makes 16
            // blocks, not 3; a GQA key projection of 256 columns 4, not 1).
            let gemv = ir.b.build_int_compare(
                IntPredicate::ULE,
                m,
                ir.int(crate::backend::cpu::gemv_ir::GEMV_MAX_ROWS),
                "",
            )?;
            if mm.transpose_b && !mm.transpose_a {
                let narrow = self.ceil_div(n, GEMV_COLS)?;
                let col_block =
                    ir.b.build_select(gemv, ir.int(GEMV_COLS), ir.int(MATMUL_COLS), "")?
                        .into_int_value();
                let cb = ir.b.build_select(gemv, narrow, cb, "")?.into_int_value();
                (col_block, cb, rb)
            } else {
                (ir.int(MATMUL_COLS), cb, rb)
            }
        };
        // As many row blocks as the split asks for or MATMUL_ROWS needs, one more when
        // that leaves an odd number of iterations, and rows dealt evenly among them: 768
        // rows were one block of 576 and one of 192, so of the two threads one did three
        // times the other's work (GPT-2's MLP weight gradient, 768 × 3072 × 512).
        let needed = self.ceil_div(m, MATMUL_ROWS)?;
        let r = self.max(splits, needed)?;
        let odd = ir.b.build_and(ir.mul(r, cb)?, ir.int(1), "")?;
        let more =
            ir.b.build_int_compare(IntPredicate::UGT, m, ir.int(MATMUL_ROWS), "")?;
        let bump = ir.b.build_and(ir.eq(odd, ir.int(1))?, more, "")?;
        let r = ir.add(r, ir.b.build_int_z_extend(bump, ir.i64, "")?)?;
        let per = self.ceil_div_by(m, r)?;
        let per = ir.mul(self.ceil_div(per, ROW_QUANTUM)?, ir.int(ROW_QUANTUM))?;
        let per = ir.min(per, ir.int(MATMUL_ROWS))?;
        let row_block = self.max(per, ir.int(ROW_QUANTUM))?;
        Ok(Blocks {
            col_block,
            col_blocks: cb,
            row_block,
            row_blocks: self.ceil_div_by(m, row_block)?,
        })
    }

    fn ceil_div_by(&self, x: IntValue<'ctx>, d: IntValue<'ctx>) -> IrResult<IntValue<'ctx>> {
        let ir = self.ir;
        let up = ir.sub(ir.add(x, d)?, ir.int(1))?;
        Ok(ir.b.build_int_unsigned_div(up, d, "")?)
    }

    fn ceil_div(&self, x: IntValue<'ctx>, d: u64) -> IrResult<IntValue<'ctx>> {
        let ir = self.ir;
        Ok(ir
            .b
            .build_int_unsigned_div(ir.add(x, ir.int(d - 1))?, ir.int(d), "")?)
    }

    fn ex(&self) -> Exprs<'_, 'ctx> {
        Exprs {
            ir: self.ir,
            buf_quant: &self.buf_quant,
            f16c: self.f16c,
            own_libm: false,
        }
    }

    /// An index expression with no variables or loads (sizes).
    fn ix_pure(&self, x: &Ix, syms: &[IntValue<'ctx>]) -> IrResult<IntValue<'ctx>> {
        self.ex().ix_pure(x, syms)
    }

    fn max(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> IrResult<IntValue<'ctx>> {
        self.ex().max(a, b)
    }

    fn buf(&self, fx: &Fx<'ctx>, b: BufId) -> IrResult<PointerValue<'ctx>> {
        fx.vals.buf(b)
    }

    fn ix(&self, fx: &Fx<'ctx>, x: &Ix, vars: &[IntValue<'ctx>]) -> IrResult<IntValue<'ctx>> {
        self.ex().ix(&fx.vals, x, vars)
    }

    fn expr(&self, fx: &Fx<'ctx>, e: &Expr, vars: &[IntValue<'ctx>]) -> IrResult<FloatValue<'ctx>> {
        self.ex().expr(&fx.vals, e, vars)
    }

    /// Splits a linear index into the multi-index of `extents` (IR values).
    fn delinear(
        &self,
        lin: IntValue<'ctx>,
        extents: &[IntValue<'ctx>],
    ) -> IrResult<Vec<IntValue<'ctx>>> {
        self.ex().delinear(lin, extents)
    }
}
