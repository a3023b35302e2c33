//! Plans from C (`qkv_plan_make`, `qkv_plan_run_task`, `qkv_plan_finish`): builds the static
//! library with the `capi` feature (the build of tests/capi.rs), compiles
//! `tests/c/plan_test.c`, which runs a plan's tasks on two pthreads, and runs it.

#[path = "c/harness.rs"]
mod harness;

use harness::*;

#[test]
#[cfg_attr(miri, ignore = "runs cargo and a C compiler")]
fn c_plan_tasks_on_two_pthreads_match_the_one_shot_call() {
    run_c_test("plan_test", &["-lpthread", "-lm"]);
}
