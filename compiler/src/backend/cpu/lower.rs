//! Kernel IR → LLVM IR for the CPU: one exported function pair per kernel with the C ABI
//! of `docs/PACKAGE.md` (`void k(bufs, dims, begin, end, scratch)` and
//! `i64 k_range(dims)`). Loop nests are written as scalar loops whose innermost axis is
//! contiguous, with reductions marked reassociable, so LLVM's vectoriser turns them into
//! AVX-512 / AVX2 / SSE code for the target; the matmul calls the register-tiled
//! microkernel of `sgemm_ir`, emitted once per module.

use super::codegen;
use super::ir::{Ir, IrError, IrResult, WholeSteps};
use super::math::Math;
use super::sgemm_ir::{emit_sgemm_pair, SgemmTiles};
use super::target::CpuTarget;
use crate::backend::BackendError;
use crate::graph::{BinaryOp, MaskKind, ReduceOp, UnaryOp};
use crate::kernel::{Attention, Body, BufId, Expr, Ix, Kernel, MatMul, Program, Scan};
use inkwell::context::Context;
use inkwell::module::Linkage;
use inkwell::targets::FileType;
use inkwell::values::{FloatValue, FunctionValue, IntValue, PointerValue};
use inkwell::{FloatPredicate, IntPredicate};
use std::collections::HashMap;

/// Rows and columns of C per parallel matmul iteration, multiples of every MR and NR:
/// at most 576 rows and 384 columns (see `Lowerer::blocks`).
pub const MATMUL_ROWS: u64 = 576;
pub const MATMUL_COLS: u64 = 384;
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
    let (sgemm, sgemm_bt) = emit_sgemm_pair(&ir, &tiles)?;
    let gemv_bt = super::gemv_ir::emit_gemv_bt(&ir, &tiles)?;
    let mut lw = Lowerer {
        ir: &ir,
        sgemm,
        sgemm_bt,
        gemv_bt,
        symbols: Vec::new(),
        n_syms: prog.syms.len(),
    };
    // Kernels equal up to their buffers (the same op in every layer) share one function.
    let mut seen: HashMap<String, (String, String)> = HashMap::new();
    for (i, k) in prog.kernels.iter().enumerate() {
        let key = k.shape_key();
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
    /// The matrix–vector product for few rows of A (decoding).
    gemv_bt: FunctionValue<'ctx>,
    symbols: Vec<(String, String)>,
    n_syms: usize,
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
    syms: Vec<IntValue<'ctx>>,
    bufs: HashMap<BufId, PointerValue<'ctx>>,
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
            syms,
            bufs,
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
            Body::Scan(s) => self.scan(&fx, s, &nested)?,
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
                let bl = self.blocks(mm, nn, m.whole_rows)?;
                self.ir
                    .mul(self.ir.mul(c(&m.batch)?, bl.row_blocks)?, bl.col_blocks)
            }
            Body::Attention(a) => prod(&a.sizes[..3]),
            Body::Scan(_) => Ok(self.ir.int(1)),
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
    /// in two. Row blocks are multiples of 6, at most 576.
    fn blocks(
        &self,
        m: IntValue<'ctx>,
        n: IntValue<'ctx>,
        whole_rows: bool,
    ) -> IrResult<Blocks<'ctx>> {
        let ir = self.ir;
        let (col_block, cb, splits) = if whole_rows {
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
            (ir.int(MATMUL_COLS), cb, rb)
        };
        let per = self.ceil_div_by(m, splits)?;
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

    /// An index expression with no variables or loads (sizes).
    fn ix_pure(&self, x: &Ix, syms: &[IntValue<'ctx>]) -> IrResult<IntValue<'ctx>> {
        let fx_less = |x: &Ix| self.ix_pure(x, syms);
        let ir = self.ir;
        Ok(match x {
            Ix::Const(v) => ir.i64.const_int(*v as u64, true),
            Ix::Sym(s) => syms[*s as usize],
            Ix::Add(a, b) => ir.add(fx_less(a)?, fx_less(b)?)?,
            Ix::Mul(a, b) => ir.mul(fx_less(a)?, fx_less(b)?)?,
            Ix::Div(a, b) => ir.b.build_int_unsigned_div(fx_less(a)?, fx_less(b)?, "")?,
            Ix::Rem(a, b) => ir.b.build_int_unsigned_rem(fx_less(a)?, fx_less(b)?, "")?,
            Ix::Min(a, b) => ir.min(fx_less(a)?, fx_less(b)?)?,
            Ix::Max(a, b) => self.max(fx_less(a)?, fx_less(b)?)?,
            Ix::Var(_) | Ix::Load(..) | Ix::FromF32(_) => {
                return Err(IrError(format!("size expression depends on data: {x:?}")))
            }
        })
    }

    fn max(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> IrResult<IntValue<'ctx>> {
        let gt = self.ir.b.build_int_compare(IntPredicate::SGT, a, b, "")?;
        Ok(self.ir.b.build_select(gt, a, b, "max")?.into_int_value())
    }

    fn buf(&self, fx: &Fx<'ctx>, b: BufId) -> IrResult<PointerValue<'ctx>> {
        fx.bufs
            .get(&b)
            .copied()
            .ok_or_else(|| IrError(format!("buffer b{b} not loaded")))
    }

    fn ix(&self, fx: &Fx<'ctx>, x: &Ix, vars: &[IntValue<'ctx>]) -> IrResult<IntValue<'ctx>> {
        let ir = self.ir;
        let r = |x: &Ix| self.ix(fx, x, vars);
        Ok(match x {
            Ix::Const(v) => ir.i64.const_int(*v as u64, true),
            Ix::Var(k) => *vars
                .get(*k as usize)
                .ok_or_else(|| IrError(format!("variable v{k} out of range")))?,
            Ix::Sym(s) => fx.syms[*s as usize],
            Ix::Add(a, b) => ir.add(r(a)?, r(b)?)?,
            Ix::Mul(a, b) => ir.mul(r(a)?, r(b)?)?,
            Ix::Div(a, b) => ir.b.build_int_unsigned_div(r(a)?, r(b)?, "")?,
            Ix::Rem(a, b) => ir.b.build_int_unsigned_rem(r(a)?, r(b)?, "")?,
            Ix::Min(a, b) => ir.min(r(a)?, r(b)?)?,
            Ix::Max(a, b) => self.max(r(a)?, r(b)?)?,
            Ix::Load(b, i) => {
                let base = self.buf(fx, *b)?;
                let p = unsafe { ir.b.build_in_bounds_gep(ir.i64, base, &[r(i)?], "")? };
                ir.b.build_load(ir.i64, p, "")?.into_int_value()
            }
            Ix::FromF32(e) => {
                let v = self.expr(fx, e, vars)?;
                ir.b.build_float_to_signed_int(v, ir.i64, "")?
            }
        })
    }

    fn expr(&self, fx: &Fx<'ctx>, e: &Expr, vars: &[IntValue<'ctx>]) -> IrResult<FloatValue<'ctx>> {
        let ir = self.ir;
        let m = Math { ir };
        let r = |e: &Expr| self.expr(fx, e, vars);
        Ok(match e {
            Expr::Const(v) => m.c(*v),
            Expr::Load(b, i) => {
                let base = self.buf(fx, *b)?;
                let p = ir.at(base, self.ix(fx, i, vars)?)?;
                ir.load_f32(p)?.into_float_value()
            }
            Expr::FromIx(i) => {
                ir.b.build_signed_int_to_float(self.ix(fx, i, vars)?, ir.f32, "")?
            }
            Expr::Unary(u, a) => {
                let x = r(a)?;
                match u {
                    UnaryOp::Neg => ir.b.build_float_neg(x, "")?,
                    UnaryOp::Exp => m.exp(x)?,
                    UnaryOp::Log => m.log(x)?,
                    UnaryOp::Sqrt => m.unary("llvm.sqrt", x)?,
                    UnaryOp::Rsqrt => {
                        ir.b.build_float_div(m.c(1.0), m.unary("llvm.sqrt", x)?, "")?
                    }
                    UnaryOp::Tanh => m.tanh(x)?,
                    UnaryOp::Erf => m.erf(x)?,
                    UnaryOp::Sigmoid => m.sigmoid(x)?,
                    UnaryOp::Relu => m.select(m.lt(m.c(0.0), x)?, x, m.c(0.0))?,
                    UnaryOp::Silu => ir.b.build_float_mul(x, m.sigmoid(x)?, "")?,
                    UnaryOp::Gelu => m.gelu(x)?,
                    UnaryOp::GeluTanh => m.gelu_tanh(x)?,
                    UnaryOp::Softplus => m.softplus(x)?,
                    UnaryOp::Abs => m.unary("llvm.fabs", x)?,
                    UnaryOp::Square => ir.b.build_float_mul(x, x, "")?,
                    UnaryOp::Recip => ir.b.build_float_div(m.c(1.0), x, "")?,
                    UnaryOp::Sin => m.unary("llvm.sin", x)?,
                    UnaryOp::Cos => m.unary("llvm.cos", x)?,
                    UnaryOp::Floor => m.unary("llvm.floor", x)?,
                }
            }
            Expr::Binary(op, a, b) => {
                let (x, y) = (r(a)?, r(b)?);
                let flag = |p: FloatPredicate| -> IrResult<FloatValue<'ctx>> {
                    let c = ir.b.build_float_compare(p, x, y, "")?;
                    m.select(c, m.c(1.0), m.c(0.0))
                };
                match op {
                    BinaryOp::Add => ir.b.build_float_add(x, y, "")?,
                    BinaryOp::Sub => ir.b.build_float_sub(x, y, "")?,
                    BinaryOp::Mul => ir.b.build_float_mul(x, y, "")?,
                    BinaryOp::Div => ir.b.build_float_div(x, y, "")?,
                    BinaryOp::Max => m.binary_intrinsic("llvm.maxnum", x, y)?,
                    BinaryOp::Min => m.binary_intrinsic("llvm.minnum", x, y)?,
                    BinaryOp::Pow => m.binary_intrinsic("llvm.pow", x, y)?,
                    BinaryOp::Lt => flag(FloatPredicate::OLT)?,
                    BinaryOp::Le => flag(FloatPredicate::OLE)?,
                    BinaryOp::Eq => flag(FloatPredicate::OEQ)?,
                }
            }
            Expr::Select(c, a, b) => {
                let cv = r(c)?;
                let nz =
                    ir.b.build_float_compare(FloatPredicate::UNE, cv, m.c(0.0), "")?;
                m.select(nz, r(a)?, r(b)?)?
            }
            Expr::IfLt(x, y, a, b) => {
                let c = ir.b.build_int_compare(
                    IntPredicate::SLT,
                    self.ix(fx, x, vars)?,
                    self.ix(fx, y, vars)?,
                    "",
                )?;
                m.select(c, r(a)?, r(b)?)?
            }
        })
    }

    /// Splits a linear index into the multi-index of `extents` (IR values).
    fn delinear(
        &self,
        lin: IntValue<'ctx>,
        extents: &[IntValue<'ctx>],
    ) -> IrResult<Vec<IntValue<'ctx>>> {
        let ir = self.ir;
        let mut out = vec![ir.int(0); extents.len()];
        let mut rest = lin;
        for k in (0..extents.len()).rev() {
            if k == 0 {
                out[0] = rest;
            } else {
                out[k] = ir.b.build_int_unsigned_rem(rest, extents[k], "")?;
                rest = ir.b.build_int_unsigned_div(rest, extents[k], "")?;
            }
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn map(
        &self,
        fx: &Fx<'ctx>,
        begin: IntValue<'ctx>,
        end: IntValue<'ctx>,
        out: BufId,
        offset: &Ix,
        extents: &[Ix],
        expr: &Expr,
    ) -> IrResult<()> {
        let ir = self.ir;
        let ext: Vec<IntValue<'ctx>> = extents
            .iter()
            .map(|x| self.ix(fx, x, &[]))
            .collect::<IrResult<_>>()?;
        let outp = self.buf(fx, out)?;
        let shifted = offset.as_const() != Some(0);
        if ext.is_empty() {
            let v = self.expr(fx, expr, &[])?;
            let at = if shifted {
                ir.at(outp, self.ix(fx, offset, &[])?)?
            } else {
                outp
            };
            return ir.store(at, v);
        }
        let r = ext.len();
        let inner = ext[r - 1];
        ir.for_range(fx.f, "row", begin, end, 1, |row| {
            let mut vars = self.delinear(row, &ext[..r - 1])?;
            let mut base = ir.mul(row, inner)?;
            if shifted {
                base = ir.add(base, self.ix(fx, offset, &vars)?)?;
            }
            ir.for_range(fx.f, "j", ir.int(0), inner, 1, |j| {
                vars.push(j);
                let v = self.expr(fx, expr, &vars)?;
                vars.pop();
                ir.store(ir.at(outp, ir.add(base, j)?)?, v)
            })
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn reduce(
        &self,
        fx: &Fx<'ctx>,
        begin: IntValue<'ctx>,
        end: IntValue<'ctx>,
        out: BufId,
        extents: &[Ix],
        axis: usize,
        op: ReduceOp,
        expr: &Expr,
    ) -> IrResult<()> {
        let ir = self.ir;
        let m = Math { ir };
        let ext: Vec<IntValue<'ctx>> = extents
            .iter()
            .map(|x| self.ix(fx, x, &[]))
            .collect::<IrResult<_>>()?;
        let outp = self.buf(fx, out)?;
        let n = ext[axis];
        let mut inner = ir.int(1);
        for e in &ext[axis + 1..] {
            inner = ir.mul(inner, *e)?;
        }
        ir.for_range(fx.f, "o", begin, end, 1, |o| {
            let outer_vars = self.delinear(o, &ext[..axis])?;
            ir.for_range(fx.f, "ii", ir.int(0), inner, 1, |ii| {
                let inner_vars = self.delinear(ii, &ext[axis + 1..])?;
                let init = match op {
                    ReduceOp::Max => m.c(f64::NEG_INFINITY),
                    ReduceOp::Sum | ReduceOp::Mean => m.c(0.0),
                };
                let steps = WholeSteps {
                    start: ir.int(0),
                    limit: n,
                    step: 1,
                };
                let (_, acc) = ir.carried_loop(fx.f, "r", steps, &[init.into()], |r, acc| {
                    let mut vars = outer_vars.clone();
                    vars.push(r);
                    vars.extend_from_slice(&inner_vars);
                    let x = self.expr(fx, expr, &vars)?;
                    let a = acc[0].into_float_value();
                    let next = match op {
                        ReduceOp::Max => m.binary_intrinsic("llvm.maxnum", a, x)?,
                        ReduceOp::Sum | ReduceOp::Mean => {
                            let s = ir.b.build_float_add(a, x, "")?;
                            set_reassoc(s);
                            s
                        }
                    };
                    Ok(vec![next.into()])
                })?;
                let mut v = acc[0].into_float_value();
                if op == ReduceOp::Mean {
                    let nf = ir.b.build_signed_int_to_float(n, ir.f32, "")?;
                    v = ir.b.build_float_div(v, nf, "")?;
                }
                ir.store(ir.at(outp, ir.mad(o, inner, ii)?)?, v)
            })
        })
    }

    fn matmul(
        &self,
        fx: &Fx<'ctx>,
        begin: IntValue<'ctx>,
        end: IntValue<'ctx>,
        mm: &MatMul,
    ) -> IrResult<()> {
        let ir = self.ir;
        let c = |x: &Ix| self.ix(fx, x, &[]);
        let (m, n, k) = (c(&mm.m)?, c(&mm.n)?, c(&mm.k)?);
        let Blocks {
            col_block,
            col_blocks: nblocks,
            row_block,
            row_blocks: mblocks,
        } = self.blocks(m, n, mm.whole_rows)?;
        let per_batch = ir.mul(mblocks, nblocks)?;
        let (lda, ldb) = (c(&mm.a.ld)?, c(&mm.b.ld)?);
        let (abuf, bbuf, cbuf) = (
            self.buf(fx, mm.a.buf)?,
            self.buf(fx, mm.b.buf)?,
            self.buf(fx, mm.out)?,
        );
        let mn = ir.mul(m, n)?;
        // Consecutive iterations of one row block (a thread's share of the columns) run
        // as one call of the matmul, which walks their column blocks itself.
        ir.step_loop(fx.f, "it", begin, end, |it| {
            let bidx = ir.b.build_int_unsigned_div(it, per_batch, "")?;
            let rem = ir.b.build_int_unsigned_rem(it, per_batch, "")?;
            let ib = ir.b.build_int_unsigned_div(rem, nblocks, "")?;
            let jb = ir.b.build_int_unsigned_rem(rem, nblocks, "")?;
            let run = ir.min(ir.sub(nblocks, jb)?, ir.sub(end, it)?)?;
            let i0 = ir.mul(ib, row_block)?;
            let j0 = ir.mul(jb, col_block)?;
            let rows = ir.min(row_block, ir.sub(m, i0)?)?;
            let cols = ir.min(ir.mul(run, col_block)?, ir.sub(n, j0)?)?;
            let bv = [bidx];
            let a_off = ir.mad(i0, lda, self.ix(fx, &mm.a.offset, &bv)?)?;
            let b_base = self.ix(fx, &mm.b.offset, &bv)?;
            let b_off = if mm.transpose_b {
                ir.mad(j0, ldb, b_base)?
            } else {
                ir.add(b_base, j0)?
            };
            let c_off = ir.add(ir.mul(bidx, mn)?, ir.mad(i0, n, j0)?)?;
            let ap = ir.at(abuf, a_off)?;
            let bp = ir.at(bbuf, b_off)?;
            let cp = ir.at(cbuf, c_off)?;
            let has_k =
                ir.b.build_int_compare(IntPredicate::SGT, k, ir.int(0), "")?;
            ir.if_else(
                fx.f,
                "k",
                has_k,
                || {
                    // (rows, cols, k, a, lda, b, ldb, c, ldc[, scratch]): the gemv takes
                    // the sgemm's arguments but the scratch.
                    let args: [inkwell::values::BasicMetadataValueEnum; 10] = [
                        rows.into(),
                        cols.into(),
                        k.into(),
                        ap.into(),
                        lda.into(),
                        bp.into(),
                        ldb.into(),
                        cp.into(),
                        n.into(),
                        fx.scratch.into(),
                    ];
                    let call = |callee, args: &[_]| -> IrResult<()> {
                        ir.b.build_call(callee, args, "")?;
                        Ok(())
                    };
                    if !mm.transpose_b {
                        return call(self.sgemm, &args);
                    }
                    // A few rows (a decode step): one pass over B, no packing.
                    let few = ir.b.build_int_compare(
                        IntPredicate::SLE,
                        rows,
                        ir.int(super::gemv_ir::GEMV_MAX_ROWS),
                        "",
                    )?;
                    ir.if_else(
                        fx.f,
                        "gemv",
                        few,
                        || call(self.gemv_bt, &args[..9]),
                        || call(self.sgemm_bt, &args),
                    )
                },
                || {
                    ir.for_range(fx.f, "zi", ir.int(0), rows, 1, |i| {
                        ir.for_range(fx.f, "zj", ir.int(0), cols, 1, |j| {
                            ir.store(ir.at(cp, ir.mad(i, n, j)?)?, ir.f32.const_zero())
                        })
                    })
                },
            )?;
            match &mm.epilogue {
                Some(ep) if mm.whole_rows => {
                    // Reads across the row: the row's results go to scratch (free once the
                    // product is done) and are stored after the whole row is computed.
                    let tmp = fx.scratch;
                    ir.for_range(fx.f, "ei", i0, ir.add(i0, rows)?, 1, |i| {
                        let row = ir.add(ir.mul(bidx, mn)?, ir.mul(i, n)?)?;
                        ir.for_range(fx.f, "ej", ir.int(0), n, 1, |j| {
                            let v = self.expr(fx, ep, &[bidx, i, j])?;
                            ir.store(ir.at(tmp, j)?, v)
                        })?;
                        ir.for_range(fx.f, "es", ir.int(0), n, 1, |j| {
                            let v = ir.load_f32(ir.at(tmp, j)?)?;
                            ir.store(ir.at(cbuf, ir.add(row, j)?)?, v)
                        })
                    })?;
                }
                Some(ep) => {
                    ir.for_range(fx.f, "ei", i0, ir.add(i0, rows)?, 1, |i| {
                        let row = ir.add(ir.mul(bidx, mn)?, ir.mul(i, n)?)?;
                        ir.for_range(fx.f, "ej", j0, ir.add(j0, cols)?, 1, |j| {
                            let v = self.expr(fx, ep, &[bidx, i, j])?;
                            ir.store(ir.at(cbuf, ir.add(row, j)?)?, v)
                        })
                    })?;
                }
                None => {}
            }
            ir.add(it, run)
        })
    }

    fn attention(
        &self,
        fx: &Fx<'ctx>,
        begin: IntValue<'ctx>,
        end: IntValue<'ctx>,
        a: &Attention,
    ) -> IrResult<()> {
        let ir = self.ir;
        let m = Math { ir };
        let c = |x: &Ix| self.ix(fx, x, &[]);
        let s: Vec<IntValue<'ctx>> = a.sizes.iter().map(c).collect::<IrResult<_>>()?;
        let (h, t, nk, d, dv, hkv) = (s[1], s[2], s[3], s[4], s[5], s[6]);
        let group = ir.b.build_int_unsigned_div(h, hkv, "")?;
        let ht = ir.mul(h, t)?;
        let strides =
            |st: &crate::kernel::Strided| -> IrResult<(PointerValue<'ctx>, Vec<IntValue<'ctx>>)> {
                let base = ir.at(self.buf(fx, st.buf)?, c(&st.offset)?)?;
                let v = st.strides.iter().map(c).collect::<IrResult<Vec<_>>>()?;
                Ok((base, v))
            };
        let (qb, qs) = strides(&a.q)?;
        let (kb, ks) = strides(&a.k)?;
        let (vb, vs) = strides(&a.v)?;
        let (ob, os) = strides(&a.out)?;
        let acc = fx.scratch;
        let neg_inf = m.c(f64::NEG_INFINITY);
        let scale = m.c(a.scale);
        // The row of key p: p itself, or p mod R in a ring (whose dropped keys the
        // sliding window never reaches).
        let ring = a.ring.as_ref().map(c).transpose()?;
        let row_of = |p: IntValue<'ctx>| -> IrResult<IntValue<'ctx>> {
            match ring {
                Some(r) => Ok(ir.b.build_int_unsigned_rem(p, r, "")?),
                None => Ok(p),
            }
        };
        ir.for_range(fx.f, "row", begin, end, 1, |it| {
            let b = ir.b.build_int_unsigned_div(it, ht, "")?;
            let hh =
                ir.b.build_int_unsigned_rem(ir.b.build_int_unsigned_div(it, t, "")?, h, "")?;
            let tt = ir.b.build_int_unsigned_rem(it, t, "")?;
            let kh = ir.b.build_int_unsigned_div(hh, group, "")?;
            let q = ir.at(
                qb,
                ir.add(
                    ir.mul(b, qs[0])?,
                    ir.add(ir.mul(hh, qs[1])?, ir.mul(tt, qs[2])?)?,
                )?,
            )?;
            let krow0 = ir.at(kb, ir.add(ir.mul(b, ks[0])?, ir.mul(kh, ks[1])?)?)?;
            let vrow0 = ir.at(vb, ir.add(ir.mul(b, vs[0])?, ir.mul(kh, vs[1])?)?)?;
            let o = ir.at(
                ob,
                ir.add(
                    ir.mul(b, os[0])?,
                    ir.add(ir.mul(hh, os[1])?, ir.mul(tt, os[2])?)?,
                )?,
            )?;
            // Keys this query may see.
            let pos = ir.add(ir.sub(nk, t)?, tt)?;
            let (lo, hi) = match a.mask {
                MaskKind::Bidirectional => (ir.int(0), nk),
                MaskKind::Causal => (ir.int(0), ir.min(nk, ir.add(pos, ir.int(1))?)?),
                MaskKind::Sliding(w) => (
                    self.max(ir.int(0), ir.sub(ir.add(pos, ir.int(1))?, ir.int(w))?)?,
                    ir.min(nk, ir.add(pos, ir.int(1))?)?,
                ),
            };
            ir.for_range(fx.f, "z", ir.int(0), dv, 1, |x| {
                ir.store(ir.at(acc, x)?, m.c(0.0))
            })?;
            // Keys in blocks of KEY_BLOCK: scores into scratch, one max and one rescale
            // per block, exponentials over the block (vectorised), then Σ p·v.
            let scores = ir.at(acc, dv)?;
            let (_, ml) = ir.carried_loop(
                fx.f,
                "kblk",
                WholeSteps {
                    start: lo,
                    limit: ir.add(hi, ir.int(KEY_BLOCK - 1))?,
                    step: KEY_BLOCK,
                },
                &[neg_inf.into(), m.c(0.0).into()],
                |k0, cur| {
                    let (mx, l) = (cur[0].into_float_value(), cur[1].into_float_value());
                    let kn = ir.min(ir.int(KEY_BLOCK), ir.sub(hi, k0)?)?;
                    let (_, bmax) = ir.carried_loop(
                        fx.f,
                        "score",
                        WholeSteps {
                            start: ir.int(0),
                            limit: kn,
                            step: 1,
                        },
                        &[neg_inf.into()],
                        |j, bm| {
                            let key = ir.add(k0, j)?;
                            let kp = ir.at(krow0, ir.mul(row_of(key)?, ks[2])?)?;
                            let dsteps = WholeSteps {
                                start: ir.int(0),
                                limit: d,
                                step: 1,
                            };
                            let (_, dot) = ir.carried_loop(
                                fx.f,
                                "dot",
                                dsteps,
                                &[m.c(0.0).into()],
                                |x, acc| {
                                    let qv = ir
                                        .load_f32(ir.at(q, ir.mul(x, qs[3])?)?)?
                                        .into_float_value();
                                    let kv = ir
                                        .load_f32(ir.at(kp, ir.mul(x, ks[3])?)?)?
                                        .into_float_value();
                                    let p = ir.b.build_float_mul(qv, kv, "")?;
                                    set_reassoc(p);
                                    let sum =
                                        ir.b.build_float_add(acc[0].into_float_value(), p, "")?;
                                    set_reassoc(sum);
                                    Ok(vec![sum.into()])
                                },
                            )?;
                            let vars = [b, hh, tt, key];
                            let mut score =
                                ir.b.build_float_mul(dot[0].into_float_value(), scale, "")?;
                            if let Some(bias) = &a.bias {
                                score =
                                    ir.b.build_float_add(score, self.expr(fx, bias, &vars)?, "")?;
                            }
                            if let Some(km) = &a.key_mask {
                                let keep = self.expr(fx, km, &vars)?;
                                let off = ir.b.build_float_compare(
                                    FloatPredicate::OEQ,
                                    keep,
                                    m.c(0.0),
                                    "",
                                )?;
                                score = m.select(off, neg_inf, score)?;
                            }
                            ir.store(ir.at(scores, j)?, score)?;
                            let bmx =
                                m.binary_intrinsic("llvm.maxnum", bm[0].into_float_value(), score)?;
                            Ok(vec![bmx.into()])
                        },
                    )?;
                    let new_max =
                        m.binary_intrinsic("llvm.maxnum", mx, bmax[0].into_float_value())?;
                    let none =
                        ir.b.build_float_compare(FloatPredicate::OEQ, new_max, neg_inf, "")?;
                    let corr = m.select(
                        none,
                        m.c(1.0),
                        m.exp(ir.b.build_float_sub(mx, new_max, "")?)?,
                    )?;
                    // p = exp(score − max) over the block, summed.
                    let (_, psum) = ir.carried_loop(
                        fx.f,
                        "exp",
                        WholeSteps {
                            start: ir.int(0),
                            limit: kn,
                            step: 1,
                        },
                        &[m.c(0.0).into()],
                        |j, acc| {
                            let ps = ir.at(scores, j)?;
                            let sc = ir.load_f32(ps)?.into_float_value();
                            let p = m.select(
                                none,
                                m.c(0.0),
                                m.exp(ir.b.build_float_sub(sc, new_max, "")?)?,
                            )?;
                            ir.store(ps, p)?;
                            let sum = ir.b.build_float_add(acc[0].into_float_value(), p, "")?;
                            set_reassoc(sum);
                            Ok(vec![sum.into()])
                        },
                    )?;
                    let l2 = ir.b.build_float_add(
                        ir.b.build_float_mul(l, corr, "")?,
                        psum[0].into_float_value(),
                        "",
                    )?;
                    let rescale =
                        ir.b.build_float_compare(FloatPredicate::UNE, corr, m.c(1.0), "")?;
                    ir.if_else(
                        fx.f,
                        "rescale",
                        rescale,
                        || {
                            ir.for_range(fx.f, "rs", ir.int(0), dv, 1, |x| {
                                let pa = ir.at(acc, x)?;
                                let v = ir.load_f32(pa)?.into_float_value();
                                ir.store(pa, ir.b.build_float_mul(v, corr, "")?)
                            })
                        },
                        || Ok(()),
                    )?;
                    ir.for_range(fx.f, "pv", ir.int(0), kn, 1, |j| {
                        let p = ir.load_f32(ir.at(scores, j)?)?.into_float_value();
                        let vp = ir.at(vrow0, ir.mul(row_of(ir.add(k0, j)?)?, vs[2])?)?;
                        ir.for_range(fx.f, "pvd", ir.int(0), dv, 1, |x| {
                            let pa = ir.at(acc, x)?;
                            let av = ir.load_f32(pa)?.into_float_value();
                            let vv = ir
                                .load_f32(ir.at(vp, ir.mul(x, vs[3])?)?)?
                                .into_float_value();
                            let sum =
                                ir.b.build_float_add(av, ir.b.build_float_mul(p, vv, "")?, "")?;
                            ir.store(pa, sum)
                        })
                    })?;
                    Ok(vec![new_max.into(), l2.into()])
                },
            )?;
            let l = ml[1].into_float_value();
            let empty =
                ir.b.build_float_compare(FloatPredicate::OLE, l, m.c(0.0), "")?;
            let inv = m.select(empty, m.c(0.0), ir.b.build_float_div(m.c(1.0), l, "")?)?;
            ir.for_range(fx.f, "out", ir.int(0), dv, 1, |x| {
                let v = ir.load_f32(ir.at(acc, x)?)?.into_float_value();
                ir.store(
                    ir.at(o, ir.mul(x, os[3])?)?,
                    ir.b.build_float_mul(v, inv, "")?,
                )
            })
        })
    }

    fn copy(
        &self,
        dst: PointerValue<'ctx>,
        src: PointerValue<'ctx>,
        elems: IntValue<'ctx>,
    ) -> IrResult<()> {
        let ir = self.ir;
        ir.b.build_memcpy(dst, 4, src, 4, ir.mul(elems, ir.int(4))?)?;
        Ok(())
    }

    fn scan(
        &self,
        fx: &Fx<'ctx>,
        s: &Scan,
        nested: &[(FunctionValue<'ctx>, FunctionValue<'ctx>)],
    ) -> IrResult<()> {
        let ir = self.ir;
        let c = |x: &Ix| self.ix(fx, x, &[]);
        for (from, to, n) in &s.init {
            self.copy(self.buf(fx, *to)?, self.buf(fx, *from)?, c(n)?)?;
        }
        let steps = c(&s.steps)?;
        ir.for_range(fx.f, "t", ir.int(0), steps, 1, |t| {
            let tt = if s.reverse {
                ir.sub(ir.sub(steps, ir.int(1))?, t)?
            } else {
                t
            };
            for sc in &s.seq_in {
                let (rows, len) = (c(&sc.rows)?, c(&sc.len)?);
                let (seq, step) = (self.buf(fx, sc.seq)?, self.buf(fx, sc.step)?);
                ir.for_range(fx.f, "ci", ir.int(0), rows, 1, |r| {
                    let src = ir.at(seq, ir.mul(ir.mad(r, steps, tt)?, len)?)?;
                    self.copy(ir.at(step, ir.mul(r, len)?)?, src, len)
                })?;
            }
            for (kf, rf) in nested {
                let n = match ir
                    .b
                    .build_call(*rf, &[fx.dims_arg.into()], "")?
                    .try_as_basic_value()
                {
                    inkwell::values::ValueKind::Basic(v) => v,
                    _ => return Err(IrError("range returns nothing".into())),
                };
                ir.b.build_call(
                    *kf,
                    &[
                        fx.bufs_arg.into(),
                        fx.dims_arg.into(),
                        ir.int(0).into(),
                        n.into(),
                        fx.scratch.into(),
                    ],
                    "",
                )?;
            }
            for (from, to, n) in &s.update {
                self.copy(self.buf(fx, *to)?, self.buf(fx, *from)?, c(n)?)?;
            }
            for sc in &s.seq_out {
                let (rows, len) = (c(&sc.rows)?, c(&sc.len)?);
                let (seq, step) = (self.buf(fx, sc.seq)?, self.buf(fx, sc.step)?);
                ir.for_range(fx.f, "co", ir.int(0), rows, 1, |r| {
                    let dst = ir.at(seq, ir.mul(ir.mad(r, steps, tt)?, len)?)?;
                    self.copy(dst, ir.at(step, ir.mul(r, len)?)?, len)
                })?;
            }
            Ok(())
        })?;
        for (from, to, n) in &s.finish {
            self.copy(self.buf(fx, *to)?, self.buf(fx, *from)?, c(n)?)?;
        }
        Ok(())
    }
}
