//! The thread program's primitives — thread and block indices, the block barrier, warp
//! reductions by butterfly shuffles, the tensor cores' `mma`, shared memory — for the two
//! places it runs: a GPU (NVPTX intrinsics, `addrspace(3)` shared memory, the
//! `ptx_kernel` calling convention) and the host simulator (the same values read from a
//! context the simulator passes as a third parameter; the barrier, the warp reduction and
//! the `mma` called through it). The kernel generators are written once against these.

use crate::backend::llvm::ir::{Ir, IrError, IrResult};
use arch_runtime::gguf::GgmlType;
use inkwell::module::Linkage;
use inkwell::values::{FloatValue, FunctionValue, IntValue, PointerValue};
use inkwell::AddressSpace;

/// The most shared memory a block may declare statically (sm_80 and sm_90 alike); more
/// is dynamic shared memory, up to the device's opt-in limit (163 KiB on sm_80, 227 KiB
/// on sm_90).
pub const STATIC_SHARED_BYTES: u64 = 48 << 10;

/// Where the thread program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// PTX for this SM generation (80: Ampere, 90: Hopper).
    Ptx { sm: u32 },
    /// The host simulator (`sim`): every thread an OS thread.
    Host,
}

/// Slots of the host simulator's context, 8 bytes each (see `sim::Ctx`).
pub(crate) const CTX_TID: u64 = 0;
pub(crate) const CTX_CTAID: u64 = 2;
pub(crate) const CTX_NCTAID: u64 = 3;
pub(crate) const CTX_SHARED: u64 = 4;
pub(crate) const CTX_BARRIER: u64 = 5;
pub(crate) const CTX_MMA: u64 = 7;
pub(crate) const CTX_REDUCE: u64 = 8;
pub(crate) const CTX_MMA16: u64 = 9;
pub(crate) const CTX_WGMMA: u64 = 10;
pub(crate) const CTX_CP_ASYNC: u64 = 12;
pub(crate) const CTX_CP_COMMIT: u64 = 13;
pub(crate) const CTX_CP_WAIT: u64 = 14;
/// Set in the tile count of a simulated half-precision `mma` batch when the operands
/// are f16 (bf16 without it).
pub(crate) const MMA16_F16: u64 = 0x100;
/// The most n tiles of one [`Simt::mma_3xtf32`] batch (the simulator's limit too).
pub(crate) const MMA_MAX_N: u64 = 4;
/// The widest `wgmma` n (its accumulators: n / 2 a thread).
pub(crate) const WGMMA_MAX_N: u64 = 256;
/// Threads of a warpgroup, which issues a `wgmma` together.
pub(crate) const WARPGROUP: u64 = 128;

/// The primitives inside one kernel function.
#[derive(Clone, Copy)]
pub(crate) struct Simt<'a, 'ctx> {
    pub ir: &'a Ir<'ctx>,
    pub mode: Mode,
    /// The host simulator's context parameter.
    ctx: Option<PointerValue<'ctx>>,
    /// Host mode: the registers of an `mma` batch on the thread's stack (8 + 8 per n
    /// tile), which the simulator reads and writes.
    mma_io: Option<PointerValue<'ctx>>,
    /// Host mode: a `wgmma`'s accumulators ([`WGMMA_MAX_N`] / 2 floats), likewise.
    wgmma_io: Option<PointerValue<'ctx>>,
}

impl<'a, 'ctx> Simt<'a, 'ctx> {
    /// Declares kernel `name` taking (buffer table, dims) — and the simulator's context in
    /// host mode — and positions the builder in its entry block.
    pub fn kernel(
        ir: &'a Ir<'ctx>,
        mode: Mode,
        name: &str,
        threads: u64,
    ) -> IrResult<(Simt<'a, 'ctx>, FunctionValue<'ctx>)> {
        let mut params: Vec<inkwell::types::BasicMetadataTypeEnum> =
            vec![ir.ptr.into(), ir.ptr.into()];
        if mode == Mode::Host {
            params.push(ir.ptr.into());
        }
        let ty = ir.ctx.void_type().fn_type(&params, false);
        let f = ir.module.add_function(name, ty, Some(Linkage::External));
        ir.add_fn_attrs(f, &[]);
        if let Mode::Ptx { .. } = mode {
            // `ptx_kernel`: a launchable `.entry`; `.maxntid`: no more than `threads` per
            // block, so ptxas may give each thread up to 255 registers (it assumes 1024
            // threads, and 64 registers, otherwise).
            f.set_call_conventions(71);
            let node = ir.ctx.metadata_node(&[
                f.as_global_value().as_pointer_value().into(),
                ir.ctx.metadata_string("maxntidx").into(),
                ir.ctx.i32_type().const_int(threads, false).into(),
            ]);
            ir.module
                .add_global_metadata("nvvm.annotations", &node)
                .map_err(|e| IrError(e.to_string()))?;
        }
        ir.b.position_at_end(ir.ctx.append_basic_block(f, "entry"));
        let (ctx, mma_io, wgmma_io) = match mode {
            Mode::Host => (
                Some(ir.param_ptr(f, 2)?),
                Some(ir.b.build_alloca(
                    ir.ctx.i32_type().array_type((8 + 8 * MMA_MAX_N) as u32),
                    "mma_io",
                )?),
                Some(ir.b.build_alloca(ir.f32.array_type((WGMMA_MAX_N / 2) as u32), "wgmma_io")?),
            ),
            Mode::Ptx { .. } => (None, None, None),
        };
        Ok((
            Simt {
                ir,
                mode,
                ctx,
                mma_io,
                wgmma_io,
            },
            f,
        ))
    }

    fn sreg(&self, name: &str) -> IrResult<IntValue<'ctx>> {
        let v = self.ir.intrinsic(name, &[], &[])?.into_int_value();
        Ok(self.ir.b.build_int_z_extend(v, self.ir.i64, "")?)
    }

    fn ctx_slot(&self, slot: u64) -> IrResult<PointerValue<'ctx>> {
        let ir = self.ir;
        let ctx = self
            .ctx
            .ok_or_else(|| IrError("no simulator context".into()))?;
        Ok(unsafe { ir.b.build_in_bounds_gep(ir.i64, ctx, &[ir.int(slot)], "")? })
    }

    fn ctx_int(&self, slot: u64) -> IrResult<IntValue<'ctx>> {
        let p = self.ctx_slot(slot)?;
        Ok(self.ir.b.build_load(self.ir.i64, p, "")?.into_int_value())
    }

    fn ctx_ptr(&self, slot: u64) -> IrResult<PointerValue<'ctx>> {
        let p = self.ctx_slot(slot)?;
        Ok(self
            .ir
            .b
            .build_load(self.ir.ptr, p, "")?
            .into_pointer_value())
    }

    pub fn tid(&self) -> IrResult<IntValue<'ctx>> {
        match self.mode {
            Mode::Ptx { .. } => self.sreg("llvm.nvvm.read.ptx.sreg.tid.x"),
            Mode::Host => self.ctx_int(CTX_TID),
        }
    }

    pub fn ctaid(&self) -> IrResult<IntValue<'ctx>> {
        match self.mode {
            Mode::Ptx { .. } => self.sreg("llvm.nvvm.read.ptx.sreg.ctaid.x"),
            Mode::Host => self.ctx_int(CTX_CTAID),
        }
    }

    pub fn nctaid(&self) -> IrResult<IntValue<'ctx>> {
        match self.mode {
            Mode::Ptx { .. } => self.sreg("llvm.nvvm.read.ptx.sreg.nctaid.x"),
            Mode::Host => self.ctx_int(CTX_NCTAID),
        }
    }

    /// `__syncthreads()`: every thread of the block must reach it.
    pub fn barrier(&self) -> IrResult<()> {
        let ir = self.ir;
        match self.mode {
            Mode::Ptx { .. } => {
                let decl = inkwell::intrinsics::Intrinsic::find("llvm.nvvm.barrier0")
                    .and_then(|i| i.get_declaration(&ir.module, &[]))
                    .ok_or_else(|| IrError("LLVM has no llvm.nvvm.barrier0".into()))?;
                ir.b.build_call(decl, &[], "")?;
            }
            Mode::Host => {
                let ty = ir.ctx.void_type().fn_type(&[ir.ptr.into()], false);
                self.host_call(CTX_BARRIER, ty, &[])?;
            }
        }
        Ok(())
    }

    /// Host mode: calls the simulator's function in context slot `slot` with the context
    /// and `args` (`ty` includes the context parameter).
    fn host_call(
        &self,
        slot: u64,
        ty: inkwell::types::FunctionType<'ctx>,
        args: &[inkwell::values::BasicMetadataValueEnum<'ctx>],
    ) -> IrResult<inkwell::values::CallSiteValue<'ctx>> {
        let f = self.ctx_ptr(slot)?;
        let ctx = self
            .ctx
            .ok_or_else(|| IrError("no simulator context".into()))?;
        let mut all = vec![ctx.into()];
        all.extend_from_slice(args);
        Ok(self.ir.b.build_indirect_call(ty, f, &all, "")?)
    }

    /// Combines a value across the 32 lanes of a warp by sum, or by `maxnum` with `max`
    /// (every lane must call it): a butterfly of `shfl.sync.bfly` steps, masks 16 to 1,
    /// which leaves the same bits in every lane. The simulator takes the whole butterfly
    /// in one exchange between the lanes and replays it (the same bits).
    pub fn warp_reduce(&self, v: FloatValue<'ctx>, max: bool) -> IrResult<FloatValue<'ctx>> {
        self.butterfly(v, max, 16)
    }

    /// [`Simt::warp_reduce`] within each quad of four lanes (masks 2 and 1): what the
    /// lanes holding one row of an `mma` accumulator tile combine.
    pub fn quad_reduce(&self, v: FloatValue<'ctx>, max: bool) -> IrResult<FloatValue<'ctx>> {
        self.butterfly(v, max, 2)
    }

    /// A butterfly over masks `first`, first / 2, …, 1 (a power of two up to 16).
    fn butterfly(&self, v: FloatValue<'ctx>, max: bool, first: u64) -> IrResult<FloatValue<'ctx>> {
        let ir = self.ir;
        let i32t = ir.ctx.i32_type();
        let value = |r: inkwell::values::CallSiteValue<'ctx>| match r.try_as_basic_value() {
            inkwell::values::ValueKind::Basic(x) => Ok(x.into_float_value()),
            _ => Err(IrError("the warp reduction returns nothing".into())),
        };
        match self.mode {
            Mode::Ptx { .. } => {
                let decl = inkwell::intrinsics::Intrinsic::find("llvm.nvvm.shfl.sync.bfly.f32")
                    .and_then(|i| i.get_declaration(&ir.module, &[]))
                    .ok_or_else(|| IrError("LLVM has no llvm.nvvm.shfl.sync.bfly.f32".into()))?;
                let m = crate::backend::llvm::math::Math { ir };
                let mut v = v;
                let mut mask = first;
                while mask > 0 {
                    let o = value(ir.b.build_call(
                        decl,
                        &[
                            i32t.const_all_ones().into(),
                            v.into(),
                            i32t.const_int(mask, false).into(),
                            i32t.const_int(31, false).into(),
                        ],
                        "",
                    )?)?;
                    v = if max {
                        m.binary_intrinsic("llvm.maxnum", v, o)?
                    } else {
                        ir.b.build_float_add(v, o, "")?
                    };
                    mask /= 2;
                }
                Ok(v)
            }
            Mode::Host => {
                let ty = ir.f32.fn_type(
                    &[ir.ptr.into(), ir.f32.into(), i32t.into(), i32t.into()],
                    false,
                );
                value(self.host_call(
                    CTX_REDUCE,
                    ty,
                    &[
                        v.into(),
                        i32t.const_int(u64::from(max), false).into(),
                        i32t.const_int(first, false).into(),
                    ],
                )?)
            }
        }
    }

    /// `D = A·B + C` for a warp's 16×8k tiles on the tensor cores in "3×TF32": A and B
    /// each given as a tf32 head and tail (f32 bit patterns of which the hardware reads
    /// the tf32 part), and per n tile `j` three
    /// `mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32` — tail·head, head·tail,
    /// head·head, small terms first — into `c[j]` (two, without head·tail, when `b_exact`
    /// says B's tails are zero). Every lane of the warp must call it.
    /// With `g = lane / 4`, `t = lane % 4`, lane holds A(g, t), A(g + 8, t), A(g, t + 4),
    /// A(g + 8, t + 4); of n tile j B(t, g), B(t + 4, g); and C, D at (g, 2t),
    /// (g, 2t + 1), (g + 8, 2t), (g + 8, 2t + 1). The simulator takes the whole batch in
    /// one exchange between the lanes.
    #[allow(clippy::type_complexity)]
    pub fn mma_3xtf32(
        &self,
        a: ([IntValue<'ctx>; 4], [IntValue<'ctx>; 4]),
        b: &[([IntValue<'ctx>; 2], [IntValue<'ctx>; 2])],
        c: &[[FloatValue<'ctx>; 4]],
        b_exact: bool,
    ) -> IrResult<Vec<[FloatValue<'ctx>; 4]>> {
        let ir = self.ir;
        match self.mode {
            Mode::Ptx { .. } => {
                let mma = |a: &[IntValue<'ctx>; 4],
                           b: &[IntValue<'ctx>; 2],
                           c: [FloatValue<'ctx>; 4]|
                 -> IrResult<[FloatValue<'ctx>; 4]> {
                    let args: Vec<inkwell::values::BasicMetadataValueEnum<'ctx>> = a
                        .iter()
                        .chain(b)
                        .map(|&x| x.into())
                        .chain(c.iter().map(|&x| x.into()))
                        .collect();
                    let r = ir
                        .intrinsic("llvm.nvvm.mma.m16n8k8.row.col.tf32", &[], &args)?
                        .into_struct_value();
                    let mut d = c;
                    for (i, x) in d.iter_mut().enumerate() {
                        *x =
                            ir.b.build_extract_value(r, i as u32, "")?
                                .into_float_value();
                    }
                    Ok(d)
                };
                b.iter()
                    .zip(c)
                    .map(|((hi, lo), &c)| {
                        let c = mma(&a.1, hi, c)?;
                        let c = if b_exact { c } else { mma(&a.0, lo, c)? };
                        mma(&a.0, hi, c)
                    })
                    .collect()
            }
            Mode::Host => {
                // A head, A tail, then per n tile B head, B tail.
                let a_regs: Vec<IntValue<'ctx>> = a.0.iter().chain(&a.1).copied().collect();
                let b_regs: Vec<Vec<IntValue<'ctx>>> = b
                    .iter()
                    .map(|(hi, lo)| hi.iter().chain(lo).copied().collect())
                    .collect();
                self.host_mma(CTX_MMA, 0, &a_regs, &b_regs, c)
            }
        }
    }

    /// A warp's `mma` batch on the simulator: this lane's registers in one array — A's
    /// from 0, then per n tile j B's from 8 + 8j and C at 8 + 8j + 4 — handed to the
    /// simulator's function in context slot `slot` with the tile count (or'ed with
    /// `tag`), which writes each D over its C.
    fn host_mma(
        &self,
        slot: u64,
        tag: u64,
        a: &[IntValue<'ctx>],
        b: &[Vec<IntValue<'ctx>>],
        c: &[[FloatValue<'ctx>; 4]],
    ) -> IrResult<Vec<[FloatValue<'ctx>; 4]>> {
        let ir = self.ir;
        let i32t = ir.ctx.i32_type();
        let n = b.len() as u64;
        if n > MMA_MAX_N {
            return Err(IrError(format!("{n} mma tiles in one batch")));
        }
        let io = self
            .mma_io
            .ok_or_else(|| IrError("no mma scratch".into()))?;
        let at = |i: u64| -> IrResult<PointerValue<'ctx>> {
            Ok(unsafe { ir.b.build_in_bounds_gep(i32t, io, &[ir.int(i)], "")? })
        };
        for (i, v) in a.iter().enumerate() {
            ir.b.build_store(at(i as u64)?, *v)?;
        }
        for (j, (bj, cj)) in b.iter().zip(c).enumerate() {
            let base = 8 + 8 * j as u64;
            for (i, v) in bj.iter().enumerate() {
                ir.b.build_store(at(base + i as u64)?, *v)?;
            }
            for (i, v) in cj.iter().enumerate() {
                ir.b.build_store(at(base + 4 + i as u64)?, *v)?;
            }
        }
        let ty = ir
            .ctx
            .void_type()
            .fn_type(&[ir.ptr.into(), i32t.into(), ir.ptr.into()], false);
        self.host_call(
            slot,
            ty,
            &[i32t.const_int(n | tag, false).into(), io.into()],
        )?;
        (0..n)
            .map(|j| {
                let mut d = [c[0][0]; 4];
                for (i, x) in d.iter_mut().enumerate() {
                    let p = at(8 + 8 * j + 4 + i as u64)?;
                    *x = ir.b.build_load(ir.f32, p, "")?.into_float_value();
                }
                Ok(d)
            })
            .collect()
    }

    /// `D = A·B + C` for a warp's 16×8k tiles on the tensor cores in half precision: per n
    /// tile one `mma.sync.aligned.m16n8k16.row.col.f32.{bf16|f16}.{bf16|f16}.f32` (`ty`
    /// BF16 or F16), f32 accumulation. Every lane of the warp must call it. Registers pack
    /// two 16-bit values, the lower k in the low half; with `g = lane / 4`, `t = lane %
    /// 4`, lane holds A(g, 2t..2t+1), A(g + 8, 2t..), A(g, 2t + 8..), A(g + 8, 2t + 8..);
    /// of n tile j B(2t..2t+1, g), B(2t + 8.., g); C and D as [`Simt::mma_3xtf32`]'s.
    pub fn mma_half(
        &self,
        ty: GgmlType,
        a: [IntValue<'ctx>; 4],
        b: &[[IntValue<'ctx>; 2]],
        c: &[[FloatValue<'ctx>; 4]],
    ) -> IrResult<Vec<[FloatValue<'ctx>; 4]>> {
        let ir = self.ir;
        let f16 = match ty {
            GgmlType::BF16 => false,
            GgmlType::F16 => true,
            other => return Err(IrError(format!("no {} tensor-core products", other.name()))),
        };
        match self.mode {
            Mode::Ptx { .. } => {
                let h2 = ir.ctx.f16_type().vec_type(2);
                let operand =
                    |x: IntValue<'ctx>| -> IrResult<inkwell::values::BasicMetadataValueEnum<'ctx>> {
                        Ok(if f16 {
                            ir.b.build_bit_cast(x, h2, "")?.into()
                        } else {
                            x.into()
                        })
                    };
                let name = if f16 {
                    "llvm.nvvm.mma.m16n8k16.row.col.f32.f32"
                } else {
                    "llvm.nvvm.mma.m16n8k16.row.col.bf16"
                };
                b.iter()
                    .zip(c)
                    .map(|(bj, &cj)| {
                        let mut args: Vec<inkwell::values::BasicMetadataValueEnum<'ctx>> =
                            Vec::with_capacity(10);
                        for &x in a.iter().chain(bj) {
                            args.push(operand(x)?);
                        }
                        for &x in &cj {
                            args.push(x.into());
                        }
                        let r = ir.intrinsic(name, &[], &args)?.into_struct_value();
                        let mut d = cj;
                        for (i, x) in d.iter_mut().enumerate() {
                            *x =
                                ir.b.build_extract_value(r, i as u32, "")?
                                    .into_float_value();
                        }
                        Ok(d)
                    })
                    .collect()
            }
            Mode::Host => {
                let b_regs: Vec<Vec<IntValue<'ctx>>> = b.iter().map(|r| r.to_vec()).collect();
                let tag = if f16 { MMA16_F16 } else { 0 };
                self.host_mma(CTX_MMA16, tag, &a, &b_regs, c)
            }
        }
    }

    /// The address of `p` (a generic pointer into the block's shared memory) in the
    /// shared window, as an i64: what a `wgmma` descriptor holds. The simulator's is the
    /// offset from its shared memory's start.
    pub fn shared_address(&self, p: PointerValue<'ctx>) -> IrResult<IntValue<'ctx>> {
        let ir = self.ir;
        match self.mode {
            Mode::Ptx { .. } => {
                let shared = ir.ctx.ptr_type(AddressSpace::from(3u16));
                let s = ir.b.build_address_space_cast(p, shared, "")?;
                Ok(ir.b.build_ptr_to_int(s, ir.i64, "")?)
            }
            Mode::Host => {
                let base = self.ctx_ptr(CTX_SHARED)?;
                let b = ir.b.build_ptr_to_int(base, ir.i64, "")?;
                let a = ir.b.build_ptr_to_int(p, ir.i64, "")?;
                Ok(ir.b.build_int_sub(a, b, "")?)
            }
        }
    }

    /// `D = A·B + D` for a warpgroup's 64 × n tile on Hopper's tensor cores: per pair of
    /// shared-memory matrix descriptors (A 64 × 16, B n × 16, both k-major: see
    /// `lower::Gen::wgmma_products`) one
    /// `wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{bf16|f16}` (`ty` BF16 or F16), n =
    /// 2 · `acc.len()`, all of them in one group that is waited for before the
    /// accumulators are returned — to the compiler it is one synchronous step. A
    /// `wgmma.fence` first orders the accumulators' earlier writes before the products.
    /// Every thread of the warpgroup must call it with the same descriptors. With `w` =
    /// this thread's warp within the warpgroup, `g = lane / 4`, `t = lane % 4`,
    /// accumulator 4j + e is D(16w + g + 8·(e / 2), 8j + 2t + e % 2) — for each 8-column
    /// group j the layout of an `mma.sync` m16n8 tile. The simulator computes each
    /// thread's elements from the shared memory the descriptors describe.
    pub fn wgmma_half(
        &self,
        ty: GgmlType,
        descs: &[(IntValue<'ctx>, IntValue<'ctx>)],
        acc: &[FloatValue<'ctx>],
    ) -> IrResult<Vec<FloatValue<'ctx>>> {
        let ir = self.ir;
        let n = 2 * acc.len() as u64;
        if n == 0 || n > WGMMA_MAX_N || !n.is_multiple_of(8) {
            return Err(IrError(format!("no wgmma of n = {n}")));
        }
        let (f16, name) = match ty {
            GgmlType::BF16 => (false, "bf16"),
            GgmlType::F16 => (true, "f16"),
            other => return Err(IrError(format!("no {} tensor-core products", other.name()))),
        };
        let i32t = ir.ctx.i32_type();
        match self.mode {
            Mode::Ptx { .. } => {
                let m = acc.len();
                let regs = (0..m)
                    .map(|i| format!("${i}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let scale = 2 * m + 2 * descs.len();
                let mut asm = format!(
                    "{{\n.reg .pred p;\nsetp.ne.b32 p, ${scale}, 0;\nwgmma.fence.sync.aligned;\n"
                );
                for i in 0..descs.len() {
                    let (a, b) = (2 * m + 2 * i, 2 * m + 2 * i + 1);
                    asm += &format!(
                        "wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{name}.{name} {{{regs}}}, ${a}, ${b}, p, 1, 1, 0, 0;\n"
                    );
                }
                asm += "wgmma.commit_group.sync.aligned;\nwgmma.wait_group.sync.aligned 0;\n}";
                let mut cons: Vec<String> = (0..m).map(|_| "=f".to_string()).collect();
                cons.extend((0..m).map(|i| i.to_string()));
                cons.extend((0..2 * descs.len()).map(|_| "l".to_string()));
                cons.push("r".into());
                let fields: Vec<inkwell::types::BasicTypeEnum> =
                    (0..m).map(|_| ir.f32.into()).collect();
                let ret = ir.ctx.struct_type(&fields, false);
                let mut params: Vec<inkwell::types::BasicMetadataTypeEnum> =
                    (0..m).map(|_| ir.f32.into()).collect();
                params.extend(
                    (0..2 * descs.len())
                        .map(|_| -> inkwell::types::BasicMetadataTypeEnum { ir.i64.into() }),
                );
                params.push(i32t.into());
                let fty = ret.fn_type(&params, false);
                let asm_fn =
                    ir.ctx
                        .create_inline_asm(fty, asm, cons.join(","), true, false, None, false);
                let mut args: Vec<inkwell::values::BasicMetadataValueEnum<'ctx>> =
                    acc.iter().map(|&x| x.into()).collect();
                for &(a, b) in descs {
                    args.push(a.into());
                    args.push(b.into());
                }
                args.push(i32t.const_int(1, false).into());
                let r = match ir
                    .b
                    .build_indirect_call(fty, asm_fn, &args, "")?
                    .try_as_basic_value()
                {
                    inkwell::values::ValueKind::Basic(v) => v.into_struct_value(),
                    _ => return Err(IrError("wgmma returns nothing".into())),
                };
                (0..m)
                    .map(|i| {
                        Ok(ir
                            .b
                            .build_extract_value(r, i as u32, "")?
                            .into_float_value())
                    })
                    .collect()
            }
            Mode::Host => {
                let io = self
                    .wgmma_io
                    .ok_or_else(|| IrError("no wgmma scratch".into()))?;
                let at = |i: usize| -> IrResult<PointerValue<'ctx>> {
                    Ok(unsafe {
                        ir.b.build_in_bounds_gep(ir.f32, io, &[ir.int(i as u64)], "")?
                    })
                };
                for (i, v) in acc.iter().enumerate() {
                    ir.b.build_store(at(i)?, *v)?;
                }
                let ty = ir.ctx.void_type().fn_type(
                    &[
                        ir.ptr.into(),
                        i32t.into(),
                        i32t.into(),
                        ir.i64.into(),
                        ir.i64.into(),
                        ir.ptr.into(),
                    ],
                    false,
                );
                for &(a, b) in descs {
                    self.host_call(
                        CTX_WGMMA,
                        ty,
                        &[
                            i32t.const_int(n, false).into(),
                            i32t.const_int(u64::from(f16), false).into(),
                            a.into(),
                            b.into(),
                            io.into(),
                        ],
                    )?;
                }
                (0..acc.len())
                    .map(|i| Ok(ir.b.build_load(ir.f32, at(i)?, "")?.into_float_value()))
                    .collect()
            }
        }
    }

    /// `fence.proxy.async.shared::cta`: this thread's writes to shared memory (plain
    /// stores and `cp.async` copies that have completed) become visible to the
    /// asynchronous proxy that `wgmma` reads shared memory through. Nothing on the host.
    pub fn fence_proxy_async(&self) -> IrResult<()> {
        let ir = self.ir;
        match self.mode {
            Mode::Ptx { .. } => {
                let fty = ir.ctx.void_type().fn_type(&[], false);
                let f = ir.ctx.create_inline_asm(
                    fty,
                    "fence.proxy.async.shared::cta;".into(),
                    "~{memory}".into(),
                    true,
                    false,
                    None,
                    false,
                );
                ir.b.build_indirect_call(fty, f, &[], "")?;
                Ok(())
            }
            Mode::Host => Ok(()),
        }
    }

    /// `cp.async.cg.shared.global` of 16 bytes: from `src` (global memory, 16-byte
    /// aligned) to `dst` (in the block's shared memory, 16-byte aligned; both generic
    /// pointers), of which the first `src_bytes` (an i64 in 0..=16, even) are read and
    /// the rest set to zero. The copy is complete for this thread after the
    /// [`Simt::cp_async_wait`] that leaves its group behind, and for the block after a
    /// barrier that follows that. The simulator reads the source at once, fills the
    /// destination with NaN, and writes the data at the wait that completes the copy
    /// (`arch_runtime::device::sim`): it checks the addresses, the zero fill and the
    /// waits.
    pub fn cp_async16(
        &self,
        dst: PointerValue<'ctx>,
        src: PointerValue<'ctx>,
        src_bytes: IntValue<'ctx>,
    ) -> IrResult<()> {
        let ir = self.ir;
        let i32t = ir.ctx.i32_type();
        match self.mode {
            Mode::Ptx { .. } => {
                let shared = ir.ctx.ptr_type(AddressSpace::from(3u16));
                let global = ir.ctx.ptr_type(AddressSpace::from(1u16));
                let d = ir.b.build_address_space_cast(dst, shared, "")?;
                let s = ir.b.build_address_space_cast(src, global, "")?;
                let n = ir.b.build_int_truncate(src_bytes, i32t, "")?;
                self.void_intrinsic(
                    "llvm.nvvm.cp.async.cg.shared.global.16.s",
                    &[d.into(), s.into(), n.into()],
                )
            }
            Mode::Host => {
                let ty = ir.ctx.void_type().fn_type(
                    &[ir.ptr.into(), ir.ptr.into(), ir.ptr.into(), ir.i64.into()],
                    false,
                );
                self.host_call(
                    CTX_CP_ASYNC,
                    ty,
                    &[dst.into(), src.into(), src_bytes.into()],
                )?;
                Ok(())
            }
        }
    }

    /// `cp.async.commit_group`: this thread's copies issued since the last commit form a
    /// group (possibly empty).
    pub fn cp_async_commit(&self) -> IrResult<()> {
        match self.mode {
            Mode::Ptx { .. } => self.void_intrinsic("llvm.nvvm.cp.async.commit.group", &[]),
            Mode::Host => {
                let ty = self
                    .ir
                    .ctx
                    .void_type()
                    .fn_type(&[self.ir.ptr.into()], false);
                self.host_call(CTX_CP_COMMIT, ty, &[])?;
                Ok(())
            }
        }
    }

    /// `cp.async.wait_group pending`: waits until at most the `pending` latest groups of
    /// this thread are incomplete.
    pub fn cp_async_wait(&self, pending: u64) -> IrResult<()> {
        let ir = self.ir;
        match self.mode {
            Mode::Ptx { .. } => {
                let n = ir.ctx.i32_type().const_int(pending, false);
                self.void_intrinsic("llvm.nvvm.cp.async.wait.group", &[n.into()])
            }
            Mode::Host => {
                let ty = ir
                    .ctx
                    .void_type()
                    .fn_type(&[ir.ptr.into(), ir.i64.into()], false);
                self.host_call(CTX_CP_WAIT, ty, &[ir.int(pending).into()])?;
                Ok(())
            }
        }
    }

    /// `ldmatrix.sync.aligned.m8n8.x4.shared.b16`: four 8 × 8 matrices of 16-bit values
    /// from shared memory, lanes 8i … 8i + 7 giving the rows of matrix i (`row_of(lane)`:
    /// a generic pointer to the row's 16 bytes, 16-byte aligned), and each lane receiving,
    /// of each matrix i, the 32-bit word `lane % 4` of row `lane / 4` — the layout of an
    /// `mma` fragment, for 16-bit pairs and for tf32 words alike. With `trans`
    /// (`.trans`), the transposed matrix: lane L receives the values in column L / 4 of
    /// rows 2·(L % 4) and 2·(L % 4) + 1, the first in the low half — a B fragment of
    /// 16-bit values from a tile stored with k across rows. Every lane of the warp must
    /// call it. The simulator loads those values itself, each from the row its giving
    /// lane gives (`row_of` of that lane), which is what the instruction does.
    pub fn ldmatrix_x4(
        &self,
        lane: IntValue<'ctx>,
        trans: bool,
        row_of: &dyn Fn(IntValue<'ctx>) -> IrResult<PointerValue<'ctx>>,
    ) -> IrResult<[IntValue<'ctx>; 4]> {
        let ir = self.ir;
        let i32t = ir.ctx.i32_type();
        match self.mode {
            Mode::Ptx { .. } => {
                let shared = ir.ctx.ptr_type(AddressSpace::from(3u16));
                let p = ir.b.build_address_space_cast(row_of(lane)?, shared, "")?;
                let name = if trans {
                    "llvm.nvvm.ldmatrix.sync.aligned.m8n8.x4.trans.b16"
                } else {
                    "llvm.nvvm.ldmatrix.sync.aligned.m8n8.x4.b16"
                };
                let decl = inkwell::intrinsics::Intrinsic::find(name)
                    .and_then(|i| i.get_declaration(&ir.module, &[shared.into()]))
                    .ok_or_else(|| IrError(format!("LLVM has no {name}")))?;
                let r = match ir
                    .b
                    .build_call(decl, &[p.into()], "ldm")?
                    .try_as_basic_value()
                {
                    inkwell::values::ValueKind::Basic(v) => v.into_struct_value(),
                    _ => return Err(IrError(format!("{name} returned nothing"))),
                };
                let mut out = [i32t.const_zero(); 4];
                for (i, o) in out.iter_mut().enumerate() {
                    *o = ir.b.build_extract_value(r, i as u32, "")?.into_int_value();
                }
                Ok(out)
            }
            Mode::Host if trans => {
                let i16t = ir.ctx.i16_type();
                let (col, pair) = (
                    ir.b.build_int_unsigned_div(lane, ir.int(4), "")?,
                    ir.b.build_int_unsigned_rem(lane, ir.int(4), "")?,
                );
                let mut out = [i32t.const_zero(); 4];
                for (i, o) in out.iter_mut().enumerate() {
                    let mut word = i32t.const_zero();
                    for half in 0..2u64 {
                        let giver =
                            ir.add(ir.mul(pair, ir.int(2))?, ir.int(8 * i as u64 + half))?;
                        let at =
                            unsafe { ir.b.build_in_bounds_gep(i16t, row_of(giver)?, &[col], "")? };
                        let v = ir.b.build_load(i16t, at, "")?.into_int_value();
                        let v = ir.b.build_int_z_extend(v, i32t, "")?;
                        let v =
                            ir.b.build_left_shift(v, i32t.const_int(16 * half, false), "")?;
                        word = ir.b.build_or(word, v, "")?;
                    }
                    *o = word;
                }
                Ok(out)
            }
            Mode::Host => {
                let (row, word) = (
                    ir.b.build_int_unsigned_div(lane, ir.int(4), "")?,
                    ir.b.build_int_unsigned_rem(lane, ir.int(4), "")?,
                );
                let mut out = [i32t.const_zero(); 4];
                for (i, o) in out.iter_mut().enumerate() {
                    let giver = ir.add(row, ir.int(8 * i as u64))?;
                    let at = unsafe {
                        ir.b.build_in_bounds_gep(i32t, row_of(giver)?, &[word], "")?
                    };
                    *o = ir.b.build_load(i32t, at, "")?.into_int_value();
                }
                Ok(out)
            }
        }
    }

    /// 2^x by `ex2.approx.ftz.f32` (2 ulp; below 2^−126 zero). The simulator takes the
    /// CPU's polynomial e^x of x · ln 2 (it has no special-function unit), which flushes
    /// to zero below e^−87 alike.
    pub fn ex2(&self, x: FloatValue<'ctx>) -> IrResult<FloatValue<'ctx>> {
        let ir = self.ir;
        let m = crate::backend::llvm::math::Math { ir };
        match self.mode {
            Mode::Host => m.exp(ir.b.build_float_mul(x, m.c(std::f64::consts::LN_2), "")?),
            Mode::Ptx { .. } => {
                let name = "llvm.nvvm.ex2.approx.ftz.f";
                let decl = inkwell::intrinsics::Intrinsic::find(name)
                    .and_then(|i| i.get_declaration(&ir.module, &[]))
                    .ok_or_else(|| IrError(format!("LLVM has no {name}")))?;
                match ir.b.build_call(decl, &[x.into()], "")?.try_as_basic_value() {
                    inkwell::values::ValueKind::Basic(v) => Ok(v.into_float_value()),
                    _ => Err(IrError(format!("{name} returned nothing"))),
                }
            }
        }
    }

    /// A call of an intrinsic that returns nothing.
    fn void_intrinsic(
        &self,
        name: &str,
        args: &[inkwell::values::BasicMetadataValueEnum<'ctx>],
    ) -> IrResult<()> {
        let ir = self.ir;
        let decl = inkwell::intrinsics::Intrinsic::find(name)
            .and_then(|i| i.get_declaration(&ir.module, &[]))
            .ok_or_else(|| IrError(format!("LLVM has no {name}")))?;
        ir.b.build_call(decl, args, "")?;
        Ok(())
    }

    /// The block's shared memory of `floats` floats as a generic pointer (`name` names
    /// its PTX variable): a static array up to [`STATIC_SHARED_BYTES`], past it the
    /// launch's dynamic shared memory (`.extern .shared`; the runtime raises the kernel's
    /// limit and passes the size at launch).
    pub fn shared(&self, name: &str, floats: u64) -> IrResult<PointerValue<'ctx>> {
        let ir = self.ir;
        match self.mode {
            Mode::Ptx { .. } => {
                let dynamic = 4 * floats > STATIC_SHARED_BYTES;
                let ty = ir
                    .f32
                    .array_type(if dynamic { 0 } else { floats.max(1) as u32 });
                let g = ir
                    .module
                    .add_global(ty, Some(AddressSpace::from(3u16)), name);
                g.set_alignment(16);
                if dynamic {
                    g.set_linkage(Linkage::External);
                } else {
                    g.set_initializer(&ty.get_undef());
                    g.set_linkage(Linkage::Internal);
                }
                Ok(ir
                    .b
                    .build_address_space_cast(g.as_pointer_value(), ir.ptr, "")?)
            }
            Mode::Host => self.ctx_ptr(CTX_SHARED),
        }
    }
}
