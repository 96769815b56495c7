//! Small building blocks over inkwell's builder → LLVM IR: i64 index arithmetic, f32
//! element addressing, vector splats and multiply-adds, counted loops (with or without
//! loop-carried values) and two-way branches. The kernel generators are written in these.

use crate::backend::BackendError;
use inkwell::attributes::{Attribute, AttributeLoc};
use inkwell::builder::{Builder, BuilderError};
use inkwell::context::Context;
use inkwell::intrinsics::Intrinsic;
use inkwell::module::Module;
use inkwell::types::{BasicTypeEnum, FloatType, IntType, PointerType, VectorType};
use inkwell::values::{
    BasicMetadataValueEnum, BasicValue, BasicValueEnum, FunctionValue, IntValue, PointerValue,
    ValueKind, VectorValue,
};
use inkwell::{AddressSpace, IntPredicate};

/// A failure while building IR: a builder misuse or a missing intrinsic. Both are bugs in
/// a generator, reported as errors rather than panics.
#[derive(Debug)]
pub(crate) struct IrError(pub String);

impl From<BuilderError> for IrError {
    fn from(e: BuilderError) -> Self {
        IrError(e.to_string())
    }
}

impl From<IrError> for BackendError {
    fn from(e: IrError) -> Self {
        BackendError::Llvm {
            stage: "building IR",
            message: e.0,
        }
    }
}

pub(crate) type IrResult<T> = Result<T, IrError>;

/// `i = start, start + step, …` while `i + step <= limit`: only whole steps, so an
/// unrolled body never runs past `limit` (a remainder loop takes the rest).
#[derive(Debug, Clone, Copy)]
pub(crate) struct WholeSteps<'ctx> {
    pub start: IntValue<'ctx>,
    pub limit: IntValue<'ctx>,
    pub step: u64,
}

/// One module under construction with its builder and the types kernels use.
pub(crate) struct Ir<'ctx> {
    pub ctx: &'ctx Context,
    pub module: Module<'ctx>,
    pub b: Builder<'ctx>,
    pub i64: IntType<'ctx>,
    pub f32: FloatType<'ctx>,
    pub ptr: PointerType<'ctx>,
}

impl<'ctx> Ir<'ctx> {
    pub fn new(ctx: &'ctx Context, name: &str) -> Self {
        Ir {
            ctx,
            module: ctx.create_module(name),
            b: ctx.create_builder(),
            i64: ctx.i64_type(),
            f32: ctx.f32_type(),
            ptr: ctx.ptr_type(AddressSpace::default()),
        }
    }

    /// Marks a function `nounwind` (kernels never unwind) plus the given enum attributes.
    pub fn add_fn_attrs(&self, f: FunctionValue<'ctx>, names: &[&str]) {
        for name in std::iter::once(&"nounwind").chain(names) {
            let kind = Attribute::get_named_enum_kind_id(name);
            f.add_attribute(
                AttributeLoc::Function,
                self.ctx.create_enum_attribute(kind, 0),
            );
        }
    }

    /// Marks pointer parameters `noalias`: the buffers a kernel reads and writes are distinct.
    pub fn mark_noalias(&self, f: FunctionValue<'ctx>, params: &[u32]) {
        let kind = Attribute::get_named_enum_kind_id("noalias");
        for &p in params {
            f.add_attribute(
                AttributeLoc::Param(p),
                self.ctx.create_enum_attribute(kind, 0),
            );
        }
    }

    pub fn int(&self, v: u64) -> IntValue<'ctx> {
        self.i64.const_int(v, false)
    }

    pub fn param_int(&self, f: FunctionValue<'ctx>, n: u32) -> IrResult<IntValue<'ctx>> {
        match f.get_nth_param(n) {
            Some(BasicValueEnum::IntValue(v)) => Ok(v),
            other => Err(IrError(format!(
                "parameter {n} is not an integer: {other:?}"
            ))),
        }
    }

    pub fn param_ptr(&self, f: FunctionValue<'ctx>, n: u32) -> IrResult<PointerValue<'ctx>> {
        match f.get_nth_param(n) {
            Some(BasicValueEnum::PointerValue(v)) => Ok(v),
            other => Err(IrError(format!(
                "parameter {n} is not a pointer: {other:?}"
            ))),
        }
    }

    pub fn add(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> IrResult<IntValue<'ctx>> {
        Ok(self.b.build_int_nsw_add(a, b, "")?)
    }

    pub fn sub(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> IrResult<IntValue<'ctx>> {
        Ok(self.b.build_int_nsw_sub(a, b, "")?)
    }

    pub fn mul(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> IrResult<IntValue<'ctx>> {
        Ok(self.b.build_int_nsw_mul(a, b, "")?)
    }

    /// `a * b + c` on indices.
    pub fn mad(
        &self,
        a: IntValue<'ctx>,
        b: IntValue<'ctx>,
        c: IntValue<'ctx>,
    ) -> IrResult<IntValue<'ctx>> {
        let p = self.mul(a, b)?;
        self.add(p, c)
    }

    pub fn min(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> IrResult<IntValue<'ctx>> {
        let lt = self.b.build_int_compare(IntPredicate::SLT, a, b, "")?;
        Ok(self.b.build_select(lt, a, b, "min")?.into_int_value())
    }

    pub fn eq(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> IrResult<IntValue<'ctx>> {
        Ok(self.b.build_int_compare(IntPredicate::EQ, a, b, "")?)
    }

    /// The address of f32 element `idx` of `base`.
    pub fn at(
        &self,
        base: PointerValue<'ctx>,
        idx: IntValue<'ctx>,
    ) -> IrResult<PointerValue<'ctx>> {
        // SAFETY (of the IR, not of Rust): every index a generator passes stays inside the
        // buffer the caller described; the Rust wrapper checks buffer lengths.
        Ok(unsafe { self.b.build_in_bounds_gep(self.f32, base, &[idx], "")? })
    }

    /// A hint to bring element `idx` of `base` into L1 (for writing if `write`). The
    /// address is computed without `inbounds` and may lie past the buffer: prefetches
    /// never fault.
    pub fn prefetch(
        &self,
        base: PointerValue<'ctx>,
        idx: IntValue<'ctx>,
        write: bool,
    ) -> IrResult<()> {
        self.prefetch_to(base, idx, write, 3)
    }

    /// [`Ir::prefetch`] into the cache level LLVM's `locality` names (3: L1, 2: L2, 1: the
    /// last level).
    pub fn prefetch_to(
        &self,
        base: PointerValue<'ctx>,
        idx: IntValue<'ctx>,
        write: bool,
        locality: u64,
    ) -> IrResult<()> {
        // SAFETY (of the IR): a plain GEP is only address arithmetic; nothing loads it.
        let p = unsafe { self.b.build_gep(self.f32, base, &[idx], "")? };
        let i32t = self.ctx.i32_type();
        let decl = Intrinsic::find("llvm.prefetch")
            .and_then(|i| i.get_declaration(&self.module, &[self.ptr.into()]))
            .ok_or_else(|| IrError("LLVM has no llvm.prefetch".into()))?;
        let rw = i32t.const_int(write as u64, false);
        let (keep_in_l1, data) = (i32t.const_int(locality, false), i32t.const_int(1, false));
        self.b.build_call(
            decl,
            &[p.into(), rw.into(), keep_in_l1.into(), data.into()],
            "",
        )?;
        Ok(())
    }

    pub fn load_f32(&self, p: PointerValue<'ctx>) -> IrResult<BasicValueEnum<'ctx>> {
        Ok(self.b.build_load(self.f32, p, "")?)
    }

    /// A vector load that assumes only f32 (4-byte) alignment.
    pub fn load_vec(
        &self,
        ty: VectorType<'ctx>,
        p: PointerValue<'ctx>,
    ) -> IrResult<VectorValue<'ctx>> {
        let v = self.b.build_load(ty, p, "")?;
        if let Some(inst) = v.as_instruction_value() {
            inst.set_alignment(4).map_err(|e| IrError(e.to_string()))?;
        }
        Ok(v.into_vector_value())
    }

    /// A store that assumes only f32 (4-byte) alignment.
    pub fn store<V: BasicValue<'ctx>>(&self, p: PointerValue<'ctx>, v: V) -> IrResult<()> {
        let inst = self.b.build_store(p, v)?;
        inst.set_alignment(4).map_err(|e| IrError(e.to_string()))?;
        Ok(())
    }

    /// Every lane of a `ty` vector set to `x` (a broadcast).
    pub fn splat(
        &self,
        ty: VectorType<'ctx>,
        x: BasicValueEnum<'ctx>,
    ) -> IrResult<VectorValue<'ctx>> {
        let zero = self.ctx.i32_type().const_zero();
        let one = self.b.build_insert_element(ty.get_undef(), x, zero, "")?;
        let mask = self.ctx.i32_type().vec_type(ty.get_size()).const_zero();
        Ok(self
            .b
            .build_shuffle_vector(one, ty.get_undef(), mask, "splat")?)
    }

    /// Calls an overloaded intrinsic and returns its value.
    pub fn intrinsic(
        &self,
        name: &str,
        overloads: &[BasicTypeEnum<'ctx>],
        args: &[BasicMetadataValueEnum<'ctx>],
    ) -> IrResult<BasicValueEnum<'ctx>> {
        let decl = Intrinsic::find(name)
            .and_then(|i| i.get_declaration(&self.module, overloads))
            .ok_or_else(|| IrError(format!("LLVM has no intrinsic {name} for {overloads:?}")))?;
        match self.b.build_call(decl, args, "")?.try_as_basic_value() {
            ValueKind::Basic(v) => Ok(v),
            ValueKind::Instruction(_) => Err(IrError(format!("{name} returns no value"))),
        }
    }

    /// `a * b + c` per lane. `llvm.fmuladd` becomes one FMA where the target has FMA and a
    /// multiply and an add where it has not (plain x86-64), never a libm call.
    pub fn fmuladd(
        &self,
        a: VectorValue<'ctx>,
        b: VectorValue<'ctx>,
        c: VectorValue<'ctx>,
    ) -> IrResult<VectorValue<'ctx>> {
        let ty = a.get_type();
        let v = self.intrinsic(
            "llvm.fmuladd",
            &[ty.into()],
            &[a.into(), b.into(), c.into()],
        )?;
        Ok(v.into_vector_value())
    }

    /// A loop `for i in (start..end).step_by(step)`; `body` emits the body at the current
    /// position and may leave the builder in any block of its own. Ends positioned after it.
    pub fn for_range(
        &self,
        f: FunctionValue<'ctx>,
        name: &str,
        start: IntValue<'ctx>,
        end: IntValue<'ctx>,
        step: u64,
        body: impl FnOnce(IntValue<'ctx>) -> IrResult<()>,
    ) -> IrResult<()> {
        self.step_loop(f, name, start, end, |i| {
            body(i)?;
            self.add(i, self.int(step))
        })
    }

    /// `i = start; while i < end { i = body(i) }`: a loop whose body picks its own step
    /// (it must return a value greater than `i`). Ends positioned after it.
    pub fn step_loop(
        &self,
        f: FunctionValue<'ctx>,
        name: &str,
        start: IntValue<'ctx>,
        end: IntValue<'ctx>,
        body: impl FnOnce(IntValue<'ctx>) -> IrResult<IntValue<'ctx>>,
    ) -> IrResult<()> {
        let pre = self.current_block()?;
        let head = self.ctx.append_basic_block(f, &format!("{name}.head"));
        let body_bb = self.ctx.append_basic_block(f, &format!("{name}.body"));
        let exit = self.ctx.append_basic_block(f, &format!("{name}.exit"));
        self.b.build_unconditional_branch(head)?;
        self.b.position_at_end(head);
        let i = self.b.build_phi(self.i64, name)?;
        let iv = i.as_basic_value().into_int_value();
        let more = self.b.build_int_compare(IntPredicate::SLT, iv, end, "")?;
        self.b.build_conditional_branch(more, body_bb, exit)?;
        self.b.position_at_end(body_bb);
        let next = body(iv)?;
        let latch = self.current_block()?;
        self.b.build_unconditional_branch(head)?;
        i.add_incoming(&[(&start, pre), (&next, latch)]);
        self.b.position_at_end(exit);
        Ok(())
    }

    /// A loop over `steps` (whole steps only), carrying `init` values from one
    /// iteration to the next (`body` maps the current values to the next ones). Returns
    /// the index where it stopped and the final values.
    pub fn carried_loop(
        &self,
        f: FunctionValue<'ctx>,
        name: &str,
        steps: WholeSteps<'ctx>,
        init: &[BasicValueEnum<'ctx>],
        body: impl FnOnce(
            IntValue<'ctx>,
            &[BasicValueEnum<'ctx>],
        ) -> IrResult<Vec<BasicValueEnum<'ctx>>>,
    ) -> IrResult<(IntValue<'ctx>, Vec<BasicValueEnum<'ctx>>)> {
        let WholeSteps { start, limit, step } = steps;
        let pre = self.current_block()?;
        let head = self.ctx.append_basic_block(f, &format!("{name}.head"));
        let body_bb = self.ctx.append_basic_block(f, &format!("{name}.body"));
        let exit = self.ctx.append_basic_block(f, &format!("{name}.exit"));
        self.b.build_unconditional_branch(head)?;
        self.b.position_at_end(head);
        let i = self.b.build_phi(self.i64, name)?;
        let iv = i.as_basic_value().into_int_value();
        let phis = init
            .iter()
            .map(|v| self.b.build_phi(v.get_type(), ""))
            .collect::<Result<Vec<_>, _>>()?;
        let current: Vec<BasicValueEnum<'ctx>> = phis.iter().map(|p| p.as_basic_value()).collect();
        let next_i = self.add(iv, self.int(step))?;
        let more = self
            .b
            .build_int_compare(IntPredicate::SLE, next_i, limit, "")?;
        self.b.build_conditional_branch(more, body_bb, exit)?;
        self.b.position_at_end(body_bb);
        let next = body(iv, &current)?;
        if next.len() != init.len() {
            return Err(IrError(format!(
                "{name}: body returned {} values for {}",
                next.len(),
                init.len()
            )));
        }
        let latch = self.current_block()?;
        self.b.build_unconditional_branch(head)?;
        i.add_incoming(&[(&start, pre), (&next_i, latch)]);
        for ((phi, first), again) in phis.iter().zip(init).zip(&next) {
            phi.add_incoming(&[(first, pre), (again, latch)]);
        }
        self.b.position_at_end(exit);
        Ok((iv, current))
    }

    /// `if cond { then } else { otherwise }`; ends positioned after both.
    pub fn if_else(
        &self,
        f: FunctionValue<'ctx>,
        name: &str,
        cond: IntValue<'ctx>,
        then: impl FnOnce() -> IrResult<()>,
        otherwise: impl FnOnce() -> IrResult<()>,
    ) -> IrResult<()> {
        let then_bb = self.ctx.append_basic_block(f, &format!("{name}.then"));
        let else_bb = self.ctx.append_basic_block(f, &format!("{name}.else"));
        let join = self.ctx.append_basic_block(f, &format!("{name}.join"));
        self.b.build_conditional_branch(cond, then_bb, else_bb)?;
        self.b.position_at_end(then_bb);
        then()?;
        self.b.build_unconditional_branch(join)?;
        self.b.position_at_end(else_bb);
        otherwise()?;
        self.b.build_unconditional_branch(join)?;
        self.b.position_at_end(join);
        Ok(())
    }

    /// `if cond { then() } else { otherwise }` for values: `then` emits its code and
    /// returns as many values as `otherwise` holds (of the same types); the result is
    /// each pair's phi. Ends positioned after both.
    pub fn if_values(
        &self,
        f: FunctionValue<'ctx>,
        name: &str,
        cond: IntValue<'ctx>,
        then: impl FnOnce() -> IrResult<Vec<BasicValueEnum<'ctx>>>,
        otherwise: &[BasicValueEnum<'ctx>],
    ) -> IrResult<Vec<BasicValueEnum<'ctx>>> {
        self.if_else_values(f, name, cond, then, || Ok(otherwise.to_vec()))
    }

    /// `if cond { then() } else { otherwise() }` for values: both emit their code and
    /// return as many values of the same types; the result is each pair's phi. Ends
    /// positioned after both.
    pub fn if_else_values(
        &self,
        f: FunctionValue<'ctx>,
        name: &str,
        cond: IntValue<'ctx>,
        then: impl FnOnce() -> IrResult<Vec<BasicValueEnum<'ctx>>>,
        otherwise: impl FnOnce() -> IrResult<Vec<BasicValueEnum<'ctx>>>,
    ) -> IrResult<Vec<BasicValueEnum<'ctx>>> {
        let then_bb = self.ctx.append_basic_block(f, &format!("{name}.then"));
        let else_bb = self.ctx.append_basic_block(f, &format!("{name}.else"));
        let join = self.ctx.append_basic_block(f, &format!("{name}.join"));
        self.b.build_conditional_branch(cond, then_bb, else_bb)?;
        self.b.position_at_end(then_bb);
        let a = then()?;
        let a_end = self.current_block()?;
        self.b.build_unconditional_branch(join)?;
        self.b.position_at_end(else_bb);
        let b = otherwise()?;
        let b_end = self.current_block()?;
        self.b.build_unconditional_branch(join)?;
        if a.len() != b.len() {
            return Err(IrError(format!(
                "{name}: {} values and {}",
                a.len(),
                b.len()
            )));
        }
        self.b.position_at_end(join);
        a.iter()
            .zip(&b)
            .map(|(x, y)| {
                let phi = self.b.build_phi(x.get_type(), "")?;
                phi.add_incoming(&[(x, a_end), (y, b_end)]);
                Ok(phi.as_basic_value())
            })
            .collect()
    }

    fn current_block(&self) -> IrResult<inkwell::basic_block::BasicBlock<'ctx>> {
        self.b
            .get_insert_block()
            .ok_or_else(|| IrError("builder is not positioned".into()))
    }
}
