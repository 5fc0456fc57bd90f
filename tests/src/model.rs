//! [`CaseModel`]: the four parameters shared by all optimizer cases, as a dfdx module.

use crate::fixtures::Case;
use dfdx::prelude::*;
use std::collections::BTreeMap;

/// Names of the [`CaseModel`] tensors, in field (= walk = `param_order`) order.
pub const PARAM_NAMES: [&str; 4] = ["w_16x8", "w_8x16", "b_8", "s_1"];

/// The parameters used by every optimizer conformance case, as a dfdx tensor collection.
///
/// dfdx's walker names the tensors `"w_16x8"`, `"w_8x16"`, `"b_8"`, `"s_1"` (the field
/// names) and visits them in that order, which is the cases' `param_order`.
#[derive(Debug, Clone)]
pub struct CaseModel<E: Dtype, D: Device<E>> {
    /// Matrix parameter of shape `[16, 8]`.
    pub w_16x8: Tensor<Rank2<16, 8>, E, D>,
    /// Matrix parameter of shape `[8, 16]`.
    pub w_8x16: Tensor<Rank2<8, 16>, E, D>,
    /// Vector parameter of shape `[8]`.
    pub b_8: Tensor<Rank1<8>, E, D>,
    /// Single-element parameter of shape `[1]`.
    pub s_1: Tensor<Rank1<1>, E, D>,
}

/// [`TensorCollection`] for a struct of tensors: each field is walked under its own name,
/// in the order listed (which must be the declaration order), and reset to zeros.
macro_rules! field_tensors {
    ($model:ident { $($field:ident),+ $(,)? }) => {
        impl<E: Dtype, D: Device<E>> TensorCollection<E, D> for $model<E, D> {
            type To<E2: Dtype, D2: Device<E2>> = $model<E2, D2>;

            fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
                visitor: &mut V,
            ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
                visitor.visit_fields(
                    ($(Self::tensor(
                        stringify!($field),
                        |s| &s.$field,
                        |s| &mut s.$field,
                        TensorOptions::reset_to_zeros(),
                    ),)+),
                    |($($field,)+)| $model { $($field),+ },
                )
            }
        }
    };
}

field_tensors!(CaseModel {
    w_16x8,
    w_8x16,
    b_8,
    s_1
});

fn cast<E: Dtype>(xs: &[f64]) -> Vec<E> {
    xs.iter()
        .map(|&x| E::from_f64(x).expect("value not representable in the model dtype"))
        .collect()
}

fn check_name(name: &str) {
    assert!(
        PARAM_NAMES.contains(&name),
        "CaseModel has no parameter {name:?} (it has {PARAM_NAMES:?})"
    );
}

impl<E: Dtype, D: Device<E>> CaseModel<E, D> {
    /// A model with all parameters zero.
    pub fn zeros(dev: &D) -> Self {
        CaseModel {
            w_16x8: dev.zeros(),
            w_8x16: dev.zeros(),
            b_8: dev.zeros(),
            s_1: dev.zeros(),
        }
    }

    /// A model holding the case's `params_init`. Panics if the case's parameter names or
    /// shapes differ from this model's.
    pub fn from_case(dev: &D, case: &Case) -> Self {
        assert_eq!(
            case.param_order, PARAM_NAMES,
            "{}: param_order differs from CaseModel's",
            case.case
        );
        let mut m = Self::zeros(dev);
        for name in PARAM_NAMES {
            let init = &case.params_init[name];
            assert_eq!(
                init.shape,
                Self::shape_of(name),
                "{}: shape of {name} differs from CaseModel's",
                case.case
            );
            m.set_from_flat(name, &cast::<E>(&init.data));
        }
        m
    }

    /// Shape of parameter `name`.
    pub fn shape_of(name: &str) -> &'static [usize] {
        match name {
            "w_16x8" => &[16, 8],
            "w_8x16" => &[8, 16],
            "b_8" => &[8],
            "s_1" => &[1],
            _ => {
                check_name(name);
                unreachable!()
            }
        }
    }

    /// Flat row-major copy of parameter `name`.
    pub fn params_flat(&self, name: &str) -> Vec<E> {
        match name {
            "w_16x8" => self.w_16x8.as_vec(),
            "w_8x16" => self.w_8x16.as_vec(),
            "b_8" => self.b_8.as_vec(),
            "s_1" => self.s_1.as_vec(),
            _ => {
                check_name(name);
                unreachable!()
            }
        }
    }

    /// Overwrites parameter `name` with flat row-major `data` (panics on a length mismatch).
    pub fn set_from_flat(&mut self, name: &str, data: &[E]) {
        let want = Self::shape_of(name).iter().product::<usize>();
        assert_eq!(data.len(), want, "set_from_flat({name}): wrong length");
        match name {
            "w_16x8" => self.w_16x8.copy_from(data),
            "w_8x16" => self.w_8x16.copy_from(data),
            "b_8" => self.b_8.copy_from(data),
            "s_1" => self.s_1.copy_from(data),
            _ => unreachable!(),
        }
    }

    /// All parameters as flat row-major vectors, keyed by name.
    pub fn to_flat(&self) -> BTreeMap<String, Vec<E>> {
        PARAM_NAMES
            .iter()
            .map(|&n| (n.to_string(), self.params_flat(n)))
            .collect()
    }
}

/// A dfdx [`TensorVisitor`] that records the walker's name and the shape of every tensor.
struct NameCollector(Vec<(String, Vec<usize>)>);

impl<E: Dtype, D: Device<E>> TensorVisitor<E, D> for NameCollector {
    type Viewer = (ViewTensorRef, ViewTensorName);
    type Err = D::Err;
    type E2 = E;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        _opts: TensorOptions<S, E, D>,
        (t, name): (&Tensor<S, E, D>, String),
    ) -> Result<Option<Tensor<S, E, D>>, D::Err> {
        self.0.push((name, t.shape().concrete().into()));
        Ok(None)
    }
}

/// The names (as dfdx's [`RecursiveWalker`] with [`ViewTensorName`] reports them, i.e. what
/// an optimizer walking the module sees) and shapes of every tensor of `model`, in walk
/// order.
pub fn walked_tensors<E: Dtype, D: Device<E>, M: TensorCollection<E, D>>(
    model: &M,
) -> Vec<(String, Vec<usize>)> {
    let mut names = NameCollector(Vec::new());
    let walked = M::iter_tensors(&mut RecursiveWalker {
        m: (model, String::new()),
        f: &mut names,
    });
    assert!(walked.is_ok(), "walking the model failed");
    names.0
}

/// `Gradients` buffers on `Cpu` are only reachable as slices for concrete dtypes, so the
/// gradient helpers are stamped out per dtype.
macro_rules! cpu_grad_helpers {
    ($($E:ty),*) => {$(
        impl CaseModel<$E, Cpu> {
            /// Writes `values[name]` (cast to the model dtype) into the gradient buffer of
            /// each named parameter of `grads`, allocating the buffer if needed. Names not
            /// in `values` are left as they are.
            pub fn write_grads(
                &self,
                grads: &mut Gradients<$E, Cpu>,
                values: &BTreeMap<String, Vec<f64>>,
            ) {
                for (name, vals) in values {
                    check_name(name);
                    let data = cast::<$E>(vals);
                    let buf = match name.as_str() {
                        "w_16x8" => grads.get_or_alloc_mut(&self.w_16x8),
                        "w_8x16" => grads.get_or_alloc_mut(&self.w_8x16),
                        "b_8" => grads.get_or_alloc_mut(&self.b_8),
                        "s_1" => grads.get_or_alloc_mut(&self.s_1),
                        _ => unreachable!(),
                    }
                    .expect("allocating a gradient buffer");
                    assert_eq!(buf.len(), data.len(), "gradient length for {name}");
                    buf.copy_from_slice(&data);
                }
            }

            /// Fresh gradients (`alloc_grads`) holding `values[name]` for each parameter;
            /// every parameter gets a buffer, zero where `values` has no entry.
            pub fn grads_from(
                &self,
                values: &BTreeMap<String, Vec<f64>>,
            ) -> Gradients<$E, Cpu> {
                let mut grads = self.alloc_grads();
                self.write_grads(&mut grads, values);
                grads
            }

            /// Flat row-major copy of the gradient of parameter `name` held by `grads`
            /// (allocating a zero buffer if it has none).
            pub fn grad_flat(&self, grads: &mut Gradients<$E, Cpu>, name: &str) -> Vec<$E> {
                let buf = match name {
                    "w_16x8" => grads.get_or_alloc_mut(&self.w_16x8),
                    "w_8x16" => grads.get_or_alloc_mut(&self.w_8x16),
                    "b_8" => grads.get_or_alloc_mut(&self.b_8),
                    "s_1" => grads.get_or_alloc_mut(&self.s_1),
                    _ => {
                        check_name(name);
                        unreachable!()
                    }
                }
                .expect("allocating a gradient buffer");
                buf.to_vec()
            }
        }
    )*};
}

cpu_grad_helpers!(f32, f64);

/// A dfdx model that holds the parameters of a reference case, so that the case can be run
/// through an optimizer's dfdx path ([`crate::runner::run_dfdx`]).
pub trait DfdxCase: TensorCollection<f32, Cpu> {
    /// A model holding the case's `params_init`; panics if the case's parameter names,
    /// order or shapes differ from the model's.
    fn load(dev: &Cpu, case: &Case) -> Self;
    /// Writes `values[name]` into the gradient buffer of each named parameter of `grads`.
    fn set_grads(&self, grads: &mut Gradients<f32, Cpu>, values: &BTreeMap<String, Vec<f64>>);
    /// Flat row-major copy of parameter `name`.
    fn flat(&self, name: &str) -> Vec<f32>;
}

impl DfdxCase for CaseModel<f32, Cpu> {
    fn load(dev: &Cpu, case: &Case) -> Self {
        Self::from_case(dev, case)
    }
    fn set_grads(&self, grads: &mut Gradients<f32, Cpu>, values: &BTreeMap<String, Vec<f64>>) {
        self.write_grads(grads, values)
    }
    fn flat(&self, name: &str) -> Vec<f32> {
        self.params_flat(name)
    }
}

/// The five parameters of the `mars_adamw` case (`w_16x8: [16, 8]`, `w_8x16: [8, 16]`,
/// `w_4x4: [4, 4]`, `b_8: [8]`, `s_1: [1]`, in that walk order), as a dfdx tensor
/// collection.
#[derive(Debug, Clone)]
pub struct MarsModel<E: Dtype, D: Device<E>> {
    /// Matrix parameter of shape `[16, 8]`.
    pub w_16x8: Tensor<Rank2<16, 8>, E, D>,
    /// Matrix parameter of shape `[8, 16]`.
    pub w_8x16: Tensor<Rank2<8, 16>, E, D>,
    /// Matrix parameter of shape `[4, 4]` (small gradients: MARS's no-clip branch).
    pub w_4x4: Tensor<Rank2<4, 4>, E, D>,
    /// Vector parameter of shape `[8]`.
    pub b_8: Tensor<Rank1<8>, E, D>,
    /// Single-element parameter of shape `[1]`.
    pub s_1: Tensor<Rank1<1>, E, D>,
}

/// Names of the [`MarsModel`] tensors, in field (= walk = `param_order`) order.
pub const MARS_PARAM_NAMES: [&str; 5] = ["w_16x8", "w_8x16", "w_4x4", "b_8", "s_1"];

field_tensors!(MarsModel {
    w_16x8,
    w_8x16,
    w_4x4,
    b_8,
    s_1
});

impl DfdxCase for MarsModel<f32, Cpu> {
    fn load(dev: &Cpu, case: &Case) -> Self {
        assert_eq!(
            case.param_order, MARS_PARAM_NAMES,
            "{}: param_order differs from MarsModel's",
            case.case
        );
        let mut m = MarsModel {
            w_16x8: dev.zeros(),
            w_8x16: dev.zeros(),
            w_4x4: dev.zeros(),
            b_8: dev.zeros(),
            s_1: dev.zeros(),
        };
        for name in MARS_PARAM_NAMES {
            let init = &case.params_init[name];
            let data = cast::<f32>(&init.data);
            let shape: &[usize] = match name {
                "w_16x8" => &[16, 8],
                "w_8x16" => &[8, 16],
                "w_4x4" => &[4, 4],
                "b_8" => &[8],
                _ => &[1],
            };
            assert_eq!(init.shape, shape, "{}: shape of {name}", case.case);
            match name {
                "w_16x8" => m.w_16x8.copy_from(&data),
                "w_8x16" => m.w_8x16.copy_from(&data),
                "w_4x4" => m.w_4x4.copy_from(&data),
                "b_8" => m.b_8.copy_from(&data),
                _ => m.s_1.copy_from(&data),
            }
        }
        m
    }

    fn set_grads(&self, grads: &mut Gradients<f32, Cpu>, values: &BTreeMap<String, Vec<f64>>) {
        for (name, vals) in values {
            let data = cast::<f32>(vals);
            let buf = match name.as_str() {
                "w_16x8" => grads.get_or_alloc_mut(&self.w_16x8),
                "w_8x16" => grads.get_or_alloc_mut(&self.w_8x16),
                "w_4x4" => grads.get_or_alloc_mut(&self.w_4x4),
                "b_8" => grads.get_or_alloc_mut(&self.b_8),
                "s_1" => grads.get_or_alloc_mut(&self.s_1),
                _ => {
                    panic!("MarsModel has no parameter {name:?} (it has {MARS_PARAM_NAMES:?})")
                }
            }
            .expect("allocating a gradient buffer");
            assert_eq!(buf.len(), data.len(), "gradient length for {name}");
            buf.copy_from_slice(&data);
        }
    }

    fn flat(&self, name: &str) -> Vec<f32> {
        match name {
            "w_16x8" => self.w_16x8.as_vec(),
            "w_8x16" => self.w_8x16.as_vec(),
            "w_4x4" => self.w_4x4.as_vec(),
            "b_8" => self.b_8.as_vec(),
            "s_1" => self.s_1.as_vec(),
            _ => panic!("MarsModel has no parameter {name:?} (it has {MARS_PARAM_NAMES:?})"),
        }
    }
}
