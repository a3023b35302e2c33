//! Values near `f32::MAX` give finite outputs whenever the true output is finite: the
//! kernel accumulates unnormalised sums, and a block whose sum overflows is redone with
//! its weights scaled down. Every level and emulated width, against the reference.

mod common;
use common::{Case, Rng, budget, check_all};
use qkv::{Mask, Shape};

/// Cases whose V rows hold values near `f32::MAX`: all equal, of both signs, one huge key
/// among ordinary ones, and a prefill shape past several blocks of rows, keys and columns.
fn huge_cases() -> Vec<Case> {
    let shapes = budget(
        vec![
            Shape::new(1, 1, 2, 4),
            Shape::new(2, 3, 37, 16).gqa(4, 2),
            Shape::new(1, 60, 130, 20).with_v_dim(140),
        ],
        vec![Shape::new(1, 1, 2, 4), Shape::new(1, 5, 9, 3)],
    );
    let mut rng = Rng(91);
    let mut all = Vec::new();
    for shape in shapes {
        for pattern in 0..3 {
            let mut case = Case::dense(&mut rng, shape, 1.0);
            let n = case.v.len();
            for (i, x) in case.v.iter_mut().enumerate() {
                *x = match pattern {
                    0 => 3.0e38,
                    1 if i % 2 == 0 => 3.0e38,
                    1 => -2.9e38,
                    _ if i < n / 3 => f32::MAX,
                    _ => *x,
                };
            }
            all.push(case.clone());
            case.mask = Mask::causal();
            all.push(case);
        }
    }
    all
}

#[test]
fn values_near_f32_max_give_finite_outputs_at_every_level() {
    for case in huge_cases() {
        check_all(&case);
    }
}

#[test]
fn an_infinite_value_still_gives_an_infinite_output() {
    let mut rng = Rng(92);
    let mut case = Case::dense(&mut rng, Shape::new(1, 2, 5, 4), 1.0);
    case.v.fill(1.0e38);
    case.v[0] = f32::INFINITY;
    check_all(&case);
}
