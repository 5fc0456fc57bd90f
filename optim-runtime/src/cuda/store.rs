//! The device-resident part of an optimizer's state ([`OptState`](crate::OptState)'s `device`
//! field): per parameter, its element-wise state and scratch buffers on the device, and the
//! driver's copy of the parameter (the dfdx `Cuda` step's master copy, design (b) of issue 12,
//! with the id of the dfdx tensor it mirrors; see `docs/gpu.md`).
//!
//! A device step moves a parameter's element-wise state to the device (uploading what the host
//! state holds, e.g. after loading a checkpoint or a CPU step) and leaves the host buffers
//! empty; `OptState::sync_to_host` brings it all back, and a CPU step does that first, so an
//! optimizer can move between devices. Checkpoints read through `OptState::to_host`, so they
//! hold the same values whichever device the state is on.

use super::backend::Backend;
use crate::error::OptimError;
use crate::Float;
use std::any::Any;
use std::collections::BTreeMap;
use std::marker::PhantomData;

/// The id of the dfdx tensor a master copy mirrors (nothing without feature `dfdx`: there is
/// no model path then, and `master_id` stays `None`).
#[cfg(feature = "dfdx")]
pub(crate) type MasterId = dfdx::tensor::UniqueId;
/// See the `dfdx` version.
#[cfg(not(feature = "dfdx"))]
pub(crate) type MasterId = std::convert::Infallible;

/// One parameter's buffers on the device.
pub(crate) struct Stored<B> {
    /// The driver's copy of the parameter's values (`None` until first read from the model).
    pub master: Option<B>,
    /// The id of the dfdx tensor `master` mirrors (another id: the tensor was replaced, and
    /// the master is read again).
    pub master_id: Option<MasterId>,
    /// Element-wise state buffers by slot (`None`: on the host, or not allocated).
    pub slots: Vec<Option<B>>,
    /// Element-wise scratch buffers by index.
    pub temps: Vec<Option<B>>,
}

impl<B> Default for Stored<B> {
    fn default() -> Self {
        Stored {
            master: None,
            master_id: None,
            slots: Vec::new(),
            temps: Vec::new(),
        }
    }
}

/// The buffers of every parameter on one backend.
pub(crate) struct Store<E: Float, B: Backend<E>> {
    pub backend: B,
    pub params: BTreeMap<String, Stored<B::Buf>>,
    _elem: PhantomData<E>,
}

impl<E: Float, B: Backend<E>> Store<E, B> {
    pub fn new(backend: B) -> Self {
        Store {
            backend,
            params: BTreeMap::new(),
            _elem: PhantomData,
        }
    }
}

/// [`Store`] with its backend erased, as [`OptState`](crate::OptState) holds it.
pub(crate) trait AnyStore<E>: Send + Sync {
    /// The backend's name.
    fn backend_name(&self) -> String;
    /// Whether any element-wise state buffer lives on the device.
    fn holds_state(&self) -> bool;
    /// Every state buffer on the device, as `(parameter, slot, values)`.
    fn download_slots(&self) -> Result<Vec<(String, usize, Vec<E>)>, OptimError>;
    /// Drops every state and scratch buffer (the parameter copies stay).
    fn clear_state(&mut self);
    /// Drops every parameter copy (the next device step reads each parameter again).
    fn drop_masters(&mut self);
    /// A copy on the same device.
    fn try_clone(&self) -> Result<Box<dyn AnyStore<E>>, OptimError>;
    /// For the driver, which knows the concrete type.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<E: Float, B: Backend<E>> AnyStore<E> for Store<E, B> {
    fn backend_name(&self) -> String {
        self.backend.name()
    }
    fn holds_state(&self) -> bool {
        self.params
            .values()
            .any(|p| p.slots.iter().any(Option::is_some))
    }
    fn download_slots(&self) -> Result<Vec<(String, usize, Vec<E>)>, OptimError> {
        let mut out = Vec::new();
        for (name, p) in &self.params {
            for (k, b) in p.slots.iter().enumerate() {
                if let Some(b) = b {
                    out.push((name.clone(), k, self.backend.read(b)?));
                }
            }
        }
        Ok(out)
    }
    fn clear_state(&mut self) {
        for p in self.params.values_mut() {
            p.slots.clear();
            p.temps.clear();
        }
    }
    fn drop_masters(&mut self) {
        for p in self.params.values_mut() {
            p.master = None;
            p.master_id = None;
        }
    }
    fn try_clone(&self) -> Result<Box<dyn AnyStore<E>>, OptimError> {
        let dup = |b: &Option<B::Buf>| -> Result<Option<B::Buf>, OptimError> {
            b.as_ref().map(|b| self.backend.duplicate(b)).transpose()
        };
        let mut params = BTreeMap::new();
        for (name, p) in &self.params {
            params.insert(
                name.clone(),
                Stored {
                    master: dup(&p.master)?,
                    master_id: p.master_id,
                    slots: p.slots.iter().map(dup).collect::<Result<_, _>>()?,
                    temps: p.temps.iter().map(dup).collect::<Result<_, _>>()?,
                },
            );
        }
        Ok(Box::new(Store {
            backend: self.backend.clone(),
            params,
            _elem: PhantomData,
        }))
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// The optimizer's store on `backend`: its own when it holds one of type `B` for which
/// `same(its backend)`, else a new one, after the state held on another device (or another
/// backend type) is brought back to the host.
///
/// # Errors
/// [`OptimError::Device`] when the other device cannot be read (the state is then unchanged).
pub(crate) fn take_store<E: Float, B: Backend<E>>(
    state: &mut crate::OptState<E>,
    backend: B,
    same: impl Fn(&B) -> bool,
) -> Result<Store<E, B>, OptimError> {
    if let Some(mut boxed) = state.device.0.take() {
        if let Some(s) = boxed.as_any_mut().downcast_mut::<Store<E, B>>() {
            if same(&s.backend) {
                return Ok(std::mem::replace(s, Store::new(backend)));
            }
        }
        state.device.0 = Some(boxed);
        state.sync_to_host()?;
    }
    Ok(Store::new(backend))
}

/// A device store whose copy failed: every use returns the device's error (what
/// [`DeviceState`]'s `Clone` leaves when the device cannot copy; the state it should hold is
/// unknown, so it reports holding some).
struct Failed(OptimError);

impl<E> AnyStore<E> for Failed {
    fn backend_name(&self) -> String {
        format!("failed copy ({})", self.0)
    }
    fn holds_state(&self) -> bool {
        true
    }
    fn download_slots(&self) -> Result<Vec<(String, usize, Vec<E>)>, OptimError> {
        Err(self.0.clone())
    }
    fn clear_state(&mut self) {}
    fn drop_masters(&mut self) {}
    fn try_clone(&self) -> Result<Box<dyn AnyStore<E>>, OptimError> {
        Err(self.0.clone())
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// The `device` field of [`OptState`](crate::OptState): `None` until a device step runs.
///
/// Two states compare equal when their device state buffers hold the same values (parameter
/// copies and scratch buffers are caches, not compared). Copy one with
/// [`try_clone`](Self::try_clone) (what [`OptState::try_clone`](crate::OptState::try_clone)
/// does); `Clone` never panics: when the device cannot copy, the clone carries the error, and
/// every later use of it (a step, `sync_to_host`, a checkpoint) returns that error.
pub struct DeviceState<E>(pub(crate) Option<Box<dyn AnyStore<E>>>);

impl<E> Default for DeviceState<E> {
    fn default() -> Self {
        DeviceState(None)
    }
}

impl<E> DeviceState<E> {
    /// A copy on the same device.
    ///
    /// # Errors
    /// [`OptimError::Device`] when the device cannot allocate or copy.
    pub fn try_clone(&self) -> Result<Self, OptimError> {
        Ok(DeviceState(
            self.0.as_ref().map(|s| s.try_clone()).transpose()?,
        ))
    }
}

impl<E> Clone for DeviceState<E> {
    fn clone(&self) -> Self {
        self.try_clone()
            .unwrap_or_else(|e| DeviceState(Some(Box::new(Failed(e)))))
    }
}

impl<E: PartialEq> PartialEq for DeviceState<E> {
    fn eq(&self, other: &Self) -> bool {
        let slots = |s: &Self| match &s.0 {
            None => Ok(Vec::new()),
            Some(s) => s.download_slots(),
        };
        match (slots(self), slots(other)) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
    }
}

impl<E> core::fmt::Debug for DeviceState<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match &self.0 {
            None => f.write_str("host"),
            Some(s) => write!(f, "device({})", s.backend_name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::host::HostBackend;

    #[test]
    fn try_clone_copies_device_buffers_and_a_failed_copy_reports_its_error_on_use() {
        let mut store = Store::<f32, HostBackend>::new(HostBackend::new());
        store.params.entry("w".into()).or_default().slots = vec![Some(vec![1.0, -2.0])];
        let state = DeviceState::<f32>(Some(Box::new(store)));
        let copy = state.try_clone().unwrap();
        assert_eq!(
            copy.0.as_ref().unwrap().download_slots().unwrap(),
            [("w".to_string(), 0, vec![1.0, -2.0])]
        );
        assert!(copy == state);

        // a copy the device could not make: the clone carries the error to every use
        let err = OptimError::Device("out of memory".into());
        let failed = DeviceState::<f32>(Some(Box::new(Failed(err.clone()))));
        assert_eq!(failed.try_clone().err(), Some(err.clone()));
        let cloned = failed.clone();
        let mut host = crate::OptState::<f32> {
            device: cloned,
            ..Default::default()
        };
        assert!(host.on_device(), "the lost state is not reported as none");
        assert_eq!(host.sync_to_host(), Err(err.clone()));
        assert_eq!(host.try_clone().err(), Some(err));
    }
}
