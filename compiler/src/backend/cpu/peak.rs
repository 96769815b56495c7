//! A generated FMA-throughput probe → the machine's measured f32 peak (GFLOP/s), the
//! floor that matmul results are reported against (DESIGN §8: FLOPs over FMA rate).
//!
//! `float archc_fma_peak(i64 iters)` runs `iters` rounds of independent vector
//! multiply-adds on enough accumulators to cover FMA latency × ports, then reduces them
//! so that none of the work can be removed.

use super::codegen::{self, SharedLibrary};
use super::ir::{Ir, IrResult, WholeSteps};
use super::target::CpuTarget;
use crate::backend::BackendError;
use inkwell::context::Context;
use inkwell::targets::FileType;
use inkwell::values::{BasicValueEnum, FunctionValue};
use std::time::Instant;

const PEAK_SYMBOL: &str = "archc_fma_peak";

type PeakFn = unsafe extern "C" fn(i64) -> f32;

/// The loaded probe for one target.
pub struct FmaProbe {
    func: PeakFn,
    /// Independent accumulator vectors per round.
    chains: u32,
    lanes: u32,
    _library: SharedLibrary,
}

impl FmaProbe {
    pub fn compile(target: &CpuTarget) -> Result<FmaProbe, BackendError> {
        if !target.isa.runs_here() {
            return Err(BackendError::Unsupported(format!(
                "this CPU cannot run {} code",
                target.isa
            )));
        }
        let lanes = target.isa.f32_lanes();
        // All registers but the two multiplicands and a spare; at least 8 chains hide a
        // 4-cycle FMA on 2 ports.
        let chains = target.isa.vector_registers() - 4;
        let ctx = Context::create();
        let ir = Ir::new(&ctx, "archc_fma_peak");
        emit_probe(&ir, lanes, chains)?;
        let tm = codegen::target_machine(target)?;
        codegen::optimize(&ir.module, &tm)?;
        let library =
            SharedLibrary::link_and_load(&codegen::emit(&ir.module, &tm, FileType::Object)?)?;
        let symbol = library.symbol(PEAK_SYMBOL)?;
        // SAFETY: emit_probe defined the symbol with this signature; `library` outlives it.
        let func: PeakFn =
            unsafe { std::mem::transmute::<*const std::ffi::c_void, PeakFn>(symbol) };
        Ok(FmaProbe {
            func,
            chains,
            lanes,
            _library: library,
        })
    }

    /// Floating-point operations (a multiply-add counts two) in `iters` rounds.
    pub fn flops(&self, iters: u64) -> f64 {
        iters as f64 * self.chains as f64 * self.lanes as f64 * 2.0
    }

    /// Runs `iters` rounds on the calling thread.
    pub fn run(&self, iters: u64) -> f32 {
        // SAFETY: the probe only touches registers; any iteration count is valid.
        unsafe { (self.func)(iters.min(i64::MAX as u64) as i64) }
    }

    /// GFLOP/s with `threads` threads running the probe at once: the median of `reps`
    /// runs of `iters` rounds each.
    pub fn measure_gflops(&self, threads: usize, iters: u64, reps: usize) -> f64 {
        let threads = threads.max(1);
        let mut rates: Vec<f64> = (0..reps.max(1))
            .map(|_| {
                let start = Instant::now();
                std::thread::scope(|s| {
                    for _ in 0..threads {
                        s.spawn(|| std::hint::black_box(self.run(iters)));
                    }
                });
                self.flops(iters) * threads as f64 / start.elapsed().as_secs_f64() / 1e9
            })
            .collect();
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    }
}

fn emit_probe<'ctx>(ir: &Ir<'ctx>, lanes: u32, chains: u32) -> IrResult<FunctionValue<'ctx>> {
    let f = ir
        .module
        .add_function(PEAK_SYMBOL, ir.f32.fn_type(&[ir.i64.into()], false), None);
    ir.add_fn_attrs(f, &[]);
    ir.b.position_at_end(ir.ctx.append_basic_block(f, "entry"));
    let iters = ir.param_int(f, 0)?;
    let vt = ir.f32.vec_type(lanes);
    let splat = |x: f64| ir.splat(vt, ir.f32.const_float(x).into());
    // acc ← acc·x + y converges to y/(1−x) = 1: values stay normal for any iteration count.
    let (x, y) = (splat(0.999)?, splat(0.001)?);
    let init: Vec<BasicValueEnum<'ctx>> = (0..chains)
        .map(|i| splat(1.0 + i as f64 / 64.0).map(Into::into))
        .collect::<IrResult<_>>()?;
    let (_, acc) = ir.carried_loop(
        f,
        "round",
        WholeSteps {
            start: ir.int(0),
            limit: iters,
            step: 1,
        },
        &init,
        |_, acc| {
            acc.iter()
                .map(|a| ir.fmuladd(a.into_vector_value(), x, y).map(Into::into))
                .collect()
        },
    )?;
    let mut sum = acc[0].into_vector_value();
    for a in &acc[1..] {
        sum = ir.b.build_float_add(sum, a.into_vector_value(), "")?;
    }
    let mut total =
        ir.b.build_extract_element(sum, ir.int(0), "")?
            .into_float_value();
    for l in 1..lanes {
        let lane =
            ir.b.build_extract_element(sum, ir.int(l as u64), "")?
                .into_float_value();
        total = ir.b.build_float_add(total, lane, "")?;
    }
    ir.b.build_return(Some(&total))?;
    Ok(f)
}
