//! The C-ABI check of split-KV and streaming (`src/capi/split.rs`, `src/capi/stream.rs`): `qkv_partial_f32`,
//! `qkv_merge_f32`, `qkv_stream_state_len`, `qkv_stream_init`, `qkv_stream_update` and
//! `qkv_stream_finish`, called the way C would, with the arbitrary descriptors of the `capi`
//! target (any `struct_size`, tails, unknown flags, mask and query position values, huge
//! sizes, strides and counts), NULL, misaligned and aliasing pointers, arbitrary key ranges,
//! short, long, unaligned and uninitialised stream states, and sessions of stream calls in any
//! order (init, updates with chunks of any size in any order, finish at any time, re-init).
//!
//! Every buffer handed over holds at least the length the documented pointer contract derives
//! for it, so the library may read (and, for outputs, write) all of it; a longer length is
//! only passed with a NULL pointer, where the call is refused before anything is read.
//!
//! Checked, for every call:
//! - the status is exactly the one the contract implies: first the C-level checks in the
//!   order `docs/c-api.md` documents (descriptor, then flags, query position and mask for
//!   the functions that use them, then each buffer's length, NULL and alignment in argument
//!   order, a reversed key range for `qkv_stream_update`, then aliasing of the written
//!   buffers), then the status of the same call through the Rust API (`split::partial`,
//!   `split::merge`, `Stream`) on slices of those lengths, with `Error::KeyRange` as
//!   `QKV_ERR_TOO_SHORT`;
//! - never `QKV_ERR_INTERNAL` (a caught panic);
//! - every byte of every buffer afterwards: on an error all unchanged (outputs and the stream
//!   state included), on `QKV_OK` bit for bit what the Rust call leaves in a copy of them.
//!
//! And, on problems with finite data in `±2` (bias also `-inf`) and a moderate scale:
//! - a partial over all keys, or a stream fed all keys in one chunk, is bit for bit the
//!   one-shot `qkv::attention` (documented);
//! - a partial over `a..b` merged with partials over `0..a` and `b..kv_len` (C calls), and a
//!   stream whose successful updates since its last init cover every key exactly once, match
//!   `qkv::reference` within `tolerance::merged_*_bound` and `tolerance::stream_*_bound`,
//!   with `score_abs` counting `|bias|` as `tolerance::output_bound` documents.

use core::mem::size_of;
use core::ptr;

use crate::bytes::Bytes;
use crate::capi_check::{
    DescArg, Drawn, MAX_BUF, MAX_LEN, MAX_WORK, SENTINEL, c_call, overlaps, quiet_panics,
    random_desc, work,
};
use qkv::capi::*;
use qkv::capi_split::*;
use qkv::stream::Stream;
use qkv::{Error, Layout, Mask, Params, Shape, Tensor, split};

/// The most floats a stream state is allocated with; a longer one is only passed as NULL.
const MAX_STATE: usize = 8192;
/// The most floats of full K or V kept for the reference comparison of a stream.
const MAX_FULL: usize = 1 << 14;

/// Every buffer of one case. Buffers never move once pushed, so pointers into them stay
/// valid; the expected outcome of a call is computed on a clone.
#[derive(Clone, Default)]
struct World {
    bufs: Vec<Vec<f32>>,
}

/// One pointer argument: which buffer it points into (at its start, or 1–3 bytes past it),
/// or NULL, and the number of floats the library takes it to hold.
#[derive(Clone, Copy, Debug)]
struct Arg {
    buf: usize,
    misalign: usize,
    null: bool,
    /// The count field for the descriptor (0: the extent).
    count: usize,
    /// `Err(())`: the length overflows or exceeds `PTRDIFF_MAX` bytes.
    len: Result<usize, ()>,
}

#[derive(Clone, Copy)]
enum Fill {
    /// An output: the sentinel, so that any write shows.
    Sentinel,
    /// Data: in ±2, or (untame) sometimes 0, −0, huge, subnormal, ±inf or NaN.
    Data(bool),
    /// Bias: data, and `-inf` one time in eight.
    Bias(bool),
}

fn value(b: &mut Bytes, tame: bool) -> f32 {
    let x = (b.u8() as f32 - 127.5) / 64.0;
    if tame || !b.chance(16) {
        return x;
    }
    b.pick(&[
        0.0,
        -0.0,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1e30,
        -3e38,
        f32::MAX,
        f32::MIN_POSITIVE / 4.0,
    ])
}

impl World {
    fn push(&mut self, b: &mut Bytes, len: usize, fill: Fill) -> usize {
        // One float of slack for a misaligned pointer.
        let buf = (0..len + 1)
            .map(|_| match fill {
                Fill::Sentinel => f32::from_bits(SENTINEL),
                Fill::Data(tame) => value(b, tame),
                Fill::Bias(tame) => {
                    if b.chance(32) {
                        f32::NEG_INFINITY
                    } else {
                        value(b, tame)
                    }
                }
            })
            .collect();
        self.bufs.push(buf);
        self.bufs.len() - 1
    }

    fn ptr(&self, a: &Arg) -> *const f32 {
        if a.null {
            return ptr::null();
        }
        self.bufs[a.buf]
            .as_ptr()
            .cast::<u8>()
            .wrapping_add(a.misalign)
            .cast()
    }

    fn mut_ptr(&mut self, a: &Arg) -> *mut f32 {
        self.ptr(a).cast_mut()
    }

    /// What the library sees of an input that passed the C checks.
    fn input(&self, a: &Arg) -> &[f32] {
        match a.len {
            Ok(0) | Err(()) => &[],
            Ok(n) => &self.bufs[a.buf][..n],
        }
    }

    /// Takes an output that passed the C checks out of the world (put it back with `put`).
    fn take(&mut self, a: &Arg) -> Vec<f32> {
        match a.len {
            Ok(0) | Err(()) => vec![],
            Ok(_) => core::mem::take(&mut self.bufs[a.buf]),
        }
    }

    fn put(&mut self, a: &Arg, v: Vec<f32>) {
        if matches!(a.len, Ok(n) if n > 0) {
            self.bufs[a.buf] = v;
        }
    }

    fn bits(&self) -> Vec<Vec<u32>> {
        self.bufs
            .iter()
            .map(|b| b.iter().map(|x| x.to_bits()).collect())
            .collect()
    }
}

/// A count field as the `capi` target draws it: 0 (use the extent) or explicit, sometimes
/// beyond `PTRDIFF_MAX`; in tame cases almost always 0 or the extent.
fn count(b: &mut Bytes, extent: Option<usize>, tame: bool) -> usize {
    if tame && b.chance(240) {
        return if b.chance(128) {
            0
        } else {
            extent.unwrap_or(0)
        };
    }
    match b.below(8) {
        0..=3 => 0,
        4 => MAX_LEN + 1 + b.below(4),
        5 => usize::MAX - b.below(2),
        _ => b.range(1, 300),
    }
}

/// A new argument of `count` (0: `extent`) floats, pointing to a fresh buffer, or NULL or
/// misaligned now and then (rarely when tame).
fn arg(b: &mut Bytes, w: &mut World, count: usize, extent: Option<usize>, fill: Fill) -> Arg {
    arg_up_to(b, w, count, extent, fill, MAX_BUF)
}

/// [`arg`] with its count drawn first by [`count`].
fn counted_arg(b: &mut Bytes, w: &mut World, extent: Option<usize>, tame: bool, fill: Fill) -> Arg {
    let c = count(b, extent, tame);
    arg(b, w, c, extent, fill)
}

/// The bias argument, when `with_bias`.
fn bias_arg(b: &mut Bytes, w: &mut World, r: &Drawn, with_bias: bool, tame: bool) -> Option<Arg> {
    let extent = r.extent(Tensor::Bias);
    with_bias.then(|| counted_arg(b, w, extent, tame, Fill::Bias(tame)))
}

/// Sets the descriptor's `bias` and `bias_count` from `bias`, and returns it unless its
/// pointer is NULL: a NULL bias pointer means none, whatever its length.
fn attach_bias(d: &mut QkvDesc, w: &World, bias: Option<Arg>) -> Option<Arg> {
    d.bias = bias.as_ref().map_or(ptr::null(), |a| w.ptr(a));
    d.bias_count = bias.as_ref().map_or(0, |a| a.count);
    bias.filter(|a| !w.ptr(a).is_null())
}

/// [`arg`], with buffers of up to `cap` floats.
fn arg_up_to(
    b: &mut Bytes, w: &mut World, count: usize, extent: Option<usize>, fill: Fill, cap: usize,
) -> Arg {
    let len = match count {
        0 => extent.ok_or(()),
        n => Ok(n),
    }
    .and_then(|n| if n > MAX_LEN { Err(()) } else { Ok(n) });
    let tame = matches!(fill, Fill::Data(true) | Fill::Bias(true));
    let odd = if tame { b.chance(8) } else { b.chance(32) };
    let (mut null, misalign) = match (odd, b.below(2)) {
        (false, _) => (false, 0),
        (true, 0) => (true, 0),
        (true, _) => (false, b.range(1, 3)),
    };
    // A length no buffer here holds is only passed where nothing is read: too long for
    // `PTRDIFF_MAX` (refused first) or NULL (refused next).
    let alloc = match len {
        Ok(n) if n <= cap => n,
        Ok(_) => {
            null = true;
            0
        }
        Err(()) => 0,
    };
    let buf = w.push(b, alloc, fill);
    Arg {
        buf,
        misalign,
        null,
        count,
        len,
    }
}

/// Points `a` at the start of `host`'s buffer, if it is long enough.
fn alias(w: &World, a: &mut Arg, host: &Arg) {
    if let Ok(n) = a.len
        && w.bufs[host.buf].len() > n
    {
        (a.buf, a.null, a.misalign) = (host.buf, false, 0);
    }
}

/// The C-level status of a pointer argument, if it is refused.
fn refusal(w: &World, a: &Arg) -> Option<QkvStatus> {
    match a.len {
        Err(()) => Some(QKV_ERR_OVERFLOW),
        Ok(0) => None,
        Ok(_) if w.ptr(a).is_null() => Some(QKV_ERR_NULL_POINTER),
        Ok(_) if !w.ptr(a).is_aligned() => Some(QKV_ERR_MISALIGNED),
        Ok(_) => None,
    }
}

fn refusals(w: &World, args: &[&Arg]) -> Result<(), QkvStatus> {
    args.iter().find_map(|a| refusal(w, a)).map_or(Ok(()), Err)
}

/// `QKV_ERR_ALIASING` if a written buffer overlaps another written one or a read one.
fn aliasing(w: &World, writes: &[&Arg], reads: &[&Arg]) -> Result<(), QkvStatus> {
    let span = |a: &Arg| (w.ptr(a) as usize, *a.len.as_ref().unwrap_or(&0));
    for (n, a) in writes.iter().enumerate() {
        if writes[n + 1..]
            .iter()
            .chain(reads)
            .any(|x| overlaps(span(a), span(x)))
        {
            return Err(QKV_ERR_ALIASING);
        }
    }
    Ok(())
}

/// [`check_call`] for a stream call on `state`: the Rust side is `rust` on the state's
/// floats, taken out of the world for the call and put back after it.
fn check_stream_call(
    what: &str, d: &QkvDesc, w: &mut World, state: &Arg, pre: Result<(), QkvStatus>,
    rust: impl FnOnce(&mut World, &mut [f32]) -> Result<(), Error>,
    c: impl FnOnce(&mut World) -> QkvStatus,
) -> QkvStatus {
    let on_state = |w: &mut World| {
        let mut st = w.take(state);
        let sn = *state.len.as_ref().unwrap();
        let r = rust(w, &mut st[..sn]);
        w.put(state, st);
        rust_status(r)
    };
    check_call(what, d, w, pre, on_state, c)
}

fn rust_status(r: Result<(), Error>) -> QkvStatus {
    match r {
        Ok(()) => QKV_OK,
        Err(Error::KeyRange { .. }) => QKV_ERR_TOO_SHORT,
        Err(e) => error_status(e),
    }
}

/// Makes one C call on `w` and checks it: `pre` is the outcome of the C-level checks,
/// `rust` computes the Rust API's status on a copy of the world (and leaves there what the
/// call must leave), `c` makes the call. Returns the status.
fn check_call(
    what: &str, d: &QkvDesc, w: &mut World, pre: Result<(), QkvStatus>,
    rust: impl FnOnce(&mut World) -> QkvStatus, c: impl FnOnce(&mut World) -> QkvStatus,
) -> QkvStatus {
    let before = w.bits();
    let mut expect = w.clone();
    let want = match pre {
        Err(s) => s,
        Ok(()) => rust(&mut expect),
    };
    let want_bits = if want == QKV_OK {
        expect.bits()
    } else {
        before
    };
    let (got, panicked) = c_call(|| c(w));
    if show() {
        eprintln!("{what} status {got}");
    }
    assert!(
        !panicked && got != QKV_ERR_INTERNAL,
        "{what}: QKV_ERR_INTERNAL (a panic inside the C ABI; rerun with \
         QKV_FUZZ_SHOW_PANICS=1)\n{d:?}"
    );
    assert_eq!(
        got, want,
        "{what}: status {got}, the contract says {want}\n{d:?}"
    );
    let got_bits = w.bits();
    for (n, (g, e)) in got_bits.iter().zip(&want_bits).enumerate() {
        if let Some(at) = g.iter().zip(e).position(|(g, e)| g != e) {
            panic!(
                "{what} (status {got}): buffer {n} element {at} is {:#x}, expected {:#x}\n{d:?}",
                g[at], e[at]
            );
        }
    }
    got
}

/// Whether `QKV_FUZZ_SHOW_STATUS` is set: print each status and each comparison with the
/// reference or the one-shot call.
fn show() -> bool {
    static SHOW: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SHOW.get_or_init(|| std::env::var_os("QKV_FUZZ_SHOW_STATUS").is_some())
}

/// Whether the data and scale keep the scores well inside the `f32` contract.
fn tame_scale(r: &Drawn) -> bool {
    r.scale.is_none_or(|x| x.is_finite() && x.abs() <= 16.0)
}

/// Which bound a joined result is held to.
#[derive(Clone, Copy, Debug)]
enum Joined {
    /// Merges of this depth.
    Merged(usize),
    /// A stream of this many updates.
    Stream(usize),
}

/// Compares a joined result with the reference under the documented bound.
#[allow(clippy::too_many_arguments)]
fn close_to_reference(
    p: &Params, q: &[f32], k: &[f32], v: &[f32], out: &[f32], lse: &[f32], how: Joined, d: &QkvDesc,
) {
    let s = p.shape;
    if show() {
        eprintln!("{how:?} against the reference: {s:?}");
    }
    let rows = s.q_heads * s.q_len;
    let mut want = vec![0.0f32; out.len()];
    let mut want_lse = vec![0.0f32; rows];
    qkv::reference::attention(p, q, k, v, &mut want, Some(&mut want_lse))
        .expect("the reference accepts what the kernel accepted");
    let group = s.q_heads / s.kv_heads;
    let scale = p.scale().abs();
    for h in 0..s.q_heads {
        let g = h / group;
        for i in 0..s.q_len {
            let (mut score_abs, mut v_abs) = (0.0f32, 0.0f32);
            for j in (0..s.kv_len).filter(|&j| p.is_visible(i, j)) {
                let qr = &q[p.q.at(h, i)..][..s.head_dim];
                let kr = &k[p.k.at(g, j)..][..s.head_dim];
                let dot: f32 = qr.iter().zip(kr).map(|(a, b)| (a * b).abs()).sum();
                let bias = p.bias.map_or(0.0, |b| b.data[b.layout().at(h, i) + j]);
                let bias = if bias == f32::NEG_INFINITY {
                    0.0
                } else {
                    bias.abs()
                };
                score_abs = score_abs.max(scale * dot + bias);
                let vr = &v[p.v.at(g, j)..][..s.v_dim];
                v_abs = vr.iter().fold(v_abs, |m, x| m.max(x.abs()));
            }
            let w_lse = want_lse[h * s.q_len + i];
            let lse_abs = if w_lse.is_finite() {
                w_lse.abs() + 20.0
            } else {
                0.0
            };
            let (hd, kv) = (s.head_dim, s.kv_len);
            let (bound, lb) = match how {
                Joined::Merged(depth) => (
                    qkv::tolerance::merged_output_bound(score_abs, v_abs, hd, kv, lse_abs, depth),
                    qkv::tolerance::merged_lse_bound(score_abs, hd, kv, lse_abs, depth),
                ),
                Joined::Stream(chunks) => (
                    qkv::tolerance::stream_output_bound(score_abs, v_abs, hd, kv, lse_abs, chunks),
                    qkv::tolerance::stream_lse_bound(score_abs, hd, kv, lse_abs, chunks),
                ),
            };
            // NaN exactly where the reference has NaN; elsewhere within `bound` of it.
            let within = |w: f32, g: f32, bound: f32| {
                if w.is_nan() {
                    g.is_nan()
                } else {
                    w == g || (w - g).abs() <= bound
                }
            };
            let row = p.out.at(h, i);
            for c in 0..s.v_dim {
                let (w, g) = (want[row + c], out[row + c]);
                assert!(
                    within(w, g, bound),
                    "{how:?}: out[{h}][{i}][{c}] = {g}, reference {w}, bound {bound}\n{d:?}"
                );
            }
            let g_lse = lse[h * s.q_len + i];
            assert!(
                within(w_lse, g_lse, lb),
                "{how:?}: lse[{h}][{i}] = {g_lse}, reference {w_lse}, bound {lb}\n{d:?}"
            );
        }
    }
}

/// The one-shot call on the same problem; `(out, lse)` must equal `got` bit for bit.
fn same_as_one_shot(p: &Params, q: &[f32], k: &[f32], v: &[f32], got: (&[f32], &[f32])) {
    if show() {
        eprintln!("bit for bit against the one-shot call: {:?}", p.shape);
    }
    let mut out = vec![f32::from_bits(SENTINEL); got.0.len()];
    let mut lse = vec![f32::from_bits(SENTINEL); got.1.len()];
    qkv::attention(p, q, k, v, &mut out, Some(&mut lse)).expect("one-shot accepts");
    let bits = |x: &[f32]| x.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(&out),
        bits(got.0),
        "out differs from the one-shot call"
    );
    assert_eq!(
        bits(&lse),
        bits(got.1),
        "lse differs from the one-shot call"
    );
}

/// A key position for a range over `kv_len` keys: inside, at the ends, past the end, any.
fn position(b: &mut Bytes, kv_len: usize) -> usize {
    match b.below(10) {
        0 => 0,
        1 => kv_len,
        2 => kv_len.saturating_sub(b.below(3)),
        3 => kv_len.saturating_add(b.range(1, 2)),
        4 => b.u64() as usize,
        _ => b.range(0, kv_len.min(1 << 16)),
    }
}

fn key_range(b: &mut Bytes, kv_len: usize) -> (usize, usize) {
    let (x, y) = (position(b, kv_len), position(b, kv_len));
    if x > y && b.chance(224) {
        (y, x)
    } else {
        (x, y)
    }
}

/// Work of the kernel over `keys` keys for every row: as `capi_check::work`.
fn work_over(p: &Params, keys: usize) -> u128 {
    let mut sub = *p;
    sub.shape.kv_len = keys;
    work(&sub)
}

pub fn run(data: &[u8]) {
    quiet_panics();
    let b = &mut Bytes::new(data);
    match b.below(8) {
        0..=2 => partial_case(b),
        3 | 4 => merge_case(b),
        _ => stream_case(b),
    }
}

/// How a partial and a stream case start: a random descriptor, whether the data is tame
/// (finite, in ±2, with a moderate scale: the cases compared with the reference), and whether
/// there is a bias.
fn random_problem(b: &mut Bytes) -> (QkvDesc, Drawn, bool, bool) {
    let (d, r) = random_desc(b);
    let tame = b.chance(128) && tame_scale(&r);
    let with_bias = b.chance(80);
    (d, r, tame, with_bias)
}

/// `qkv_partial_f32` once; when it succeeds on tame data, the complementary partials and
/// their merges through the C ABI too, against the reference.
fn partial_case(b: &mut Bytes) {
    let (mut d, r, tame, with_bias) = random_problem(b);
    let s = r.shape;
    let w = &mut World::default();
    let [ext_q, ext_k, ext_v, ext_out, ext_lse] =
        [Tensor::Q, Tensor::K, Tensor::V, Tensor::Out, Tensor::Lse].map(|t| r.extent(t));
    let q = counted_arg(b, w, ext_q, tame, Fill::Data(tame));
    let k = counted_arg(b, w, ext_k, tame, Fill::Data(tame));
    let mut v = counted_arg(b, w, ext_v, tame, Fill::Data(tame));
    let mut out = counted_arg(b, w, ext_out, tame, Fill::Sentinel);
    let bias = bias_arg(b, w, &r, with_bias, tame);
    let mut lse = counted_arg(b, w, ext_lse, tame, Fill::Sentinel);
    match b.below(32) {
        0 => alias(w, &mut out, &q),
        1 => alias(w, &mut out, &k),
        2 => alias(w, &mut lse, &out),
        3 => alias(w, &mut lse, &v),
        4 => alias(w, &mut out, &lse),
        5 => alias(w, &mut v, &k), // inputs may share memory
        _ => {}
    }
    let (ks, ke) = key_range(b, s.kv_len);
    (d.q_count, d.k_count, d.v_count, d.out_count, d.lse_count) =
        (q.count, k.count, v.count, out.count, lse.count);
    let bias = attach_bias(&mut d, w, bias);
    let desc = DescArg::new(b, &mut d);

    let pre = (|| {
        if let Some(s) = desc.refusal() {
            return Err(s);
        }
        r.mask?;
        let mut args = vec![&q, &k, &v, &out];
        args.extend(bias.as_ref());
        args.push(&lse);
        refusals(w, &args)?;
        let mut reads = vec![&q, &k, &v];
        reads.extend(bias.as_ref());
        aliasing(w, &[&out, &lse], &reads)
    })();
    // Too much work for a fuzz iteration (only when the call would run the kernel).
    if let Ok(mask) = pre.and(r.mask) {
        let p = r.params(mask, bias.as_ref().map(|a| w.input(a)));
        let o = vec![0.0; *out.len.as_ref().unwrap()];
        let l = vec![0.0; *lse.len.as_ref().unwrap()];
        if p.validate(w.input(&q), w.input(&k), w.input(&v), &o, Some(&l))
            .is_ok()
            && work_over(&p, ke.saturating_sub(ks)) > MAX_WORK
        {
            return;
        }
    }
    let desc_ptr = desc.ptr();
    let call = |w: &mut World, out: &Arg, lse: &Arg, ks: usize, ke: usize| {
        let (qp, kp, vp) = (w.ptr(&q), w.ptr(&k).cast(), w.ptr(&v).cast());
        let (op, lp) = (w.mut_ptr(out), w.mut_ptr(lse));
        // SAFETY: every pointer is NULL or points to at least the floats the contract
        // derives for it (see `arg` and `alias`); `desc_ptr` to `struct_size` bytes or more.
        unsafe { qkv_partial_f32(desc_ptr, qp, kp, vp, ks, ke, op, lp) }
    };
    let rust = |w: &mut World, out: &Arg, lse: &Arg, ks: usize, ke: usize| {
        let mask = r.mask.unwrap();
        let (mut o, mut l) = (w.take(out), w.take(lse));
        let (on, ln) = (*out.len.as_ref().unwrap(), *lse.len.as_ref().unwrap());
        let p = r.params(mask, bias.as_ref().map(|a| w.input(a)));
        let r = split::partial(
            &p,
            w.input(&q),
            w.input(&k),
            w.input(&v),
            ks..ke,
            &mut o[..on],
            &mut l[..ln],
        );
        w.put(out, o);
        w.put(lse, l);
        rust_status(r)
    };
    let got = check_call(
        "qkv_partial_f32",
        &d,
        w,
        pre,
        |w| rust(w, &out, &lse, ks, ke),
        |w| call(w, &out, &lse, ks, ke),
    );
    if got != QKV_OK || !tame || w.ptr(&out) == w.ptr(&lse) {
        return;
    }
    let mask = r.mask.unwrap();
    let (on, ln) = (*out.len.as_ref().unwrap(), *lse.len.as_ref().unwrap());
    let p = r.params(mask, bias.as_ref().map(|a| w.input(a)));
    let (qs, kslice, vs) = (w.input(&q), w.input(&k), w.input(&v));
    let got_out = w.bufs[out.buf][..on].to_vec();
    let got_lse = w.bufs[lse.buf][..ln].to_vec();
    if (ks, ke) == (0, s.kv_len) {
        same_as_one_shot(&p, qs, kslice, vs, (&got_out, &got_lse));
        return;
    }
    if work(&p) > MAX_WORK {
        return;
    }
    // The keys before and after, as two more partials through the C ABI (fresh outputs of
    // the same lengths), merged into this one through the C ABI.
    let mut depth = 0;
    for (a, z) in [(0, ks), (ke, s.kv_len)] {
        let o2 = Arg {
            buf: w.push(b, on, Fill::Sentinel),
            ..out
        };
        let l2 = Arg {
            buf: w.push(b, ln, Fill::Sentinel),
            ..lse
        };
        // The same contract as the first call (the status may differ: a query position
        // shifted by `a` may leave i64, `Error::Overflow`), then the merge when it succeeds.
        let st = check_call(
            "qkv_partial_f32 (complement)",
            &d,
            w,
            Ok(()),
            |w| rust(w, &o2, &l2, a, z),
            |w| call(w, &o2, &l2, a, z),
        );
        if st != QKV_OK {
            return;
        }
        let (oa, la, ob, lb) = (w.mut_ptr(&out), w.mut_ptr(&lse), w.ptr(&o2), w.ptr(&l2));
        // SAFETY: as above; the four buffers are distinct.
        let st = unsafe { qkv_merge_f32(desc_ptr, oa, la, ob, lb) };
        assert_eq!(st, QKV_OK, "merge of {a}..{z} into {ks}..{ke}");
        depth += 1;
    }
    let p = r.params(mask, bias.as_ref().map(|a| w.input(a)));
    close_to_reference(
        &p,
        w.input(&q),
        w.input(&k),
        w.input(&v),
        &w.bufs[out.buf][..on],
        &w.bufs[lse.buf][..ln],
        Joined::Merged(depth),
        &d,
    );
}

/// `qkv_merge_f32` once, on arbitrary partial outputs and lse (`-inf`, NaN, huge).
fn merge_case(b: &mut Bytes) {
    let (mut d, r) = random_desc(b);
    let w = &mut World::default();
    let (ext_out, ext_lse) = (r.extent(Tensor::Out), r.extent(Tensor::Lse));
    let tame = b.chance(128);
    let oc = count(b, ext_out, tame);
    let lc = count(b, ext_lse, tame);
    let mut oa = arg(b, w, oc, ext_out, Fill::Data(false));
    let mut la = arg(b, w, lc, ext_lse, Fill::Data(false));
    let mut ob = arg(b, w, oc, ext_out, Fill::Data(false));
    let lb = arg(b, w, lc, ext_lse, Fill::Data(false));
    // Lse values that matter: -inf (no key), NaN, and spreads that underflow a weight.
    for a in [la, lb] {
        for x in w.bufs[a.buf].iter_mut() {
            match b.below(8) {
                0 => *x = f32::NEG_INFINITY,
                1 => *x *= 40.0,
                2 => *x *= 1e6,
                _ => {}
            }
        }
    }
    match b.below(16) {
        0 => alias(w, &mut ob, &oa),
        1 => alias(w, &mut la, &oa),
        2 => alias(w, &mut oa, &lb),
        _ => {}
    }
    (d.out_count, d.lse_count) = (oc, lc);
    let desc = DescArg::new(b, &mut d);
    let pre = (|| {
        if let Some(s) = desc.refusal() {
            return Err(s);
        }
        refusals(w, &[&oa, &la, &ob, &lb])?;
        aliasing(w, &[&oa, &la], &[&ob, &lb])
    })();
    let desc_ptr = desc.ptr();
    check_call(
        "qkv_merge_f32",
        &d,
        w,
        pre,
        |w| {
            // A merge uses only the shape and the `out` layout.
            let p = r.params(Mask::NONE, None);
            let (mut o, mut ls) = (w.take(&oa), w.take(&la));
            let (on, ln) = (*oa.len.as_ref().unwrap(), *la.len.as_ref().unwrap());
            let r = split::merge(&p, &mut o[..on], &mut ls[..ln], w.input(&ob), w.input(&lb));
            w.put(&oa, o);
            w.put(&la, ls);
            rust_status(r)
        },
        |w| {
            let (oap, lap, obp, lbp) = (w.mut_ptr(&oa), w.mut_ptr(&la), w.ptr(&ob), w.ptr(&lb));
            // SAFETY: each pointer is NULL or points to at least the floats the contract
            // derives; `desc_ptr` to `struct_size` bytes or more.
            unsafe { qkv_merge_f32(desc_ptr, oap, lap, obp, lbp) }
        },
    );
}

/// `qkv_stream_state_len` with a `size_t` output at any alignment, or NULL.
fn state_len_call(b: &mut Bytes, d: &QkvDesc, s: Shape, desc: &DescArg) {
    let mut cell = [0xa5u8; 2 * size_of::<usize>()];
    let at = b.below(size_of::<usize>());
    let null = b.chance(8);
    let p: *mut usize = if null {
        ptr::null_mut()
    } else {
        cell.as_mut_ptr().wrapping_add(at).cast()
    };
    let n = Stream::state_len(&s);
    let want = if let Some(st) = desc.refusal() {
        st
    } else if null {
        QKV_ERR_NULL_POINTER
    } else if n == usize::MAX {
        QKV_ERR_OVERFLOW
    } else {
        QKV_OK
    };
    // SAFETY: `desc` as the contract says; `p` is NULL or has `size_of::<usize>()` bytes.
    let (got, panicked) = c_call(|| unsafe { qkv_stream_state_len(desc.ptr(), p) });
    assert!(
        !panicked && got == want,
        "qkv_stream_state_len: {got}, want {want}\n{d:?}"
    );
    let mut written = [0u8; size_of::<usize>()];
    written.copy_from_slice(&cell[at..at + size_of::<usize>()]);
    if got == QKV_OK {
        assert_eq!(usize::from_ne_bytes(written), n, "state length");
    } else {
        assert!(cell.iter().all(|&x| x == 0xa5), "written on error");
    }
}

/// A random chunking of `0..n` (`n` small): single keys, empty chunks, pages, anything,
/// sometimes shuffled.
fn chunking(b: &mut Bytes, n: usize) -> Vec<(usize, usize)> {
    let mut out = vec![];
    let mut start = 0;
    let page = b.range(1, 20);
    while start < n {
        let len = match b.below(4) {
            0 => 1,
            1 => 0,
            2 => page,
            _ => b.range(1, n - start),
        };
        let end = (start + len).min(n);
        out.push((start, end));
        start = end;
    }
    if b.chance(64) {
        for i in (1..out.len()).rev() {
            let j = b.range(0, i);
            out.swap(i, j);
        }
    }
    out
}

/// A session of stream calls on one caller-owned state.
fn stream_case(b: &mut Bytes) {
    let (mut d, r, tame, with_bias) = random_problem(b);
    let s = r.shape;
    let w = &mut World::default();
    let [ext_q, ext_out, ext_lse] = [Tensor::Q, Tensor::Out, Tensor::Lse].map(|t| r.extent(t));
    let q = counted_arg(b, w, ext_q, tame, Fill::Data(tame));
    let bias = bias_arg(b, w, &r, with_bias, tame);
    // The full K and V, when small enough: each update's chunk is a window of them.
    let full = |b: &mut Bytes, w: &mut World, l: Layout, dim: usize| {
        l.extent(s.kv_heads, s.kv_len, dim)
            .filter(|&n| n <= MAX_FULL)
            .map(|n| w.push(b, n, Fill::Data(tame)))
    };
    let full_k = full(b, w, r.k, s.head_dim);
    let full_v = full(b, w, r.v, s.v_dim);
    // The state: the length it needs, or shorter, longer, 0, huge; fresh or garbage.
    let need = Stream::state_len(&s);
    let state_count = match b.below(8) {
        0 => 0,
        1 => need.saturating_sub(b.range(1, 2)),
        2 => need.saturating_add(b.range(1, 4)),
        3 => MAX_LEN + 1,
        _ => need,
    };
    let garbage = b.chance(32);
    let fill = if garbage {
        Fill::Data(false)
    } else {
        Fill::Sentinel
    };
    let state = arg_up_to(b, w, state_count, Some(0), fill, MAX_STATE);
    (d.q_count, d.out_count, d.lse_count) =
        (q.count, count(b, ext_out, tame), count(b, ext_lse, tame));
    let bias = attach_bias(&mut d, w, bias);
    let desc = DescArg::new(b, &mut d);
    let desc_ptr = desc.ptr();
    let mask = r.mask;
    let base = desc
        .refusal()
        .map_or(Ok(()), Err)
        .and_then(|()| mask.map(|_| ()));

    let mut plan = if s.kv_len <= 4096 {
        chunking(b, s.kv_len)
    } else {
        vec![]
    };
    plan.reverse();
    // Keys fed by successful updates since the last successful init, and how many updates.
    let mut fed: Option<(Vec<u32>, usize)> = None;
    let n_ops = b.range(1, 12);
    let first_init = b.chance(224);
    for n in 0..=n_ops {
        let op = match n {
            0 if first_init => 0,
            _ if n == n_ops => 3,
            _ => match b.below(16) {
                0..=9 => 1,
                10 => 2,
                11 | 12 => 3,
                13 => 4,
                14 => 0,
                _ => 5,
            },
        };
        match op {
            0 => {
                let pre = base.and_then(|()| refusals(w, &[&state]));
                let got = check_stream_call(
                    "qkv_stream_init",
                    &d,
                    w,
                    &state,
                    pre,
                    |_, st| Stream::new(&r.params(mask.unwrap(), None), st).map(|_| ()),
                    // SAFETY: `state` is NULL or holds `state_len` floats.
                    |w| unsafe { qkv_stream_init(desc_ptr, w.mut_ptr(&state), state.count) },
                );
                if got == QKV_OK {
                    fed = (s.kv_len <= 4096).then(|| (vec![0; s.kv_len], 0));
                }
            }
            1 | 2 => {
                // An update: the next chunk of the plan, or any range.
                let (ks, ke) = match plan.pop() {
                    Some(r) if op == 1 => r,
                    _ => key_range(b, s.kv_len),
                };
                let n = ke.saturating_sub(ks);
                let chunk = |b: &mut Bytes, w: &mut World, l: Layout, dim, full: Option<usize>| {
                    let len = if ks > ke {
                        Some(0)
                    } else {
                        l.extent(s.kv_heads, n, dim)
                    };
                    let a = arg_up_to(b, w, 0, len, Fill::Data(tame), MAX_FULL);
                    // The chunk's rows are the full tensor's from row `ks` on.
                    if let (Some(f), Ok(len), false) = (full, a.len, a.null)
                        && ke <= s.kv_len
                        && len > 0
                    {
                        let from = ks * l.row_stride;
                        let src = w.bufs[f][from..from + len].to_vec();
                        w.bufs[a.buf][..len].copy_from_slice(&src);
                    }
                    a
                };
                let mut k = chunk(b, w, r.k, s.head_dim, full_k);
                let v = chunk(b, w, r.v, s.v_dim, full_v);
                if b.chance(8) {
                    alias(w, &mut k, &state);
                }
                let pre = base
                    .and_then(|()| refusals(w, &[&state]))
                    .and(if ks > ke {
                        Err(QKV_ERR_TOO_SHORT)
                    } else {
                        Ok(())
                    })
                    .and_then(|()| {
                        let mut args = vec![&q, &k, &v];
                        args.extend(bias.as_ref());
                        refusals(w, &args)?;
                        aliasing(w, &[&state], &args)
                    });
                if pre.is_ok() {
                    let p = r.params(mask.unwrap(), None);
                    if work_over(&p, n) > MAX_WORK {
                        continue;
                    }
                }
                let got = check_stream_call(
                    "qkv_stream_update",
                    &d,
                    w,
                    &state,
                    pre,
                    |w, st| {
                        let p = r.params(mask.unwrap(), bias.as_ref().map(|a| w.input(a)));
                        Stream::resume(&p, st).and_then(|mut stream| {
                            stream.update(w.input(&q), w.input(&k), w.input(&v), ks..ke)
                        })
                    },
                    |w| {
                        let (qp, kp, vp) = (w.ptr(&q), w.ptr(&k).cast(), w.ptr(&v).cast());
                        let sp = w.mut_ptr(&state);
                        // SAFETY: every pointer is NULL or holds what the contract derives.
                        unsafe { qkv_stream_update(desc_ptr, sp, state.count, qp, kp, vp, ks, ke) }
                    },
                );
                if let Some((keys, updates)) = &mut fed
                    && got == QKV_OK
                {
                    keys[ks..ke].iter_mut().for_each(|x| *x += 1);
                    *updates += 1;
                }
            }
            3 => {
                let mut out = arg(b, w, d.out_count, ext_out, Fill::Sentinel);
                let mut lse = arg(b, w, d.lse_count, ext_lse, Fill::Sentinel);
                if b.chance(32) {
                    lse.null = true; // no lse
                }
                match b.below(16) {
                    0 => alias(w, &mut out, &state),
                    1 => alias(w, &mut lse, &out),
                    2 => alias(w, &mut lse, &state),
                    _ => {}
                }
                let lse = (!w.ptr(&lse).is_null()).then_some(lse);
                let pre = base.and_then(|()| {
                    let mut args = vec![&state, &out];
                    args.extend(lse.as_ref());
                    refusals(w, &args)?;
                    aliasing(w, &args, &[])
                });
                let got = check_stream_call(
                    "qkv_stream_finish",
                    &d,
                    w,
                    &state,
                    pre,
                    |w, st| {
                        let mut o = w.take(&out);
                        let mut l = lse.as_ref().map(|l| w.take(l));
                        let on = *out.len.as_ref().unwrap();
                        let ln = lse.as_ref().map(|l| *l.len.as_ref().unwrap());
                        let p = r.params(mask.unwrap(), None);
                        let r = Stream::resume(&p, st).and_then(|mut stream| {
                            let l = l.as_mut().map(|l| &mut l[..ln.unwrap()]);
                            stream.finish(&mut o[..on], l)
                        });
                        w.put(&out, o);
                        if let (Some(a), Some(l)) = (&lse, l) {
                            w.put(a, l);
                        }
                        r
                    },
                    |w| {
                        let (sp, op) = (w.mut_ptr(&state), w.mut_ptr(&out));
                        let lp = lse.as_ref().map_or(ptr::null_mut(), |l| w.mut_ptr(l));
                        // SAFETY: every pointer is NULL or holds what the contract derives.
                        unsafe { qkv_stream_finish(desc_ptr, sp, state.count, op, lp) }
                    },
                );
                // Every key fed exactly once since the last init: the one-shot result. (At
                // least one update, which validated `q` against the problem.)
                let complete = fed
                    .as_ref()
                    .is_some_and(|(keys, n)| *n > 0 && keys.iter().all(|&x| x == 1));
                if got == QKV_OK
                    && tame
                    && complete
                    && let (Some(fk), Some(fv)) = (full_k, full_v)
                {
                    let Some(lse) = lse else { continue };
                    let updates = fed.as_ref().unwrap().1;
                    let on = *out.len.as_ref().unwrap();
                    let ln = *lse.len.as_ref().unwrap();
                    let p = r.params(mask.unwrap(), bias.as_ref().map(|a| w.input(a)));
                    let kn = r.extent(Tensor::K).unwrap();
                    let vn = r.extent(Tensor::V).unwrap();
                    let (kf, vf) = (&w.bufs[fk][..kn], &w.bufs[fv][..vn]);
                    let (o, l) = (&w.bufs[out.buf][..on], &w.bufs[lse.buf][..ln]);
                    if work(&p) > MAX_WORK {
                        continue;
                    }
                    if updates == 1 {
                        same_as_one_shot(&p, w.input(&q), kf, vf, (o, l));
                    } else {
                        close_to_reference(
                            &p,
                            w.input(&q),
                            kf,
                            vf,
                            o,
                            l,
                            Joined::Stream(updates),
                            &d,
                        );
                    }
                }
            }
            4 => state_len_call(b, &d, s, &desc),
            _ => {
                // A stream state written by something else: a few floats overwritten.
                if let Ok(n) = state.len
                    && n > 0
                    && !state.null
                {
                    for _ in 0..b.range(1, 4) {
                        let at = b.below(n);
                        w.bufs[state.buf][at] = value(b, false);
                    }
                    fed = None;
                }
            }
        }
    }
}
