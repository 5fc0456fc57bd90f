//! Matrix primitives during a device step (`matrix::run` on a linked parameter state).
//!
//! `orthogonalize` runs on the device when the backend has GEMMs
//! ([`super::ns::orthogonalize_on`]) and the call has no batch axes. Every other primitive — and
//! `orthogonalize` on a backend without GEMMs or with batch axes (per slice) — runs on the host exactly as in a CPU step: its element-wise operands (input,
//! output, element-wise state and rotated states) are copied from the device into the host
//! state, the host primitive runs, what it wrote (output, state, rotated states) is copied
//! back, and the host copies are freed. Its own matrix state (Kronecker statistics and roots,
//! eigenbases, factored moments) lives on the host between steps, so eigendecompositions and
//! inverse roots run on the host in `f64`, amortised over their refresh interval.

use super::link::{DeviceLink, Loc};
use crate::matrix::{
    run_host, Call, MatView, MatrixWord, Orthogonalize, OrthogonalizeConfig, Phase, Primitive,
    Report, Site, Src,
};
use crate::{Float, ParamInfo, ParamState};
use std::any::{Any, TypeId};

fn loc(src: Src) -> Loc {
    match src {
        Src::Param => Loc::Param,
        Src::Grad => Loc::Grad,
        Src::Buf(k) => Loc::Slot(k),
        Src::Temp(t) => Loc::Temp(t),
    }
}

/// Host copies of device buffers lent to a host primitive, freed afterwards.
struct Fetched {
    slots: Vec<usize>,
    temps: Vec<usize>,
}

impl Fetched {
    fn slot<E: Float>(&mut self, link: &dyn DeviceLink<E>, ps: &mut ParamState<E>, k: usize) {
        if self.slots.contains(&k) || !link.resident(Loc::Slot(k)) {
            return;
        }
        if let Some(b) = ps.buffers.get_mut(k) {
            *b = link.download(Loc::Slot(k));
            self.slots.push(k);
        }
    }

    fn temp<E: Float>(&mut self, link: &dyn DeviceLink<E>, ps: &mut ParamState<E>, t: usize) {
        if self.temps.contains(&t) || !link.resident(Loc::Temp(t)) {
            return;
        }
        if let Some(b) = ps.temps.get_mut(t) {
            *b = link.download(Loc::Temp(t));
            self.temps.push(t);
        }
    }
}

/// `matrix::run` for a parameter linked to the device (see the [module docs](self)).
pub(crate) fn run_linked<E: Float, P: Primitive<E> + 'static>(
    link: &dyn DeviceLink<E>,
    cfg: &P::Config,
    phase: Phase,
    call: Call<'_>,
    ps: &mut ParamState<E>,
    info: ParamInfo<'_>,
) -> Report {
    // batched calls (`call.batch > 0`) run per slice on the host copies below
    if call.batch == 0 && TypeId::of::<P>() == TypeId::of::<Orthogonalize>() {
        let ns = (cfg as &dyn Any).downcast_ref::<OrthogonalizeConfig>();
        if let (Some(ns), Some(out)) = (ns, call.out) {
            let MatView { rows, cols, .. } = MatView::of(info.shape, Orthogonalize::VIEW);
            let input = loc(call.input);
            if link.resident(input)
                && link.resident(Loc::Temp(out))
                && link.orthogonalize(ns, input, out, rows, cols)
            {
                let report = Report::default();
                ps.matrix.record(&report);
                return report;
            }
        }
    }

    let mut fetched = Fetched {
        slots: Vec::new(),
        temps: Vec::new(),
    };
    let (mut param, mut grad) = (Vec::new(), Vec::new());
    match call.input {
        Src::Param => param = link.download(Loc::Param),
        Src::Grad => grad = link.download(Loc::Grad),
        Src::Buf(k) => fetched.slot(link, ps, k),
        Src::Temp(t) => fetched.temp(link, ps, t),
    }
    if let Some(t) = call.out {
        fetched.temp(link, ps, t);
    }
    for &k in call
        .state
        .iter()
        .chain(call.rotated)
        .chain(call.basis_q.iter())
    {
        fetched.slot(link, ps, k);
    }
    let site = Site {
        phase,
        call,
        param: &param,
        grad: &grad,
        info,
    };
    let report = run_host::<E, P>(cfg, site, ps);

    // what the primitive wrote goes back to the device; every host copy is freed
    let written_slots: Vec<usize> = call.state.iter().chain(call.rotated).copied().collect();
    for &k in &fetched.slots {
        if let Some(b) = ps.buffers.get_mut(k) {
            if written_slots.contains(&k) {
                link.upload(Loc::Slot(k), b);
            }
            *b = Vec::new();
        }
    }
    for &t in &fetched.temps {
        if let Some(b) = ps.temps.get_mut(t) {
            if call.out == Some(t) {
                link.upload(Loc::Temp(t), b);
            }
            *b = Vec::new();
        }
    }
    report
}
