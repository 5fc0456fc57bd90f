//! The `train_digits` example trains: a candle MLP stepped by the DSL's AdamW on the embedded
//! digits data learns (loss falls, held-out accuracy well above chance).

#[allow(dead_code)]
#[path = "../../examples/train_digits.rs"]
mod example;

#[test]
fn the_candle_mlp_learns_the_digits() {
    let r = example::train(8).unwrap();
    // chance is 10 %; an MLP of this size reaches about 95 % on this split
    assert!(r.test_accuracy >= 0.90, "{r:?}");
    assert!(r.last_loss < 0.5 * r.first_loss, "{r:?}");
    assert!(r.first_loss.is_finite() && r.last_loss.is_finite(), "{r:?}");
}
