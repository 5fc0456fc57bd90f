//! [`HostBackend`]: a device emulated on the host, for testing the device step driver on any
//! machine.
//!
//! Buffers are `Vec`s and a stage runs its Rust twin row by row, each row on its own slices of
//! the tensor, with the row's reduction totals starting from zero: with rows of
//! [`CHUNK`] elements a tensor's totals are added exactly as the CPU
//! executor adds its chunks, so the emulated device path is bit for bit the CPU path. What it
//! checks: the driver (validation, state creation on the device, the multi-tensor rows, per-step
//! scalars, reductions, barriers through the link, the commit), the device state store and
//! checkpoints across devices. What it cannot check: the CUDA sources themselves (see
//! `scripts/check-cuda-sources.sh` and `tests/cuda_gpu.rs`).
//!
//! With [`HostBackend::with_blas`] it also offers the GEMM family (faer), so that
//! `orthogonalize` takes the device route ([`super::ns`]) instead of the host fallback.

use super::backend::{Backend, Row, StageKernel, StageTensor};
use super::ns::{GemmShape, MatOps};
use crate::error::OptimError;
use crate::kernel::{StateRefs, CHUNK};
use crate::Float;
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};

/// A device emulated on the host (see the [module docs](self)).
#[derive(Debug, Clone, Copy, Default)]
pub struct HostBackend {
    blas: bool,
    chunk: usize,
}

impl HostBackend {
    /// The emulated device, without GEMMs (every matrix primitive takes the host fallback),
    /// with rows of [`CHUNK`] elements.
    pub fn new() -> Self {
        HostBackend {
            blas: false,
            chunk: CHUNK,
        }
    }

    /// With the GEMM family: `orthogonalize` runs through [`super::ns::orthogonalize_on`].
    pub fn with_blas(mut self) -> Self {
        self.blas = true;
        self
    }

    /// With rows of `chunk` elements (at least 1). Rows other than [`CHUNK`] change the order
    /// in which reduction totals are added, so results may differ from the CPU path in the last
    /// bit of reduction-dependent scalars.
    pub fn with_chunk(mut self, chunk: usize) -> Self {
        self.chunk = chunk.max(1);
        self
    }
}

fn mismatch(detail: String) -> OptimError {
    OptimError::ShapeMismatch {
        param: "(device buffer)".into(),
        detail,
    }
}

impl<E: Float> Backend<E> for HostBackend {
    type Buf = Vec<E>;

    fn name(&self) -> String {
        "host (emulated device)".into()
    }
    fn empty(&self) -> Result<Vec<E>, OptimError> {
        Ok(Vec::new())
    }
    fn len(buf: &Vec<E>) -> usize {
        buf.len()
    }
    fn alloc(&self, n: usize, fill: E) -> Result<Vec<E>, OptimError> {
        Ok(vec![fill; n])
    }
    fn upload(&self, data: &[E]) -> Result<Vec<E>, OptimError> {
        Ok(data.to_vec())
    }
    fn write(&self, dst: &mut Vec<E>, data: &[E]) -> Result<(), OptimError> {
        if dst.len() != data.len() {
            return Err(mismatch(format!(
                "writing {} elements into a buffer of {}",
                data.len(),
                dst.len()
            )));
        }
        dst.copy_from_slice(data);
        Ok(())
    }
    fn read(&self, src: &Vec<E>) -> Result<Vec<E>, OptimError> {
        Ok(src.clone())
    }
    fn duplicate(&self, src: &Vec<E>) -> Result<Vec<E>, OptimError> {
        Ok(src.clone())
    }
    fn broadcast(
        &self,
        line: &[E],
        dst: &mut Vec<E>,
        row: bool,
        cols: usize,
    ) -> Result<(), OptimError> {
        crate::matrix::broadcast(line, dst, row, cols);
        Ok(())
    }
    fn all_finite(&self, bufs: &[&Vec<E>]) -> Result<Vec<bool>, OptimError> {
        Ok(bufs
            .iter()
            .map(|b| crate::optimizer::all_finite(b))
            .collect())
    }
    fn chunk_len(&self) -> usize {
        self.chunk.max(1)
    }
    fn run_stage(
        &self,
        stage: &StageKernel<E>,
        rows: &[Row],
        tensors: &mut [StageTensor<'_, Vec<E>, E>],
    ) -> Result<Vec<f64>, OptimError> {
        let nred = stage.reductions;
        let mut out = vec![0.0f64; rows.len() * nred];
        for (r, row) in rows.iter().enumerate() {
            let t = tensors
                .get_mut(row.tensor)
                .ok_or_else(|| mismatch(format!("row of tensor {} out of range", row.tensor)))?;
            let end = row.start + row.len;
            let short = t.param.len() < end
                || t.grad.len() < end
                || t.bufs.iter().any(|b| b.len() < end)
                || t.bufs.len() != stage.n_bufs;
            if short {
                return Err(mismatch(format!(
                    "a stream is shorter than row {}..{end} or the stage takes {} streams, not {}",
                    row.start,
                    stage.n_bufs,
                    t.bufs.len()
                )));
            }
            let mut bufs: StateRefs<'_, E> =
                t.bufs.iter_mut().map(|b| &mut b[row.start..end]).collect();
            (stage.rust)(
                t.scalars,
                &mut t.param[row.start..end],
                &t.grad[row.start..end],
                &mut bufs,
                &mut out[r * nred..(r + 1) * nred],
            );
        }
        Ok(out)
    }
    fn blas(&self) -> Option<&dyn MatOps<E, Vec<E>>> {
        if self.blas {
            Some(self)
        } else {
            None
        }
    }
}

impl<E: Float> MatOps<E, Vec<E>> for HostBackend {
    fn gemm(
        &self,
        s: GemmShape,
        alpha: E,
        a: &Vec<E>,
        b: &Vec<E>,
        beta: E,
        c: &mut Vec<E>,
    ) -> Result<(), OptimError> {
        let (m, n) = (s.m, s.n);
        let [(ar, ac), (br, bc)] = s.stored();
        let [na, nb, nc] = s.extents();
        if a.len() < na || b.len() < nb || c.len() < nc {
            return Err(mismatch("gemm operand too short".into()));
        }
        let av = MatRef::from_column_major_slice_with_stride(&a[..], ar, ac, s.lda);
        let bv = MatRef::from_column_major_slice_with_stride(&b[..], br, bc, s.ldb);
        let av = if s.ta { av.transpose() } else { av };
        let bv = if s.tb { bv.transpose() } else { bv };
        let mut cv = MatMut::from_column_major_slice_with_stride_mut(&mut c[..], m, n, s.ldc);
        for j in 0..n {
            for i in 0..m {
                cv[(i, j)] = if beta == E::zero() {
                    E::zero()
                } else {
                    beta * cv[(i, j)]
                };
            }
        }
        matmul(cv.as_mut(), Accum::Add, av, bv, alpha, Par::Seq);
        Ok(())
    }
    fn absmax(&self, x: &Vec<E>, n: usize) -> Result<(f64, bool), OptimError> {
        let mut amax = 0.0f64;
        let mut finite = true;
        for v in &x[..n.min(x.len())] {
            let v = v.as_f64();
            finite &= v.is_finite();
            amax = amax.max(v.abs());
        }
        Ok((amax, finite))
    }
    fn sumsq_scaled(&self, x: &Vec<E>, n: usize, scale: f64) -> Result<f64, OptimError> {
        Ok(x[..n.min(x.len())]
            .iter()
            .map(|&v| (v.as_f64() / scale).powi(2))
            .sum())
    }
    fn normalize(
        &self,
        x: &Vec<E>,
        dst: &mut Vec<E>,
        n: usize,
        a: f64,
        d: f64,
    ) -> Result<(), OptimError> {
        for (o, &v) in dst.iter_mut().zip(x).take(n) {
            *o = E::of_f64(v.as_f64() / a / d);
        }
        Ok(())
    }
    fn copy(&self, src: &Vec<E>, dst: &mut Vec<E>, n: usize) -> Result<(), OptimError> {
        let n = n.min(src.len()).min(dst.len());
        dst[..n].copy_from_slice(&src[..n]);
        Ok(())
    }
    fn fill(&self, dst: &mut Vec<E>, n: usize, v: E) -> Result<(), OptimError> {
        let n = n.min(dst.len());
        dst[..n].fill(v);
        Ok(())
    }
    fn scratch(&self, n: usize) -> Result<Vec<E>, OptimError> {
        Ok(vec![E::zero(); n])
    }
    fn len_of(&self, b: &Vec<E>) -> usize {
        b.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::ns::orthogonalize_on;
    use crate::matrix::{orthogonalize, MatInOut, OrthogonalizeConfig};

    fn rand(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
            })
            .collect()
    }

    /// Asserts that the device form of Newton–Schulz ([`orthogonalize_on`] on the host
    /// backend) agrees with the host primitive ([`orthogonalize`] with schedule `coeffs`) on the
    /// `rows × cols` matrix `x`, element by element within `tol` (compared in `E`).
    #[track_caller]
    fn assert_device_ns_matches<E: Float>(
        x: &[E],
        (rows, cols): (usize, usize),
        cfg: &OrthogonalizeConfig,
        coeffs: &[[f64; 3]],
        tol: f64,
    ) {
        let mut want = vec![E::of_f64(0.0); x.len()];
        let m = MatInOut::new(x, &mut want, rows, cols).unwrap();
        orthogonalize(m, cfg.steps, coeffs, cfg.eps);
        let mut got = vec![E::of_f64(0.0); x.len()];
        let x = x.to_vec();
        orthogonalize_on(&HostBackend::new(), &x, &mut got, rows, cols, cfg).unwrap();
        for (&g, &w) in got.iter().zip(&want) {
            let gap = num_traits::Float::abs(g - w).as_f64();
            assert!(gap <= tol, "{rows}x{cols} {}: {g} vs {w}", E::NAME);
        }
    }

    #[test]
    fn gemm_matches_a_hand_computed_product() {
        // A = [[1, 2], [3, 4]] (column-major [1, 3, 2, 4]), B = I, C = 10: C = 2 A^T B + 1 C
        let a = vec![1.0f64, 3.0, 2.0, 4.0];
        let b = vec![1.0f64, 0.0, 0.0, 1.0];
        let mut c = vec![10.0f64; 4];
        let h = HostBackend::new();
        let s = GemmShape {
            ta: true,
            tb: false,
            m: 2,
            n: 2,
            k: 2,
            lda: 2,
            ldb: 2,
            ldc: 2,
        };
        h.gemm(s, 2.0, &a, &b, 1.0, &mut c).unwrap();
        // A^T = [[1, 3], [2, 4]] → column-major [1, 2, 3, 4]; 2 A^T + 10
        assert_eq!(c, [12.0, 14.0, 16.0, 18.0]);
    }

    /// The device form of Newton–Schulz (no transposition, GEMMs in the input's layout) agrees
    /// with the host primitive for wide, tall and square matrices, in f64 to 1e-12 and in f32
    /// to a few ulp of the output's scale.
    #[test]
    fn device_newton_schulz_follows_a_per_iteration_schedule() {
        // Polar Express (8 triples) run for 10 steps: the last triple repeats, as on the host
        let cfg = OrthogonalizeConfig {
            coeffs: Some(crate::matrix::NS_POLAR_EXPRESS),
            steps: 10,
            ..OrthogonalizeConfig::default()
        };
        for (rows, cols) in [(6usize, 10usize), (10, 6), (7, 7)] {
            let x = rand(rows * cols, (rows * 17 + cols) as u64);
            let schedule = crate::matrix::NS_POLAR_EXPRESS;
            assert_device_ns_matches(&x, (rows, cols), &cfg, schedule, 1e-12);
        }
    }

    #[test]
    fn device_newton_schulz_matches_the_host_primitive() {
        let cfg = OrthogonalizeConfig::default();
        let fixed = [[cfg.a, cfg.b, cfg.c]];
        for (rows, cols) in [(6usize, 10usize), (10, 6), (7, 7), (1, 5), (5, 1)] {
            let x = rand(rows * cols, (rows * 31 + cols) as u64);
            assert_device_ns_matches(&x, (rows, cols), &cfg, &fixed, 1e-12);
            let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            assert_device_ns_matches(&x32, (rows, cols), &cfg, &fixed, 1e-5);
        }
    }

    #[test]
    fn device_newton_schulz_edge_inputs() {
        let cfg = OrthogonalizeConfig::default();
        let h = HostBackend::new();
        let mut out = vec![7.0f32; 6];
        orthogonalize_on(&h, &vec![0.0f32; 6], &mut out, 2, 3, &cfg).unwrap();
        assert_eq!(out, [0.0; 6], "a zero input gives a zero output");
        let mut x = vec![1.0f32; 6];
        x[4] = f32::INFINITY;
        orthogonalize_on(&h, &x, &mut out, 2, 3, &cfg).unwrap();
        assert!(
            out.iter().all(|v| v.is_nan()),
            "a non-finite input gives NaN"
        );
        let mut out = vec![7.0f32; 6];
        orthogonalize_on(&h, &vec![1.0f32; 5], &mut out, 2, 3, &cfg).unwrap();
        assert_eq!(out, [7.0; 6], "a short input leaves the output alone");
    }
}
