//! The dfdx driver: walks a `TensorCollection`, stages each trainable tensor in a reusable host
//! buffer, runs the shared step, and commits the result with `copy_from`.

use crate::optimizer::{step_entries, Entry};
use crate::{DslOptimizer, Float, OptimError};
use dfdx::nn::tensor_collection::{
    RecursiveWalker, TensorCollection, TensorOptions, TensorVisitor, ViewTensorMut, ViewTensorName,
};
use dfdx::shapes::{HasShape, Shape};
use dfdx::tensor::{Cpu, Gradients, Tensor};
use dfdx::tensor_ops::Device;
use std::collections::BTreeMap;

struct Staged<E> {
    name: String,
    shape: Vec<usize>,
    module: &'static str,
    grad: Vec<E>,
}

/// Collects, for every tensor of a module, its dotted name (as `ViewTensorName` spells it) and
/// the type name of the innermost module holding it — for `module == "..."` routing guards.
struct ModuleTypes<'a> {
    prefix: String,
    module: &'static str,
    out: &'a mut Vec<(String, &'static str)>,
}

/// `dfdx::nn::modules::linear::Linear<2, 3, f32, Cpu>` → `Linear`.
fn short_type_name<T: ?Sized>() -> &'static str {
    let full = std::any::type_name::<T>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base)
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else if name.is_empty() {
        prefix.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

impl<T: TensorCollection<E, D>, E: dfdx::dtypes::Dtype, D: Device<E>>
    dfdx::nn::tensor_collection::ModuleVisitor<T, E, D> for ModuleTypes<'_>
{
    type Err = D::Err;
    type E2 = E;
    type D2 = D;

    fn visit_module<Field, GetRef, GetMut>(
        &mut self,
        name: &str,
        _: GetRef,
        _: GetMut,
    ) -> Result<Option<Field::To<E, D>>, Self::Err>
    where
        GetRef: FnMut(&T) -> &Field,
        GetMut: FnMut(&mut T) -> &mut Field,
        Field: TensorCollection<E, D>,
    {
        let mut inner = ModuleTypes {
            prefix: join(&self.prefix, name),
            module: short_type_name::<Field>(),
            out: self.out,
        };
        Field::iter_tensors(&mut inner)?;
        Ok(None)
    }

    fn visit_tensor<S: Shape, GetRef, GetMut>(
        &mut self,
        name: &str,
        _: GetRef,
        _: GetMut,
        _: TensorOptions<S, E, D>,
    ) -> Result<Option<Tensor<S, E, D>>, Self::Err>
    where
        GetRef: FnMut(&T) -> &Tensor<S, E, D>,
        GetMut: FnMut(&mut T) -> &mut Tensor<S, E, D>,
    {
        self.out.push((join(&self.prefix, name), self.module));
        Ok(None)
    }

    fn visit_scalar<N, GetRef, GetMut>(
        &mut self,
        _: &str,
        _: GetRef,
        _: GetMut,
        _: dfdx::nn::tensor_collection::ScalarOptions<N>,
    ) -> Result<Option<N>, Self::Err>
    where
        N: num_traits::NumCast,
        GetRef: FnMut(&T) -> &N,
        GetMut: FnMut(&mut T) -> &mut N,
    {
        Ok(None)
    }

    fn visit_fields<M: dfdx::nn::tensor_collection::ModuleFields<T, E, D>>(
        &mut self,
        fields: M,
        builder: impl FnOnce(M::Output<E, D>) -> T::To<E, D>,
    ) -> Result<Option<T::To<E, D>>, Self::Err> {
        let options = fields.visit_fields(self)?;
        Ok(M::handle_options(options).map(builder))
    }
}

/// `name → module type` for every tensor of `M`.
pub(crate) fn module_types<E: dfdx::dtypes::Dtype, D: Device<E>, M: TensorCollection<E, D>>(
) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    let mut v = ModuleTypes {
        prefix: String::new(),
        module: short_type_name::<M>(),
        out: &mut out,
    };
    // the walk only reads names and types; it cannot fail
    let _ = M::iter_tensors(&mut v);
    out
}

/// Pass 1: copy every trainable tensor into its scratch buffer and borrow its gradient buffer.
struct Stage<'a, E: Float> {
    types: &'a [(String, &'static str)],
    scratch: &'a mut BTreeMap<String, Vec<E>>,
    grads: &'a mut Gradients<E, Cpu>,
    staged: Vec<Staged<E>>,
}

impl<E: Float> TensorVisitor<E, Cpu> for Stage<'_, E>
where
    Cpu: Device<E>,
{
    type Viewer = (ViewTensorMut, ViewTensorName);
    type Err = dfdx::tensor::CpuError;
    type E2 = E;
    type D2 = Cpu;

    fn visit<S: Shape>(
        &mut self,
        opts: TensorOptions<S, E, Cpu>,
        (t, name): (&mut Tensor<S, E, Cpu>, String),
    ) -> Result<Option<Tensor<S, E, Cpu>>, Self::Err> {
        if !opts.do_gradient_update {
            return Ok(None);
        }
        let shape: Vec<usize> = t.shape().concrete().into_iter().collect();
        let numel: usize = shape.iter().product();
        let buf = self.scratch.entry(name.clone()).or_default();
        buf.resize(numel, E::default());
        t.copy_into(buf);
        let grad = E::take_grad(self.grads, t)?;
        let module = self
            .types
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, m)| *m);
        self.staged.push(Staged {
            name,
            shape,
            module,
            grad,
        });
        Ok(None)
    }
}

/// Pass 2: return the gradient buffers and, when the step succeeded, commit the new values.
struct Commit<'a, E: Float> {
    scratch: &'a BTreeMap<String, Vec<E>>,
    grads: &'a mut Gradients<E, Cpu>,
    staged: BTreeMap<String, Vec<E>>,
    commit: bool,
}

impl<E: Float> TensorVisitor<E, Cpu> for Commit<'_, E>
where
    Cpu: Device<E>,
{
    type Viewer = (ViewTensorMut, ViewTensorName);
    type Err = dfdx::tensor::CpuError;
    type E2 = E;
    type D2 = Cpu;

    fn visit<S: Shape>(
        &mut self,
        opts: TensorOptions<S, E, Cpu>,
        (t, name): (&mut Tensor<S, E, Cpu>, String),
    ) -> Result<Option<Tensor<S, E, Cpu>>, Self::Err> {
        if !opts.do_gradient_update {
            return Ok(None);
        }
        if let Some(grad) = self.staged.remove(&name) {
            E::put_grad(self.grads, t, grad)?;
        }
        if self.commit {
            if let Some(buf) = self.scratch.get(&name) {
                t.copy_from(buf);
            }
        }
        Ok(None)
    }
}

pub(crate) fn update<E, O, M>(
    opt: &mut O,
    model: &mut M,
    grads: &mut Gradients<E, Cpu>,
) -> Result<(), OptimError>
where
    E: Float,
    O: DslOptimizer<E>,
    M: TensorCollection<E, Cpu>,
    Cpu: Device<E>,
{
    let mut scratch = std::mem::take(&mut opt.opt_state_mut().scratch);
    let types = module_types::<E, Cpu, M>();
    let mut stage = Stage {
        types: &types,
        scratch: &mut scratch,
        grads,
        staged: Vec::new(),
    };
    let walked = M::iter_tensors(&mut RecursiveWalker {
        m: (&mut *model, String::new()),
        f: &mut stage,
    });
    let staged = std::mem::take(&mut stage.staged);

    let result = match walked {
        Err(e) => Err(OptimError::Device(format!("{e:?}"))),
        Ok(_) => {
            // Temporarily move the scratch buffers out so `step_entries` can borrow them mutably
            // alongside the optimizer.
            let mut bufs: Vec<(String, Vec<E>)> = Vec::with_capacity(staged.len());
            for s in &staged {
                let buf = scratch.remove(&s.name).unwrap_or_default();
                bufs.push((s.name.clone(), buf));
            }
            let entries: Vec<Entry<'_, E>> = staged
                .iter()
                .zip(bufs.iter_mut())
                .map(|(s, (_, buf))| Entry {
                    name: &s.name,
                    shape: &s.shape,
                    module: s.module,
                    param: buf.as_mut_slice(),
                    grad: &s.grad,
                })
                .collect();
            let r = step_entries(opt, entries);
            scratch.extend(bufs);
            r
        }
    };

    let mut commit = Commit {
        scratch: &scratch,
        grads,
        staged: staged.into_iter().map(|s| (s.name, s.grad)).collect(),
        commit: result.is_ok(),
    };
    let restored = M::iter_tensors(&mut RecursiveWalker {
        m: (&mut *model, String::new()),
        f: &mut commit,
    });
    opt.opt_state_mut().scratch = scratch;
    result?;
    restored.map_err(|e| OptimError::Device(format!("{e:?}")))?;
    Ok(())
}

/// Swaps each trainable tensor with its state buffer `slot` (see
/// `DslOptimizer::swap_state_with_model`).
struct Swap<'a, E: Float> {
    buffers: Vec<(String, &'a mut Vec<E>)>,
    swapped: usize,
}

impl<E: Float> TensorVisitor<E, Cpu> for Swap<'_, E>
where
    Cpu: Device<E>,
{
    type Viewer = (ViewTensorMut, ViewTensorName);
    type Err = dfdx::tensor::CpuError;
    type E2 = E;
    type D2 = Cpu;

    fn visit<S: Shape>(
        &mut self,
        opts: TensorOptions<S, E, Cpu>,
        (t, name): (&mut Tensor<S, E, Cpu>, String),
    ) -> Result<Option<Tensor<S, E, Cpu>>, Self::Err> {
        if !opts.do_gradient_update {
            return Ok(None);
        }
        if let Some((_, buf)) = self.buffers.iter_mut().find(|(n, _)| *n == name) {
            let numel: usize = t.shape().concrete().into_iter().product();
            if buf.len() == numel {
                let mut current = vec![E::default(); numel];
                t.copy_into(&mut current);
                t.copy_from(buf);
                **buf = current;
                self.swapped += 1;
            }
        }
        Ok(None)
    }
}

pub(crate) fn swap_state<E, O, M>(
    opt: &mut O,
    model: &mut M,
    slot: &str,
) -> Result<usize, OptimError>
where
    E: Float,
    O: DslOptimizer<E>,
    M: TensorCollection<E, Cpu>,
    Cpu: Device<E>,
{
    let mut index: Vec<(String, usize)> = Vec::new();
    for (name, ps) in &opt.opt_state().params {
        if let Some(k) = O::state_names(ps.rule).iter().position(|s| *s == slot) {
            index.push((name.clone(), k));
        }
    }
    let state = opt.opt_state_mut();
    let mut buffers = Vec::new();
    for (name, ps) in state.params.iter_mut() {
        if let Some((_, k)) = index.iter().find(|(n, _)| n == name) {
            if let Some(b) = ps.buffers.get_mut(*k) {
                buffers.push((name.clone(), b));
            }
        }
    }
    let mut v = Swap {
        buffers,
        swapped: 0,
    };
    M::iter_tensors(&mut RecursiveWalker {
        m: (&mut *model, String::new()),
        f: &mut v,
    })
    .map_err(|e| OptimError::Device(format!("{e:?}")))?;
    Ok(v.swapped)
}
