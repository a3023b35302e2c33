//! A Rust firmware program for a Cortex-M4F (thumbv7em-none-eabihf) that links qkv as a
//! `no_std` rlib: its own vector table, reset handler and semihosting, no runtime crate. Run
//! by .ci/firmware.sh under `qemu-system-arm -M mps2-an386 -semihosting -icount shift=0`,
//! linked with tests/c/firmware.ld; prints the same lines as tests/c/firmware.c, which
//! src/bin/check.rs compares with the reference.
#![no_std]
#![no_main]

use core::arch::asm;
use core::hint::black_box;
use core::ops::Range;
use core::ptr;

use qkv::plan::{self, Plan};
use qkv::stream::Stream;
use qkv::{Error, Level, Params};
use qkv_firmware::{CALIBRATION_INSTRUCTIONS, GQA_SPLIT, SEEDS, SENTINEL, fill, lens, params};

// ---- Semihosting (ARM DUI 0471): bkpt 0xAB with the operation in r0, its argument in r1.
const SYS_WRITE0: u32 = 0x04;
const SYS_EXIT: u32 = 0x18;
const ADP_STOPPED_APPLICATION_EXIT: u32 = 0x20026;
const ADP_STOPPED_RUNTIME_ERROR: u32 = 0x20023;

/// # Safety
/// `arg` must be what operation `op` expects (a NUL-terminated string for SYS_WRITE0).
unsafe fn semihost(op: u32, arg: usize) -> u32 {
    let mut r0 = op;
    // SAFETY: the debugger (qemu -semihosting) handles the breakpoint and reads only what the
    // caller vouches for; it returns in r0 and changes nothing else.
    unsafe { asm!("bkpt 0xAB", inout("r0") r0, in("r1") arg, options(nostack)) };
    r0
}

fn exit(ok: bool) -> ! {
    let reason = if ok {
        ADP_STOPPED_APPLICATION_EXIT
    } else {
        ADP_STOPPED_RUNTIME_ERROR
    };
    // SAFETY: on AArch32 SYS_EXIT takes the reason code itself in r1.
    unsafe { semihost(SYS_EXIT, reason as usize) };
    loop {
        core::hint::spin_loop();
    }
}

/// One output line, written with a single SYS_WRITE0.
struct Line {
    buf: [u8; 1024],
    len: usize,
}

impl Line {
    const fn new() -> Line {
        Line {
            buf: [0; 1024],
            len: 0,
        }
    }

    fn str(&mut self, s: &str) -> &mut Line {
        for &b in s.as_bytes() {
            if self.len < self.buf.len() - 2 {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
        self
    }

    fn hex(&mut self, x: u32) -> &mut Line {
        let mut digits = [0u8; 8];
        for (i, d) in digits.iter_mut().enumerate() {
            *d = b"0123456789abcdef"[(x >> (28 - 4 * i)) as usize & 0xF];
        }
        self.str(core::str::from_utf8(&digits).unwrap_or("?"))
    }

    fn dec(&mut self, mut x: usize) -> &mut Line {
        let mut digits = [0u8; 20];
        let mut n = digits.len();
        loop {
            n -= 1;
            digits[n] = b'0' + (x % 10) as u8;
            x /= 10;
            if x == 0 {
                break;
            }
        }
        self.str(core::str::from_utf8(&digits[n..]).unwrap_or("?"))
    }

    fn floats(&mut self, x: &[f32]) -> &mut Line {
        for &f in x {
            self.str(" ").hex(f.to_bits());
        }
        self
    }

    fn flush(&mut self) {
        self.buf[self.len] = b'\n';
        self.buf[self.len + 1] = 0;
        // SAFETY: buf holds a NUL-terminated string (len ≤ buf.len() - 2).
        unsafe { semihost(SYS_WRITE0, self.buf.as_ptr() as usize) };
        self.len = 0;
    }
}

// ---- Measuring: see tests/c/firmware.c (MEASURE) for the method.
const SYST_CSR: *mut u32 = 0xE000_E010 as *mut u32;
const SYST_RVR: *mut u32 = 0xE000_E014 as *mut u32;
const SYST_CVR: *mut u32 = 0xE000_E018 as *mut u32;
const PAINT: u32 = 0xA5A5_A5A5;
const PAINT_BYTES: usize = 256 * 1024;

unsafe extern "C" {
    static mut _sidata: u32;
    static mut _sdata: u32;
    static mut _edata: u32;
    static mut _sbss: u32;
    static mut _ebss: u32;
}

fn ticks() -> u32 {
    // SAFETY: SYST_CVR is the SysTick current value register of every Cortex-M.
    unsafe { ptr::read_volatile(SYST_CVR) }
}

struct Sample {
    status: usize,
    stack: usize,
    ticks: u32,
}

/// Runs `call` with the stack below the stack pointer painted, and returns what it returned
/// with the bytes of stack it used (below the stack pointer here, which is the one at the
/// call once `call` is inlined: `#[inline(always)]`, and the callee is reached through a
/// function pointer behind `black_box`, so none of it is inlined here) and the ticks it took.
#[inline(always)]
fn measure(call: impl FnOnce() -> Result<(), Error>) -> Sample {
    let sp: usize;
    // SAFETY: reads the stack pointer.
    unsafe { asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags)) };
    let lo = (sp - PAINT_BYTES).max(&raw const _ebss as usize);
    // SAFETY: lo..sp is RAM above .bss and below the stack pointer, which nothing uses: no
    // interrupt is enabled. Written and read in asm, outside any Rust allocation.
    unsafe {
        asm!(
            "2: cmp {p}, {end}",
            "bhs 3f",
            "str {pat}, [{p}], #4",
            "b 2b",
            "3:",
            p = inout(reg) lo => _, end = in(reg) sp, pat = in(reg) PAINT,
            options(nostack),
        )
    };
    let t0 = ticks();
    let result = call();
    let t1 = ticks();
    let mut deepest = lo;
    // SAFETY: as above; only reads.
    unsafe {
        asm!(
            "2: cmp {p}, {end}",
            "bhs 3f",
            "ldr {w}, [{p}]",
            "cmp {w}, {pat}",
            "bne 3f",
            "adds {p}, #4",
            "b 2b",
            "3:",
            p = inout(reg) deepest, end = in(reg) sp, pat = in(reg) PAINT, w = out(reg) _,
            options(nostack, readonly),
        )
    };
    Sample {
        status: match result {
            Ok(()) => 0,
            Err(Error::HeadsNotDivisible { .. }) => 2, // QKV_ERR_HEADS_NOT_DIVISIBLE
            Err(_) => 255,
        },
        stack: sp - deepest,
        ticks: t0.wrapping_sub(t1) & 0xFF_FFFF,
    }
}

// The measured functions, called through pointers behind `black_box` so that none of them is
// inlined into `measure`'s frame.
type AttentionFn =
    fn(&Params, &[f32], &[f32], &[f32], &mut [f32], Option<&mut [f32]>) -> Result<(), Error>;
type PartialFn =
    fn(&Params, &[f32], &[f32], &[f32], Range<usize>, &mut [f32], &mut [f32]) -> Result<(), Error>;
type UpdateFn<'p, 's> =
    fn(&mut Stream<'p, 's>, &[f32], &[f32], &[f32], Range<usize>) -> Result<(), Error>;
type UpdateInFn<'p, 's> = fn(
    &mut Stream<'p, 's>,
    &mut [f32],
    &[f32],
    &[f32],
    &[f32],
    Range<usize>,
) -> Result<(), Error>;
type PartialInFn = fn(
    Level,
    &mut [f32],
    &Params,
    &[f32],
    &[f32],
    &[f32],
    Range<usize>,
    &mut [f32],
    &mut [f32],
) -> Result<(), Error>;
type FinishFn<'p, 's> =
    fn(&mut Stream<'p, 's>, &mut [f32], Option<&mut [f32]>) -> Result<(), Error>;
type MergeFn = fn(&Params, &mut [f32], &mut [f32], &[f32], &[f32]) -> Result<(), Error>;
type RunTaskFn =
    fn(Level, Plan, &Params, &[f32], &[f32], &[f32], usize, &mut [f32]) -> Result<(), Error>;
type RunTaskInFn = fn(
    Level,
    &mut [f32],
    Plan,
    &Params,
    &[f32],
    &[f32],
    &[f32],
    usize,
    &mut [f32],
) -> Result<(), Error>;
type PlanFinishFn =
    fn(Plan, &Params, &[f32], &mut [f32], Option<&mut [f32]>) -> Result<(), Error>;
type AttentionInFn = fn(
    &mut [f32],
    &Params,
    &[f32],
    &[f32],
    &[f32],
    &mut [f32],
    Option<&mut [f32]>,
) -> Result<(), Error>;

const MAX_Q: usize = 8 * 5 * 64;
const MAX_KV: usize = 2 * 37 * 64;
const MAX_ROWS: usize = 8 * 5;
const MAX_STATE: usize = MAX_ROWS * (3 + 2 * 64);
/// Floats of a plan's partials: two key splits of the GQA case (it has one).
const MAX_PARTIAL: usize = MAX_ROWS * (64 + 1) * 2;
/// Floats of the caller-owned workspace: `qkv::workspace_len` of the largest case.
const MAX_WORKSPACE: usize = 8192;

struct Buffers {
    q: [f32; MAX_Q],
    k: [f32; MAX_KV],
    v: [f32; MAX_KV],
    out: [f32; MAX_Q],
    lse: [f32; MAX_ROWS],
    out_b: [f32; MAX_Q],
    lse_b: [f32; MAX_ROWS],
    state: [f32; MAX_STATE],
    partial: [f32; MAX_PARTIAL],
    workspace: [f32; MAX_WORKSPACE],
}

static mut BUFFERS: Buffers = Buffers {
    q: [0.0; MAX_Q],
    k: [0.0; MAX_KV],
    v: [0.0; MAX_KV],
    out: [0.0; MAX_Q],
    lse: [0.0; MAX_ROWS],
    out_b: [0.0; MAX_Q],
    lse_b: [0.0; MAX_ROWS],
    state: [0.0; MAX_STATE],
    partial: [0.0; MAX_PARTIAL],
    workspace: [0.0; MAX_WORKSPACE],
};

impl Buffers {
    /// The inputs of `p` from the LCG, and every output set to `SENTINEL`.
    fn prepare(&mut self, p: &Params) {
        let [nq, nk, nv, _, _] = lens(&p.shape);
        fill(&mut self.q[..nq], SEEDS[0]);
        fill(&mut self.k[..nk], SEEDS[1]);
        fill(&mut self.v[..nv], SEEDS[2]);
        self.out.fill(SENTINEL);
        self.lse.fill(SENTINEL);
    }

    /// Prints `out` and `lse` as the result of `case`.
    fn print(&self, line: &mut Line, case: &str, p: &Params) {
        let [_, _, _, nout, nlse] = lens(&p.shape);
        for row in self.out[..nout].chunks(p.shape.v_dim) {
            line.str("out ").str(case).floats(row).flush();
        }
        line.str("lse ").str(case).floats(&self.lse[..nlse]).flush();
    }
}

fn report(line: &mut Line, call: &str, case: &str, s: &Sample) {
    line.str("case ").str(call).str("/").str(case);
    line.str(" status ")
        .dec(s.status)
        .str(" stack ")
        .dec(s.stack);
    line.str(" ticks ").dec(s.ticks as usize).flush();
}

/// `qkv::attention` on one case: the sample, then the outputs (or, for `error`, whether they
/// are untouched).
fn run_attention(line: &mut Line, b: &mut Buffers, case: &str) -> bool {
    let Some(p) = params(case) else { return false };
    b.prepare(&p);
    let Buffers {
        q, k, v, out, lse, ..
    } = b;
    let attention = black_box(qkv::attention as AttentionFn);
    let sample = measure(|| attention(&p, q, k, v, out, Some(lse)));
    report(line, "attention", case, &sample);
    if case != "error" {
        b.print(line, case, &p);
        // The same call in a caller-owned workspace of the size that runs at full speed.
        b.prepare(&p);
        let Buffers {
            q,
            k,
            v,
            out,
            lse,
            workspace,
            ..
        } = b;
        let ws = &mut workspace[..qkv::workspace_len(&p).min(MAX_WORKSPACE)];
        let attention_in = black_box(qkv::attention_in as AttentionInFn);
        let sample = measure(|| attention_in(ws, &p, q, k, v, out, Some(lse)));
        report(line, "attention_in", case, &sample);
        let name = if case == "gqa" { "gqa-in" } else { "tiny-in" };
        b.print(line, name, &p);
    } else {
        let untouched = b.out.iter().chain(&b.lse).all(|&x| x == SENTINEL);
        line.str("untouched ")
            .str(case)
            .str(if untouched { " 1" } else { " 0" })
            .flush();
    }
    true
}

/// Split-KV on the GQA shape: two partials merged, without and with a caller-owned
/// workspace.
fn run_split(line: &mut Line, b: &mut Buffers) -> bool {
    let Some(p) = params("gqa") else { return false };
    let n = p.shape.kv_len;
    let partial = black_box(qkv::split::partial as PartialFn);
    let partial_in = black_box(qkv::split::partial_in as PartialInFn);
    let merge = black_box(qkv::split::merge as MergeFn);
    for (call, case) in [("partial", "gqa-split"), ("partial_in", "gqa-ws-split")] {
        b.prepare(&p);
        let Buffers {
            q,
            k,
            v,
            out,
            lse,
            out_b,
            lse_b,
            workspace,
            ..
        } = b;
        let ws = &mut workspace[..qkv::workspace_len(&p).min(MAX_WORKSPACE)];
        for (keys, out, lse) in [(0..GQA_SPLIT, &mut *out, &mut *lse), (GQA_SPLIT..n, out_b, lse_b)] {
            let sample = match call {
                "partial" => measure(|| partial(&p, q, k, v, keys, out, lse)),
                _ => measure(|| partial_in(Level::Detect, ws, &p, q, k, v, keys, out, lse)),
            };
            report(line, call, "gqa", &sample);
        }
        let sample = measure(|| merge(&p, out, lse, out_b, lse_b));
        report(line, "merge", "gqa", &sample);
        b.print(line, case, &p);
    }
    true
}

/// Streaming on the GQA shape: two chunks of keys, without and with a caller-owned
/// workspace.
fn run_stream(line: &mut Line, b: &mut Buffers) -> bool {
    let Some(p) = params("gqa") else { return false };
    let (n, hd, vd) = (p.shape.kv_len, p.shape.head_dim, p.shape.v_dim);
    for (call, case) in [("stream_update", "gqa-stream"), ("stream_update_in", "gqa-ws-stream")] {
        b.prepare(&p);
        let Buffers {
            q,
            k,
            v,
            out,
            lse,
            state,
            workspace,
            ..
        } = b;
        let ws = &mut workspace[..qkv::workspace_len(&p).min(MAX_WORKSPACE)];
        let Some(state) = state.get_mut(..Stream::state_len(&p.shape)) else {
            return false;
        };
        let Ok(mut stream) = Stream::new(&p, state) else {
            return false;
        };
        let update = black_box(Stream::update as UpdateFn<'_, '_>);
        let update_in = black_box(Stream::update_in as UpdateInFn<'_, '_>);
        let finish = black_box(Stream::finish as FinishFn<'_, '_>);
        let (k2, v2) = (&k[GQA_SPLIT * hd..], &v[GQA_SPLIT * vd..]);
        for (k, v, keys) in [(&k[..], &v[..], 0..GQA_SPLIT), (k2, v2, GQA_SPLIT..n)] {
            let sample = match call {
                "stream_update" => measure(|| update(&mut stream, q, k, v, keys)),
                _ => measure(|| update_in(&mut stream, ws, q, k, v, keys)),
            };
            report(line, call, "gqa", &sample);
        }
        let sample = measure(|| finish(&mut stream, out, Some(lse)));
        report(line, "stream_finish", "gqa", &sample);
        b.print(line, case, &p);
    }
    true
}

/// A plan for two threads on the GQA shape, its tasks run one after another (as one thread
/// would), without and with a workspace, each time merged by `plan::finish`.
fn run_plan(line: &mut Line, b: &mut Buffers) -> bool {
    let Some(p) = params("gqa") else { return false };
    let pl = Plan::auto(&p.shape, 2);
    let partial_len = pl.partial_len(&p.shape);
    if partial_len > MAX_PARTIAL {
        return false;
    }
    let run_task = black_box(plan::run_task as RunTaskFn);
    let run_task_in = black_box(plan::run_task_in as RunTaskInFn);
    let finish = black_box(plan::finish as PlanFinishFn);
    for (call, case) in [("plan_run_task", "gqa-plan"), ("plan_run_task_ws", "gqa-ws-plan")] {
        b.prepare(&p);
        let Buffers {
            q,
            k,
            v,
            out,
            lse,
            workspace,
            partial,
            ..
        } = b;
        let ws = &mut workspace[..qkv::workspace_len(&p).min(MAX_WORKSPACE)];
        let partial = &mut partial[..partial_len];
        for task in 0..pl.tasks(&p.shape) {
            let Some(region) = pl.task_partial(&p.shape, task) else {
                return false;
            };
            let part = &mut partial[region];
            let sample = match call {
                "plan_run_task" => {
                    measure(|| run_task(Level::Detect, pl, &p, q, k, v, task, part))
                }
                _ => measure(|| run_task_in(Level::Detect, ws, pl, &p, q, k, v, task, part)),
            };
            report(line, call, "gqa", &sample);
        }
        let sample = measure(|| finish(pl, &p, partial, out, Some(lse)));
        report(line, "plan_finish", "gqa", &sample);
        b.print(line, case, &p);
    }
    true
}

/// Writes one word 1024 bytes below the stack pointer it is called with and nothing else:
/// `measure` must report 1024 bytes (the host checks), which checks the painting and the scan.
#[unsafe(naked)]
extern "C" fn touch_1k() {
    core::arch::naked_asm!(
        "movs r0, #0",
        "sub sp, sp, #1024",
        "str r0, [sp]",
        "add sp, sp, #1024",
        "bx lr"
    )
}

fn stack_selftest(line: &mut Line) {
    let touch = black_box(touch_1k as extern "C" fn());
    let sample = measure(|| {
        touch();
        Ok(())
    });
    report(line, "selftest", "stack", &sample);
}

/// Times a loop of exactly `CALIBRATION_INSTRUCTIONS` instructions (subs, bne).
fn calibrate(line: &mut Line) {
    let t0 = ticks();
    // SAFETY: a register-only loop.
    unsafe {
        asm!("2: subs {n}, #1", "bne 2b", n = inout(reg) CALIBRATION_INSTRUCTIONS as u32 / 2 => _,
            options(nomem, nostack))
    };
    let t1 = ticks();
    line.str("calib ")
        .dec((t0.wrapping_sub(t1) & 0xFF_FFFF) as usize);
    line.str(" ").dec(CALIBRATION_INSTRUCTIONS as usize).flush();
}

#[inline(never)]
fn main() -> bool {
    // SAFETY: the SysTick registers of every Cortex-M: reload at the 24-bit maximum, enabled
    // on the core clock, no interrupt.
    unsafe {
        ptr::write_volatile(SYST_RVR, 0xFF_FFFF);
        ptr::write_volatile(SYST_CVR, 0);
        ptr::write_volatile(SYST_CSR, 5);
    }
    let mut line = Line::new();
    let buffers = &raw mut BUFFERS;
    // SAFETY: the only reference to BUFFERS, taken once on this single thread.
    let b = unsafe { &mut *buffers };
    calibrate(&mut line);
    stack_selftest(&mut line);
    let mut ok = true;
    for case in ["tiny", "gqa", "error"] {
        ok &= run_attention(&mut line, b, case);
    }
    ok &= run_split(&mut line, b);
    ok &= run_stream(&mut line, b);
    ok &= run_plan(&mut line, b);
    line.str("done").flush();
    ok
}

/// Copies .data, zeroes .bss, enables the FPU, runs `main` and exits qemu.
///
/// # Safety
/// Only the reset vector calls it, once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn Reset_Handler() {
    // SAFETY: the linker script's symbols bound .data (in RAM, loaded at _sidata) and .bss;
    // no Rust code has run yet, so nothing reads them while they are written. Volatile so
    // the loops are not turned into memcpy/memset calls before the FPU is on.
    unsafe {
        let (mut src, mut dst) = (&raw const _sidata, &raw mut _sdata);
        while dst < &raw mut _edata {
            ptr::write_volatile(dst, ptr::read_volatile(src));
            (src, dst) = (src.add(1), dst.add(1));
        }
        let mut dst = &raw mut _sbss;
        while dst < &raw mut _ebss {
            ptr::write_volatile(dst, 0);
            dst = dst.add(1);
        }
        // CPACR: full access to CP10 and CP11 (the FPU) before any float instruction.
        let cpacr = 0xE000_ED88 as *mut u32;
        ptr::write_volatile(cpacr, ptr::read_volatile(cpacr) | 0xF << 20);
        asm!("dsb", "isb", options(nostack));
    }
    exit(main());
}

/// A fault (or any other exception) ends the run with an error instead of hanging qemu.
unsafe extern "C" fn default_handler() {
    exit(false);
}

/// Reset and the 14 other core exceptions; tests/c/firmware.ld puts the initial stack pointer
/// first.
#[unsafe(link_section = ".isr_vector")]
#[used]
static VECTORS: [Option<unsafe extern "C" fn()>; 15] = {
    let d = Some(default_handler as unsafe extern "C" fn());
    [
        Some(Reset_Handler),
        d,
        d,
        d,
        d,
        d,
        None,
        None,
        None,
        None,
        d,
        d,
        None,
        d,
        d,
    ]
};

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    exit(false)
}
