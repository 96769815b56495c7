//! The host simulator for tests: a program's thread programs lowered for this CPU
//! ([`Mode::Host`](super::Mode)) and run by the runtime's simulator
//! (`arch_runtime::device::sim`: one OS thread per GPU thread, real barriers and warp
//! shuffles) over host buffers, with no package in between.

use super::{lower_sim_tiled, Grid, KernelLaunch, Mode, Tiling};
use crate::backend::cpu::SharedLibrary;
use crate::kernel::{BufId, Program};
use arch_runtime::device::sim::{self, SimKernel, SimLaunch};
use std::ffi::c_void;

/// A buffer of the simulated device.
#[derive(Clone, Debug, PartialEq)]
pub enum SimData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl SimData {
    fn ptr(&mut self) -> *mut c_void {
        match self {
            SimData::F32(v) => v.as_mut_ptr().cast(),
            SimData::I64(v) => v.as_mut_ptr().cast(),
        }
    }
}

/// A program's thread programs, loaded for simulation.
pub struct Simulator {
    fns: Vec<SimKernel>,
    launches: Vec<KernelLaunch>,
    args: Vec<Vec<BufId>>,
    threads: u64,
    _lib: SharedLibrary,
}

impl Simulator {
    /// Lowers `prog` for the host simulator and loads it.
    pub fn new(prog: &Program) -> Result<Simulator, String> {
        Simulator::tiled(prog, Tiling::for_mode(Mode::Host))
    }

    /// [`Simulator::new`] with the matmuls tiled as `tiling` (a GPU's).
    pub fn tiled(prog: &Program, tiling: Tiling) -> Result<Simulator, String> {
        let lowered = lower_sim_tiled(prog, tiling).map_err(|e| e.to_string())?;
        let lib = SharedLibrary::link_and_load(&lowered.object).map_err(|e| e.to_string())?;
        let mut fns = Vec::new();
        for l in &lowered.kernels {
            let p = lib.symbol(&l.symbol).map_err(|e| e.to_string())?;
            // SAFETY: `Mode::Host` kernels have exactly this signature.
            fns.push(unsafe { std::mem::transmute::<*const c_void, SimKernel>(p) });
        }
        Ok(Simulator {
            fns,
            launches: lowered.kernels,
            args: prog.kernels.iter().map(|k| k.buffers()).collect(),
            threads: lowered.threads,
            _lib: lib,
        })
    }

    /// Runs every kernel in order over `bufs` (one per buffer of the program, sized by
    /// the caller for `dims`), each with the grid a one-SM GPU would get.
    pub fn run(&self, dims: &[i64], bufs: &mut [SimData]) -> Result<(), String> {
        let ptrs: Vec<*mut c_void> = bufs.iter_mut().map(SimData::ptr).collect();
        let mut tables: Vec<Vec<*mut c_void>> = Vec::new();
        for args in &self.args {
            let t = args
                .iter()
                .map(|&b| {
                    ptrs.get(b)
                        .copied()
                        .ok_or_else(|| format!("no buffer b{b}"))
                })
                .collect::<Result<Vec<_>, String>>()?;
            tables.push(t);
        }
        let launches: Vec<SimLaunch> = self
            .fns
            .iter()
            .zip(&self.launches)
            .zip(&tables)
            .map(|((&f, l), table)| SimLaunch {
                f,
                grid: match l.grid {
                    Grid::PerSm(n) => n as i64,
                    Grid::One => 1,
                },
                table: table.as_ptr(),
                dims: dims.as_ptr(),
            })
            .collect();
        let floats = self
            .launches
            .iter()
            .map(|l| l.shared_bytes / 4)
            .max()
            .unwrap_or(0);
        // SAFETY: the caller sized every buffer for `dims`; the kernels are thread
        // programs for `self.threads` threads.
        unsafe { sim::run(self.threads as usize, floats as usize, &launches) };
        Ok(())
    }
}
