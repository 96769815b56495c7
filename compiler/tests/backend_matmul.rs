//! The generated CPU matmul against a naive f64 reference: seeded inputs at odd sizes
//! and mixed shapes (edges of every tile and cache block), for every vector set this
//! machine runs, on one and two threads; plus the errors bad shapes must produce.

use archc::backend::cpu::{
    sgemm, sgemm_assembly, sgemm_llvm_ir, CpuTarget, SgemmConfig, SgemmKernel, SgemmTiles,
    VectorIsa,
};
use archc::backend::BackendError;

/// xorshift64*, uniform in [-1, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let u = (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u32 << 24) as f32;
        2.0 * u - 1.0
    }

    fn matrix(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.next()).collect()
    }
}

/// Checks `c` against `a·b` in f64. The error of an f32 dot product scales with
/// Σ|a·b|, not with the (possibly cancelled) result, so that is the relative measure.
fn check(a: &[f32], b: &[f32], c: &[f32], m: usize, n: usize, k: usize, what: &str) {
    check_rows(a, b, c, m, n, k, 0..m, what)
}

/// [`check`] on the rows in `rows` only (every column of each).
#[allow(clippy::too_many_arguments)]
fn check_rows(
    a: &[f32],
    b: &[f32],
    c: &[f32],
    m: usize,
    n: usize,
    k: usize,
    rows: impl IntoIterator<Item = usize>,
    what: &str,
) {
    let mut exact = vec![0.0f64; n];
    let mut scale = vec![0.0f64; n];
    for i in rows {
        exact.fill(0.0);
        scale.fill(0.0);
        for p in 0..k {
            let x = a[i * k + p] as f64;
            for (j, bv) in b[p * n..(p + 1) * n].iter().enumerate() {
                exact[j] += x * *bv as f64;
                scale[j] += (x * *bv as f64).abs();
            }
        }
        for j in 0..n {
            let err = (c[i * n + j] as f64 - exact[j]).abs() / scale[j].max(f64::MIN_POSITIVE);
            assert!(
                err <= 1e-5,
                "{what}: {m}×{n}×{k}, C[{i}][{j}] = {} but exact is {} (relative error {err:e})",
                c[i * n + j],
                exact[j]
            );
        }
    }
}

/// Runs one shape through `kernel`, starting from a C full of garbage (the kernel must
/// overwrite, not accumulate).
fn run_shape(kernel: &SgemmKernel, rng: &mut Rng, m: usize, n: usize, k: usize, what: &str) {
    let (a, b) = (rng.matrix(m * k), rng.matrix(k * n));
    let mut c = vec![f32::NAN; m * n];
    kernel
        .run(&a, &b, &mut c, m, n, k)
        .unwrap_or_else(|e| panic!("{what}: {m}×{n}×{k}: {e}"));
    check(&a, &b, &c, m, n, k, what);
}

/// Shapes that hit every edge: sizes below, at and just past MR (6), NR (16 or 32),
/// KC (256), MC (144), the unroll of 4, and 783 in each position.
const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (3, 3, 3),
    (7, 7, 7),
    (50, 50, 50),
    (1, 50, 7),
    (50, 1, 3),
    (7, 3, 50),
    (6, 16, 4),
    (6, 32, 5),
    (12, 64, 8),
    (13, 33, 257),
    (145, 17, 300),
    (783, 50, 7),
    (50, 783, 3),
    (7, 3, 783),
    (3, 4100, 9),
    (150, 520, 513),
];

fn kernels_that_run_here() -> Vec<(String, SgemmKernel)> {
    let mut out = Vec::new();
    for isa in VectorIsa::ALL.into_iter().filter(|isa| isa.runs_here()) {
        for threads in [1, 2] {
            let cfg = SgemmConfig {
                target: CpuTarget::generic(isa),
                threads,
            };
            let kernel = SgemmKernel::compile(&cfg).unwrap_or_else(|e| panic!("{isa}: {e}"));
            out.push((format!("{isa}, {threads} thread(s)"), kernel));
        }
    }
    out
}

#[test]
fn every_vector_set_matches_the_reference_at_odd_shapes() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for (what, kernel) in kernels_that_run_here() {
        for &(m, n, k) in SHAPES {
            run_shape(&kernel, &mut rng, m, n, k, &what);
        }
    }
}

#[test]
fn host_kernel_matches_the_reference_at_783_cubed() {
    let mut rng = Rng(0x0783_0783_0783_0783);
    let cfg = SgemmConfig::host().expect("host target");
    let kernel = SgemmKernel::compile(&cfg).expect("host kernel");
    let n = 783;
    let (a, b) = (rng.matrix(n * n), rng.matrix(n * n));
    let mut c = vec![f32::NAN; n * n];
    kernel.run(&a, &b, &mut c, n, n, n).expect("783³");
    // Every column of the rows around each MR panel and MC block edge, and the last
    // partial panel; the f64 reference of all 783 rows is too slow in a debug build.
    let edges = (0..n).filter(|i| i % 144 < 7 || i % 144 > 137 || *i >= 774 || i % 41 == 0);
    check_rows(&a, &b, &c, n, n, n, edges, "host 783³");
}

#[test]
fn the_convenience_entry_point_uses_the_host_kernel() {
    let (m, n, k) = (5, 7, 3);
    let mut rng = Rng(42);
    let (a, b) = (rng.matrix(m * k), rng.matrix(k * n));
    let mut c = vec![0.0; m * n];
    sgemm(&a, &b, &mut c, m, n, k).expect("sgemm");
    check(&a, &b, &c, m, n, k, "sgemm()");
}

#[test]
fn a_kernel_is_reused_across_calls_and_threads() {
    let cfg = SgemmConfig {
        target: CpuTarget::generic(VectorIsa::Sse2),
        threads: 2,
    };
    let kernel = SgemmKernel::compile(&cfg).expect("sse2 kernel");
    std::thread::scope(|s| {
        for seed in 1..=3u64 {
            let kernel = &kernel;
            s.spawn(move || {
                let mut rng = Rng(seed * 7919);
                for _ in 0..3 {
                    run_shape(kernel, &mut rng, 64, 96, 40, "shared kernel");
                }
            });
        }
    });
}

#[test]
fn zero_sized_shapes_are_handled() {
    let mut c = vec![1.0f32; 6];
    sgemm(&[], &[], &mut c, 2, 3, 0).expect("k = 0");
    assert_eq!(c, vec![0.0; 6], "k = 0 means C = 0");
    sgemm(&[], &[1.0; 3], &mut [], 0, 3, 1).expect("m = 0");
    sgemm(&[1.0; 2], &[], &mut [], 2, 0, 1).expect("n = 0");
}

#[test]
fn wrong_buffer_lengths_are_errors_and_leave_c_alone() {
    let mut c = vec![7.0f32; 4];
    let err = sgemm(&[1.0; 5], &[1.0; 6], &mut c, 2, 2, 3).unwrap_err();
    assert_eq!(
        err,
        BackendError::Shape("a has 5 elements; 2×3 needs 6".into())
    );
    let err = sgemm(&[1.0; 6], &[1.0; 6], &mut c[..3], 2, 2, 3).unwrap_err();
    assert_eq!(
        err,
        BackendError::Shape("c has 3 elements; 2×2 needs 4".into())
    );
    let err = sgemm(&[], &[], &mut c, usize::MAX, 2, 2).unwrap_err();
    assert!(
        matches!(err, BackendError::Shape(ref s) if s.contains("overflow")),
        "{err}"
    );
    assert_eq!(c, vec![7.0; 4]);
}

#[test]
fn a_vector_set_the_cpu_lacks_is_an_error_but_still_compiles_to_assembly() {
    let target = CpuTarget::generic(VectorIsa::Avx512);
    if !VectorIsa::Avx512.runs_here() {
        let err = SgemmKernel::compile(&SgemmConfig {
            target: target.clone(),
            threads: 1,
        })
        .unwrap_err();
        assert_eq!(
            err,
            BackendError::Unsupported("this CPU cannot run avx512 code".into())
        );
    }
    let asm = sgemm_assembly(&target).expect("avx512 assembly");
    assert!(
        asm.contains("vfmadd231ps") && asm.contains("zmm"),
        "AVX-512 code should use zmm FMAs"
    );
}

#[test]
fn the_microkernel_is_register_tiled_vector_fmas() {
    for isa in VectorIsa::ALL {
        let t = SgemmTiles::for_isa(isa);
        let ir = sgemm_llvm_ir(&CpuTarget::generic(isa), false).expect("IR");
        let fma = format!("call <{} x float> @llvm.fmuladd.v{}f32", t.lanes, t.lanes);
        // MR×NR/lanes multiply-adds per k step, in the 4× unrolled loop and the remainder.
        let per_step = (t.mr * t.nr / t.lanes) as usize;
        assert_eq!(ir.matches(&fma).count(), per_step * 5, "{isa}: {fma}");
        // After O3 the accumulators must still be whole vectors (no scalarisation).
        let opt = sgemm_llvm_ir(&CpuTarget::generic(isa), true).expect("optimised IR");
        assert!(
            opt.contains(&fma),
            "{isa}: optimised IR lost the vector FMAs"
        );
    }
    let asm = sgemm_assembly(&CpuTarget::generic(VectorIsa::Avx2)).expect("avx2 assembly");
    assert!(
        asm.contains("vfmadd231ps") && asm.contains("ymm"),
        "AVX2 code should use ymm FMAs"
    );
}

/// Architecture invariant: LLVM stays behind the backend boundary.
#[test]
fn only_the_backend_imports_inkwell() {
    fn visit(dir: &std::path::Path, offenders: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("read compiler/src").flatten() {
            let path = entry.path();
            if path.is_dir() {
                if !path.ends_with("backend") {
                    visit(&path, offenders);
                }
            } else if path.extension().is_some_and(|e| e == "rs")
                && std::fs::read_to_string(&path).is_ok_and(|s| s.contains("inkwell"))
            {
                offenders.push(path.display().to_string());
            }
        }
    }
    let mut offenders = Vec::new();
    visit(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut offenders,
    );
    assert!(
        offenders.is_empty(),
        "inkwell used outside compiler/src/backend/: {offenders:?}"
    );
}
