//! Distributed checkpoints: saved on one rank count, loaded on another, training goes on bit
//! for bit as if it had never stopped.

use crate::common;

use common::*;
use optim_dist::checkpoint::{Manifest, MANIFEST};
use optim_dist::{Communicator, DistOptions, Distributed, ShardOptions, ThreadComm};
use optim_dsl::prelude::*;
use optim_dsl::zoo::{AdamW, AdamWConfig, Muon, MuonConfig};

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("optim-dist-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Train `first` steps on `save_ranks`, save, load on `load_ranks`, train to `total`; compare
/// every rank's final parameters with the single-process reference of `load_ranks`' mean
/// after the switch. (The ranks' gradients change at the switch, so the reference switches too.)
fn resume<O>(
    make: impl Fn() -> O + Sync,
    model: &Model,
    save_ranks: usize,
    load_ranks: usize,
    opts: DistOptions,
    tag: &str,
) where
    O: DslOptimizer<f32> + Default,
{
    let (first, total) = (3, 6);
    let dir = tmpdir(tag);
    let saved = ThreadComm::run(save_ranks, |comm| {
        let mut d = Distributed::with_options(make(), comm, opts);
        let (h, r) = run_steps(&mut d, model, 0..first, init(model), no_hook);
        assert!(r.iter().all(Result::is_ok), "{r:?}");
        d.save_checkpoint(&dir).unwrap();
        h.last().unwrap().clone()
    });
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(dir.join(MANIFEST)).unwrap()).unwrap();
    assert_eq!((manifest.world, manifest.step), (save_ranks, first as u64));
    assert_eq!(manifest.files.len(), save_ranks);

    let resumed = ThreadComm::run(load_ranks, |comm| {
        let mut d = Distributed::with_options(make(), comm, opts);
        d.load_checkpoint(&dir).unwrap();
        assert_eq!(d.inner().opt_state().step, first as u64);
        let (h, r) = run_steps(&mut d, model, first..total, saved[0].clone(), no_hook);
        assert!(r.iter().all(Result::is_ok), "{r:?}");
        (h.last().unwrap().clone(), d.comm().rank())
    });

    // Reference: steps 0..first with save_ranks' mean, then first..total with load_ranks' mean.
    let mut reference_opt = make();
    let mut params = init(model);
    for step in 0..total {
        let ranks = if step < first { save_ranks } else { load_ranks };
        let means: Vec<Vec<f32>> = (0..model.len())
            .map(|p| {
                ordered_mean(
                    &(0..ranks)
                        .map(|r| grad(model, r, step, p))
                        .collect::<Vec<_>>(),
                )
            })
            .collect();
        let mut slices = param_slices(model, &mut params, &means);
        reference_opt.update_slices(&mut slices).unwrap();
    }
    for (p, rank) in &resumed {
        assert_bits(
            p,
            &params,
            model,
            &format!("{tag}: rank {rank} of {load_ranks}"),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn muon() -> Muon<f32> {
    Muon::new(MuonConfig {
        lr: 0.02.into(),
        adam_lr: 3e-3.into(),
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn save_on_4_load_on_2_muon() {
    resume(
        muon,
        &mixed_model(),
        4,
        2,
        DistOptions::default(),
        "muon-4-2",
    );
}

#[test]
fn save_on_2_load_on_3_and_on_1_muon() {
    resume(
        muon,
        &mixed_model(),
        2,
        3,
        DistOptions::default(),
        "muon-2-3",
    );
    resume(
        muon,
        &mixed_model(),
        2,
        1,
        DistOptions::default(),
        "muon-2-1",
    );
}

#[test]
fn split_parameters_are_cut_and_joined_on_reshard() {
    // `big` is split into 4 row blocks at save and 3 (different boundaries) at load.
    let model: Model = vec![("big", vec![48, 40]), ("small", vec![8, 5])];
    let opts = DistOptions {
        shard: ShardOptions {
            min_split_elems: 64,
            allow_split: true,
        },
        ..Default::default()
    };
    let make = || {
        AdamW::<f32>::new(AdamWConfig {
            lr: 1e-2.into(),
            amsgrad: true,
            ..Default::default()
        })
        .unwrap()
    };
    resume(make, &model, 4, 3, opts, "split-4-3");
    resume(make, &model, 3, 2, opts, "split-3-2");
}

#[test]
fn a_corrupt_rank_file_fails_on_every_rank_and_changes_nothing() {
    let model = mixed_model();
    let dir = tmpdir("corrupt");
    ThreadComm::run(2, |comm| {
        let mut d = Distributed::new(muon(), comm);
        run_steps(&mut d, &model, 0..2, init(&model), no_hook);
        d.save_checkpoint(&dir).unwrap();
    });
    let f = dir.join("rank-00001.ckpt");
    let mut bytes = std::fs::read(&f).unwrap();
    let k = bytes.len() - 3;
    bytes[k] ^= 0x40;
    std::fs::write(&f, bytes).unwrap();
    let out = ThreadComm::run(2, |comm| {
        let mut d = Distributed::new(muon(), comm);
        run_steps(&mut d, &model, 0..1, init(&model), no_hook);
        let before = d.inner().opt_state().clone();
        let r = d.load_checkpoint(&dir);
        (r, before == *d.inner().opt_state())
    });
    for (r, unchanged) in &out {
        let e = r.clone().unwrap_err().to_string();
        assert!(
            e.contains("rank-00001.ckpt") && e.contains("checksum"),
            "{e}"
        );
        assert!(unchanged);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn saving_before_the_first_step_is_an_error_on_every_rank() {
    let dir = tmpdir("early");
    let out = ThreadComm::run(2, |comm| {
        Distributed::new(muon(), comm).save_checkpoint(&dir)
    });
    for r in out {
        assert!(r.unwrap_err().to_string().contains("no step"));
    }
}
