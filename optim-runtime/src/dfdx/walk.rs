//! The one walk over a dfdx module's tensors that every dfdx feature of the runtime uses (the
//! step driver, [`WeightEma`](crate::ema::WeightEma), [`GradAccumulator`](crate::accumulate::GradAccumulator)).
//!
//! dfdx 0.13 reaches tensors through `TensorCollection::iter_tensors` and a visitor that is
//! generic over each tensor's shape. [`walk`] and [`walk_mut`] implement that visitor once and
//! hand every tensor to a plain closure as a [`TensorInfo`] (dotted name, shape, the type of the
//! module that holds it, whether it is trainable) and a shape-erased handle
//! ([`HostTensor`], [`HostTensorMut`]): copy its values to or from the host, borrow and return
//! its gradient buffer. The walk is generic over the dfdx device ([`WalkDevice`]): on `Cpu`
//! the handles are [`HostTensor`]/[`HostTensorMut`], on `Cuda` the device handles of
//! `super::cuda` ([`walk_on`], [`walk_mut_on`]).

use crate::error::OptimError;
use crate::float::Float;
use dfdx::nn::tensor_collection::{
    ModuleFields, ModuleVisitor, ScalarOptions, TensorCollection, TensorOptions, TensorViewer,
    ViewTensorMut, ViewTensorRef,
};
use dfdx::optim::UnusedTensors;
use dfdx::shapes::{HasShape, Shape};
use dfdx::tensor::{Cpu, Gradients, Tensor, UniqueId};
use dfdx::tensor_ops::Device;
use std::marker::PhantomData;

/// What the walk knows of one tensor.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TensorInfo<'a> {
    /// The dotted path, spelled as dfdx's `ViewTensorName` spells it (`"0.weight"`): the key of
    /// optimizer state, EMA averages and accumulated gradients.
    pub name: &'a str,
    /// The tensor's shape.
    pub shape: &'a [usize],
    /// The type name of the innermost module holding the tensor (`"Linear"`), for
    /// `module == "..."` routing guards.
    pub module: &'static str,
    /// `TensorOptions::do_gradient_update`: false for buffers such as BatchNorm running
    /// statistics.
    pub trainable: bool,
}

impl TensorInfo<'_> {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Read access to one tensor on `Cpu`, whatever its shape.
pub(crate) trait HostTensor<E: Float> {
    /// Replaces `out` with the tensor's values (flat, row-major).
    fn read(&self, out: &mut Vec<E>);
    /// Moves the tensor's gradient buffer out of `grads` (a zero buffer is allocated when it has
    /// none), leaving an empty one in its place: return it with [`HostTensor::put_grad`].
    fn take_grad(&self, grads: &mut Gradients<E, Cpu>) -> Result<Vec<E>, OptimError>;
    /// Puts a buffer taken by [`HostTensor::take_grad`] back.
    fn put_grad(&self, grads: &mut Gradients<E, Cpu>, buf: Vec<E>) -> Result<(), OptimError>;
    /// dfdx's id of the tensor (the key of its gradient in `Gradients`).
    fn id(&self) -> UniqueId;
    /// Number of elements.
    fn len(&self) -> usize;
    /// Another handle on this tensor: the same id and storage (dfdx tensors share their storage
    /// by reference count; nothing is copied). Writing through either handle copies the storage
    /// first while it is shared, so the other keeps its values.
    fn share(&self) -> Shared<E>;
    /// A handle on the tensor's current storage (the tensor shared, type-erased; nothing is
    /// copied), for [`HostTensor::holds_watched`].
    fn watch(&self) -> Watch;
    /// Whether this tensor holds exactly the storage `watch` holds (and has at least one
    /// element): then its values are the ones it had when `watch` was taken. dfdx 0.13 writes a
    /// `Cpu` tensor only through `Arc::make_mut`, which copies a storage that is shared before
    /// writing; while `watch` shares it, any write into the tensor (`copy_from`, an optimizer,
    /// loading weights, an EMA) therefore gives it a new storage, and a replaced tensor has
    /// another storage too. Two live storages never have the same address, and `watch` keeps
    /// its storage alive, so an equal address means the same, unwritten storage.
    fn holds_watched(&self, watch: &Watch) -> bool;
}

/// A handle on a tensor's storage ([`HostTensor::watch`]).
pub(crate) type Watch = Box<dyn std::any::Any + Send + Sync>;

/// A tensor handle that can be kept off the walk and used from any thread (see
/// [`HostTensor::share`]).
pub(crate) type Shared<E> = Box<dyn HostTensorMut<E> + Send + Sync>;

/// Write access to one tensor on `Cpu`.
pub(crate) trait HostTensorMut<E: Float>: HostTensor<E> {
    /// Overwrites the tensor's values with `values` (flat, row-major, exactly its length).
    fn write(&mut self, values: &[E]);
    /// Writes a master copy into the tensor as the device driver does
    /// ([`super::commit::publish`]; the emulated device path).
    fn publish(
        &mut self,
        name: &str,
        grads: &mut Gradients<E, Cpu>,
        master: &mut Vec<E>,
    ) -> Result<(), OptimError>;
    /// The read handle.
    fn as_host_tensor(&self) -> &(dyn HostTensor<E> + 'static);
    /// Swaps this tensor with `other`, whole (id, storage), when `other` is a tensor of the same
    /// type; returns `false` and changes nothing otherwise.
    fn swap_with(&mut self, other: &mut dyn HostTensorMut<E>) -> bool;
    /// `self` as `Any` (for [`swap_with`](Self::swap_with)).
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any;
}

fn device_error(e: impl core::fmt::Debug) -> OptimError {
    OptimError::Device(format!("{e:?}"))
}

impl<S: Shape, E: Float> HostTensor<E> for Tensor<S, E, Cpu>
where
    Cpu: Device<E>,
{
    fn read(&self, out: &mut Vec<E>) {
        let n = self.shape().num_elements();
        if out.len() != n {
            // a reused buffer of the right length is overwritten as it is (no zero fill first)
            out.clear();
            out.resize(n, E::zero());
        }
        self.copy_into(out);
    }

    fn take_grad(&self, grads: &mut Gradients<E, Cpu>) -> Result<Vec<E>, OptimError> {
        E::take_grad(grads, self).map_err(device_error)
    }

    fn put_grad(&self, grads: &mut Gradients<E, Cpu>, buf: Vec<E>) -> Result<(), OptimError> {
        E::put_grad(grads, self, buf).map_err(device_error)
    }

    fn id(&self) -> UniqueId {
        // dfdx 0.13 exposes a tensor's id only through `UnusedTensors::add`
        let mut ids = UnusedTensors::default();
        ids.add(self);
        ids.ids[0]
    }

    fn len(&self) -> usize {
        self.shape().num_elements()
    }

    fn share(&self) -> Shared<E> {
        Box::new(self.clone())
    }

    fn watch(&self) -> Watch {
        Box::new(self.clone())
    }

    fn holds_watched(&self, watch: &Watch) -> bool {
        watch.downcast_ref::<Self>().is_some_and(|w| {
            w.shape() == self.shape() && first(w).is_some_and(|a| Some(a) == first(self))
        })
    }
}

/// The address of `t`'s first element (`None` when it has none): which storage it holds. dfdx
/// 0.13 names no storage; indexing the first element borrows into it (no copy).
fn first<S: Shape, E: Float>(t: &Tensor<S, E, Cpu>) -> Option<*const E>
where
    Cpu: Device<E>,
{
    if t.shape().num_elements() == 0 {
        return None;
    }
    let x: &E = &t[S::Concrete::default()];
    Some(x)
}

impl<S: Shape, E: Float> HostTensorMut<E> for Tensor<S, E, Cpu>
where
    Cpu: Device<E>,
{
    fn write(&mut self, values: &[E]) {
        self.copy_from(values);
    }
    fn publish(
        &mut self,
        name: &str,
        grads: &mut Gradients<E, Cpu>,
        master: &mut Vec<E>,
    ) -> Result<(), OptimError> {
        super::commit::publish(name, self, grads, master, Vec::len, |g, t, m| {
            let old = E::take_grad(g, t).map_err(device_error)?;
            E::put_grad(g, t, std::mem::replace(m, old)).map_err(device_error)
        })
    }
    fn as_host_tensor(&self) -> &(dyn HostTensor<E> + 'static) {
        self
    }

    fn swap_with(&mut self, other: &mut dyn HostTensorMut<E>) -> bool {
        match other.as_any_mut().downcast_mut::<Self>() {
            Some(o) => {
                std::mem::swap(self, o);
                true
            }
            None => false,
        }
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// A dfdx device whose tensors the walk visits, and the handles it gives for them.
pub(crate) trait WalkDevice<E: Float>: Device<E> {
    /// Read access to one tensor (shape erased).
    type Handle: ?Sized;
    /// Write access to one tensor (shape erased).
    type HandleMut: ?Sized;
    /// `t`'s read handle.
    fn handle<S: Shape>(t: &Tensor<S, E, Self>) -> &Self::Handle;
    /// `t`'s write handle.
    fn handle_mut<S: Shape>(t: &mut Tensor<S, E, Self>) -> &mut Self::HandleMut;
}

impl<E: Float> WalkDevice<E> for Cpu
where
    Cpu: Device<E>,
{
    type Handle = dyn HostTensor<E>;
    type HandleMut = dyn HostTensorMut<E>;
    fn handle<S: Shape>(t: &Tensor<S, E, Cpu>) -> &(dyn HostTensor<E> + 'static) {
        t
    }
    fn handle_mut<S: Shape>(t: &mut Tensor<S, E, Cpu>) -> &mut (dyn HostTensorMut<E> + 'static) {
        t
    }
}

/// Calls `f` on every tensor of `model` on `Cpu`, in dfdx's field order.
///
/// # Errors
/// The first error `f` returns (the walk stops there).
pub(crate) fn walk<E, M>(
    model: &M,
    f: impl FnMut(&TensorInfo<'_>, &(dyn HostTensor<E> + 'static)) -> Result<(), OptimError>,
) -> Result<(), OptimError>
where
    E: Float,
    M: TensorCollection<E, Cpu>,
    Cpu: Device<E>,
{
    walk_on::<E, Cpu, M>(model, f)
}

/// [`walk_mut_on`] on `Cpu`.
///
/// # Errors
/// The first error `f` returns (the walk stops there).
pub(crate) fn walk_mut<E, M>(
    model: &mut M,
    f: impl FnMut(&TensorInfo<'_>, &mut (dyn HostTensorMut<E> + 'static)) -> Result<(), OptimError>,
) -> Result<(), OptimError>
where
    E: Float,
    M: TensorCollection<E, Cpu>,
    Cpu: Device<E>,
{
    walk_mut_on::<E, Cpu, M>(model, f)
}

/// Calls `f` on every tensor of `model` on device `D`, in dfdx's field order.
///
/// # Errors
/// The first error `f` returns (the walk stops there).
pub(crate) fn walk_on<E, D, M>(
    model: &M,
    mut f: impl FnMut(&TensorInfo<'_>, &D::Handle) -> Result<(), OptimError>,
) -> Result<(), OptimError>
where
    E: Float,
    D: WalkDevice<E>,
    M: TensorCollection<E, D>,
{
    let f: ReadFn<'_, E, D> = &mut f;
    walk_with::<Read<E, D, _>, M>(model, &mut Read(f, PhantomData))
}

/// [`walk_on`] with write access to every tensor.
///
/// # Errors
/// The first error `f` returns (the walk stops there).
pub(crate) fn walk_mut_on<E, D, M>(
    model: &mut M,
    mut f: impl FnMut(&TensorInfo<'_>, &mut D::HandleMut) -> Result<(), OptimError>,
) -> Result<(), OptimError>
where
    E: Float,
    D: WalkDevice<E>,
    M: TensorCollection<E, D>,
{
    let f: WriteFn<'_, E, D> = &mut f;
    walk_with::<Write<E, D, _>, M>(model, &mut Write(f, PhantomData))
}

/// Walks `model` from its root, handing each tensor to `visit`.
fn walk_with<'a, F: Visit, M: TensorCollection<F::E, F::D>>(
    model: <F::Viewer as TensorViewer>::View<'a, M>,
    visit: &'a mut F,
) -> Result<(), OptimError> {
    M::iter_tensors(&mut Walker::<F, M> {
        m: model,
        path: String::new(),
        module: short_type_name::<M>(),
        f: visit,
    })
    .map(|_| ())
}

/// Name and element count of every trainable tensor of `model` (and of every other tensor too
/// when `include_buffers`), in walk order.
///
/// # Errors
/// None in practice (reading shapes cannot fail); typed for the walk.
pub(crate) fn shapes<E, M>(
    model: &M,
    include_buffers: bool,
) -> Result<Vec<(String, usize)>, OptimError>
where
    E: Float,
    M: TensorCollection<E, Cpu>,
    Cpu: Device<E>,
{
    let mut out = Vec::new();
    walk::<E, M>(model, |t, _| {
        if t.trainable || include_buffers {
            out.push((t.name.to_string(), t.numel()));
        }
        Ok(())
    })?;
    Ok(out)
}

/// For every trainable tensor of `model`: borrows its gradient buffer from `grads` (allocating
/// a zero one when it has none), calls `f(name, buffer)`, and returns the buffer.
///
/// # Errors
/// [`OptimError::Device`] when dfdx cannot allocate a gradient.
pub(crate) fn with_each_grad<E, M>(
    model: &M,
    grads: &mut Gradients<E, Cpu>,
    mut f: impl FnMut(&str, &mut Vec<E>),
) -> Result<(), OptimError>
where
    E: Float,
    M: TensorCollection<E, Cpu>,
    Cpu: Device<E>,
{
    walk::<E, M>(model, |t, h| {
        if !t.trainable {
            return Ok(());
        }
        let mut g = h.take_grad(grads)?;
        f(t.name, &mut g);
        h.put_grad(grads, g)
    })
}

/// `dfdx::nn::modules::linear::Linear<2, 3, f32, Cpu>` → `Linear`.
fn short_type_name<T: ?Sized>() -> &'static str {
    let full = std::any::type_name::<T>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base)
}

/// `prefix.name`, as dfdx's `ViewTensorName` joins paths.
fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// What [`Walker`] does at each tensor, for one kind of access.
trait Visit {
    /// The element type.
    type E: Float;
    /// The device.
    type D: WalkDevice<Self::E>;
    /// `ViewTensorRef` or `ViewTensorMut`.
    type Viewer: TensorViewer;
    fn tensor<S: Shape>(
        &mut self,
        at: At<'_>,
        t: <Self::Viewer as TensorViewer>::View<'_, Tensor<S, Self::E, Self::D>>,
    ) -> Result<(), OptimError>;
}

/// Where the walk is at a tensor: everything of its [`TensorInfo`] but the shape, which only
/// the tensor's view can read.
#[derive(Clone, Copy)]
struct At<'a> {
    name: &'a str,
    module: &'static str,
    trainable: bool,
}

impl<'a> At<'a> {
    /// The tensor's [`TensorInfo`], given its `shape`.
    fn info(self, shape: &'a [usize]) -> TensorInfo<'a> {
        TensorInfo {
            name: self.name,
            shape,
            module: self.module,
            trainable: self.trainable,
        }
    }
}

/// The callback of a read walk, type-erased: the walk over a model's fields (one instance per
/// tensor shape) is compiled once per model type, not once per caller's closure (for the step
/// driver that was once per optimizer and model: a third of the `compare` example's code).
type ReadFn<'f, E, D> =
    &'f mut dyn FnMut(&TensorInfo<'_>, &<D as WalkDevice<E>>::Handle) -> Result<(), OptimError>;
/// [`ReadFn`] of a write walk.
type WriteFn<'f, E, D> = &'f mut dyn FnMut(
    &TensorInfo<'_>,
    &mut <D as WalkDevice<E>>::HandleMut,
) -> Result<(), OptimError>;

struct Read<E, D, F>(F, PhantomData<(E, D)>);
struct Write<E, D, F>(F, PhantomData<(E, D)>);

impl<E: Float, D: WalkDevice<E>, F> Visit for Read<E, D, F>
where
    F: FnMut(&TensorInfo<'_>, &D::Handle) -> Result<(), OptimError>,
{
    type E = E;
    type D = D;
    type Viewer = ViewTensorRef;
    fn tensor<S: Shape>(&mut self, at: At<'_>, t: &Tensor<S, E, D>) -> Result<(), OptimError> {
        let shape = t.shape().concrete();
        (self.0)(&at.info(shape.as_ref()), D::handle(t))
    }
}

impl<E: Float, D: WalkDevice<E>, F> Visit for Write<E, D, F>
where
    F: FnMut(&TensorInfo<'_>, &mut D::HandleMut) -> Result<(), OptimError>,
{
    type E = E;
    type D = D;
    type Viewer = ViewTensorMut;
    fn tensor<S: Shape>(&mut self, at: At<'_>, t: &mut Tensor<S, E, D>) -> Result<(), OptimError> {
        let shape = t.shape().concrete();
        (self.0)(&at.info(shape.as_ref()), D::handle_mut(t))
    }
}

/// The dfdx `ModuleVisitor`: follows modules down to tensors, tracking the dotted path and the
/// innermost module type, and hands each tensor to `f`. Builds nothing.
struct Walker<'w, F: Visit, T: 'w> {
    m: <F::Viewer as TensorViewer>::View<'w, T>,
    path: String,
    module: &'static str,
    f: &'w mut F,
}

impl<F: Visit, T: TensorCollection<F::E, F::D>> ModuleVisitor<T, F::E, F::D> for Walker<'_, F, T> {
    type Err = OptimError;
    type E2 = F::E;
    type D2 = F::D;

    fn visit_module<Field, GetRef, GetMut>(
        &mut self,
        name: &str,
        mut get_ref: GetRef,
        mut get_mut: GetMut,
    ) -> Result<Option<Field::To<F::E, F::D>>, OptimError>
    where
        GetRef: FnMut(&T) -> &Field,
        GetMut: FnMut(&mut T) -> &mut Field,
        Field: TensorCollection<F::E, F::D>,
    {
        let mut child = Walker::<F, Field> {
            m: F::Viewer::view_field(&mut self.m, name, &mut get_ref, &mut get_mut),
            path: join(&self.path, name),
            module: short_type_name::<Field>(),
            f: &mut *self.f,
        };
        Field::iter_tensors(&mut child)?;
        Ok(None)
    }

    fn visit_tensor<S: Shape, GetRef, GetMut>(
        &mut self,
        name: &str,
        mut get_ref: GetRef,
        mut get_mut: GetMut,
        opts: TensorOptions<S, F::E, F::D>,
    ) -> Result<Option<Tensor<S, F::E, F::D>>, OptimError>
    where
        GetRef: FnMut(&T) -> &Tensor<S, F::E, F::D>,
        GetMut: FnMut(&mut T) -> &mut Tensor<S, F::E, F::D>,
    {
        let t = F::Viewer::view_field(&mut self.m, name, &mut get_ref, &mut get_mut);
        let path = join(&self.path, name);
        let at = At {
            name: &path,
            module: self.module,
            trainable: opts.do_gradient_update,
        };
        self.f.tensor(at, t)?;
        Ok(None)
    }

    fn visit_scalar<N, GetRef, GetMut>(
        &mut self,
        _: &str,
        _: GetRef,
        _: GetMut,
        _: ScalarOptions<N>,
    ) -> Result<Option<N>, OptimError>
    where
        N: num_traits::NumCast,
        GetRef: FnMut(&T) -> &N,
        GetMut: FnMut(&mut T) -> &mut N,
    {
        Ok(None)
    }

    fn visit_fields<M: ModuleFields<T, F::E, F::D>>(
        &mut self,
        fields: M,
        builder: impl FnOnce(M::Output<F::E, F::D>) -> T::To<F::E, F::D>,
    ) -> Result<Option<T::To<F::E, F::D>>, OptimError> {
        let options = fields.visit_fields(self)?;
        Ok(M::handle_options(options).map(builder))
    }
}
