//! The public Rust API, named item by item with its exact signature, so that a change a user
//! would notice (a renamed or removed item, a new parameter, a lost `const`, trait or auto
//! trait, a new variant of an exhaustive enum, a new public field) fails to compile here.
//! A deliberate change updates this file and CHANGELOG.md together.
//!
//! Left out: `qkv::kernel`, whose constants are the kernel's internals and not part of the
//! API users build on (the crate docs and README.md state the stack use). `Emulated` and
//! `Level::Emulated` exist with the `emulated` feature, which the crate's tests turn on. The `capi` and
//! `parallel` parts compile with their features (`cargo test --features capi,parallel
//! --test public_api`).
// Spelling out every signature whole is the point of this file.
#![allow(clippy::type_complexity)]

use core::fmt::{Debug, Display};
use core::hash::Hash;
use core::ops::Range;

use qkv::split::Level;
use qkv::stream::Stream;
use qkv::{
    Bias, BlockQ8_0, Dim, Emulated, Error, Isa, KvKind, KvType, Layout, Mask, Pages, Params,
    QueryPos, Shape, Tensor, bf16, f16,
};

/// `qkv_desc_fields!`: the fields of `QkvDesc`, the list tests/c/layout.rs prints.
#[cfg(feature = "capi")]
#[macro_use]
#[path = "c/desc_fields.rs"]
mod desc_fields;

/// Argument types short enough that each signature below reads on one line.
type In<'a> = &'a [f32];
type Out<'a> = &'a mut [f32];
type Lse<'a> = Option<&'a mut [f32]>;
type Res = Result<(), Error>;

type Attention = fn(&Params, In, In, In, Out, Lse) -> Res;
/// The same call on a chosen level (`Isa`, `Emulated`, `split::Level`).
type AttentionOn<L> = fn(L, &Params, In, In, In, Out, Lse) -> Res;

/// Plain values: copied, compared, printed, shared between threads.
fn value<T: Copy + Clone + Debug + PartialEq + Send + Sync + Unpin>() {}
fn eq_hash<T: Eq + Hash>() {}
fn default<T: Default>() -> T {
    T::default()
}

// `const fn`s stay callable in constants.
const SHAPE: Shape = Shape::new(4, 3, 5, 8).gqa(4, 2).with_v_dim(6);
const PLANAR: Layout = Layout::planar(3, 8);
const INTERLEAVED: Layout = Layout::interleaved(4, 8);
const AT: usize = PLANAR.at(1, 2);
const MASKS: [Mask; 4] = [
    Mask::NONE,
    Mask::causal(),
    Mask::sliding_window(2).with_right(Some(1)),
    Mask::causal().aligned(QueryPos::Offset(-3)),
];
const BIAS: Bias<'static> = Bias::broadcast(&[0.0; 5], 5);
const PARAMS: Params<'static> = Params::new(SHAPE)
    .interleaved()
    .with_layouts(PLANAR, PLANAR, PLANAR, INTERLEAVED)
    .with_scale(0.5)
    .with_mask(Mask::causal())
    .with_bias(BIAS);
const ISA: (Option<Isa>, &str, usize, usize) = (
    Isa::from_u8(0),
    Isa::Avx2.name(),
    Isa::Avx512.lanes(),
    Emulated::Lanes8.lanes(),
);

fn top_level() {
    let _: Attention = qkv::attention;
    let _: fn(Out, &Params, In, In, In, Out, Lse) -> Res = qkv::attention_in;
    let _: fn(&Params) -> usize = qkv::workspace_len;
    let _: fn(&Params) -> usize = qkv::min_workspace_len;
    let _: Attention = qkv::reference::attention;
}

fn shape_and_layout() {
    let Shape {
        q_heads: _,
        kv_heads: _,
        q_len: _,
        kv_len: _,
        head_dim: _,
        v_dim: _,
    }: Shape = SHAPE;
    let _: fn(usize, usize, usize, usize) -> Shape = Shape::new;
    let _: fn(Shape, usize, usize) -> Shape = Shape::gqa;
    let _: fn(Shape, usize) -> Shape = Shape::with_v_dim;
    let _: fn(&Shape) -> f64 = Shape::flops;
    value::<Shape>();
    eq_hash::<Shape>();

    let Layout {
        head_stride: _,
        row_stride: _,
    }: Layout = PLANAR;
    let _: fn(usize, usize) -> Layout = Layout::planar;
    let _: fn(usize, usize) -> Layout = Layout::interleaved;
    let _: fn(&Layout, usize, usize) -> usize = Layout::at;
    value::<Layout>();
    eq_hash::<Layout>();
}

fn masks() {
    let Mask {
        left: _,
        right: _,
        query_pos: _,
    }: Mask = MASKS[0];
    let _: Option<usize> = MASKS[0].left;
    let _: Option<usize> = MASKS[0].right;
    let _: Mask = Mask::NONE;
    let _: fn() -> Mask = Mask::causal;
    let _: fn(usize) -> Mask = Mask::sliding_window;
    let _: fn(Mask, Option<usize>) -> Mask = Mask::with_right;
    let _: fn(Mask, QueryPos) -> Mask = Mask::aligned;
    value::<Mask>();
    eq_hash::<Mask>();
    let _: Mask = default();

    match QueryPos::default() {
        QueryPos::BottomRight | QueryPos::TopLeft => {}
        QueryPos::Offset(n) => {
            let _: i64 = n;
        }
    }
    value::<QueryPos>();
    eq_hash::<QueryPos>();
}

fn bias_and_params<'a>(_: Params<'a>) {
    let Bias {
        data,
        head_stride: _,
        row_stride: _,
    }: Bias<'a> = BIAS;
    let _: &'a [f32] = data;
    let _: fn(&'a [f32], usize) -> Bias<'a> = Bias::broadcast;
    value::<Bias<'a>>();

    let Params {
        shape: _,
        q: _,
        k: _,
        v: _,
        out: _,
        scale,
        mask: _,
        bias,
        softcap,
        sinks,
        alibi,
        pages,
    }: Params<'a> = PARAMS;
    let _: Option<Pages<'a>> = pages;
    let _: Option<f32> = scale;
    let _: Option<Bias<'a>> = bias;
    let _: (Option<f32>, Option<&'a [f32]>, Option<&'a [f32]>) = (softcap, sinks, alibi);
    let _: fn(Shape) -> Params<'a> = Params::new;
    let _: fn(Params<'a>) -> Params<'a> = Params::interleaved;
    let _: fn(Params<'a>, Layout, Layout, Layout, Layout) -> Params<'a> = Params::with_layouts;
    let _: fn(Params<'a>, f32) -> Params<'a> = Params::with_scale;
    let _: fn(Params<'a>, Mask) -> Params<'a> = Params::with_mask;
    let _: fn(Params<'a>, Bias<'a>) -> Params<'a> = Params::with_bias;
    let _: fn(Params<'a>, f32) -> Params<'a> = Params::with_softcap;
    let _: fn(Params<'a>, &'a [f32]) -> Params<'a> = Params::with_sinks;
    let _: fn(Params<'a>, &'a [f32]) -> Params<'a> = Params::with_alibi;
    let _: fn(Params<'a>, Pages<'a>) -> Params<'a> = Params::with_pages;
    let Pages {
        table,
        page_len,
        k_page_stride,
        v_page_stride,
        offset,
    } = Pages::new(&[], 16, 0, 0);
    let _: (&[u32], usize, usize, usize, usize) =
        (table, page_len, k_page_stride, v_page_stride, offset);
    let _: fn(&'a [u32], usize, usize, usize) -> Pages<'a> = Pages::new;
    value::<Pages<'a>>();
    eq_hash::<Pages<'a>>();
    let _: fn(&Params<'a>) -> f32 = Params::scale;
    let _: fn(&Params<'a>) -> i128 = Params::query_offset;
    let _: fn(&Params<'a>, usize, usize) -> bool = Params::is_visible;
    let _: fn(&Params<'a>, usize) -> (usize, usize) = Params::key_range;
    let _: fn(&Params<'a>, In, In, In, In, Option<In>) -> Res = Params::validate;
    value::<Params<'a>>();
}

fn errors() {
    let all = [
        Error::ZeroDim(Dim::QHeads),
        Error::HeadsNotDivisible {
            q_heads: 3,
            kv_heads: 2,
        },
        Error::TooShort {
            tensor: Tensor::Q,
            needed: 1,
            len: 0,
        },
        Error::Overflow(Tensor::K),
        Error::Overlap(Tensor::Out),
        Error::InvalidScale,
        Error::InvalidSoftcap,
        Error::VariantsNotBuilt,
        Error::ZeroPageLen,
        Error::PagesNotBuilt,
        Error::Batch { index: 2 },
        Error::Unsupported(Isa::Neon),
        Error::KeyRange {
            start: 0,
            end: 1,
            kv_len: 0,
        },
        Error::WorkspaceTooSmall { needed: 58, len: 0 },
        Error::BlockSize {
            tensor: Tensor::K,
            dim: 48,
            block: 32,
        },
        Error::TaskIndex { task: 3, tasks: 3 },
    ];
    // `Error` is `#[non_exhaustive]`: users match it with a wildcard arm, so a new variant
    // is not a breaking change; the fields of the existing ones are.
    for e in all {
        match e {
            Error::ZeroDim(d) => match d {
                Dim::QHeads | Dim::KvHeads | Dim::HeadDim | Dim::VDim => {}
            },
            Error::HeadsNotDivisible { q_heads, kv_heads } => {
                let _: (usize, usize) = (q_heads, kv_heads);
            }
            Error::TooShort {
                tensor,
                needed,
                len,
            } => {
                let _: (Tensor, usize, usize) = (tensor, needed, len);
            }
            // `Tensor` is `#[non_exhaustive]` too.
            Error::Overflow(t) | Error::Overlap(t) => match t {
                Tensor::Q | Tensor::K | Tensor::V | Tensor::Out | Tensor::Lse | Tensor::Bias => {}
                Tensor::Sinks | Tensor::Alibi | Tensor::BlockTable => {}
                _ => {}
            },
            Error::InvalidScale | Error::InvalidSoftcap | Error::VariantsNotBuilt => {}
            Error::ZeroPageLen | Error::PagesNotBuilt => {}
            Error::Batch { index } => {
                let _: usize = index;
            }
            Error::Unsupported(isa) => {
                let _: Isa = isa;
            }
            Error::KeyRange { start, end, kv_len } => {
                let _: (usize, usize, usize) = (start, end, kv_len);
            }
            Error::WorkspaceTooSmall { needed, len } => {
                let _: (usize, usize) = (needed, len);
            }
            Error::BlockSize { tensor, dim, block } => {
                let _: (Tensor, usize, usize) = (tensor, dim, block);
            }
            Error::TaskIndex { task, tasks } => {
                let _: (usize, usize) = (task, tasks);
            }
            _ => {}
        }
    }
    value::<Error>();
    eq_hash::<Error>();
    fn std_error<T: Display + core::error::Error + 'static>() {}
    std_error::<Error>();
    value::<Tensor>();
    eq_hash::<Tensor>();
    value::<Dim>();
    eq_hash::<Dim>();
}

/// The K/V storage types: every entry point is generic over them (`f32` above).
fn kv_types() {
    let _: fn(&Params, In, &[f16], &[BlockQ8_0], Out, Lse) -> Res = qkv::attention;
    let _: fn(Out, &Params, In, &[bf16], &[f32], Out, Lse) -> Res = qkv::attention_in;
    let _: fn(&Params, In, &[BlockQ8_0], &[f16], Out, Lse) -> Res = qkv::reference::attention;
    let _: fn(&Params, KvKind, KvKind) -> usize = qkv::workspace_len_for;
    let _: fn(&Params, KvKind, KvKind) -> usize = qkv::min_workspace_len_for;
    const _: Params<'static> = PARAMS.with_kv_units::<BlockQ8_0, f16>();
    const _: [KvKind; 4] = KvKind::ALL;
    const _: (Option<KvKind>, &str, usize, usize) = (
        KvKind::from_u32(3),
        KvKind::Q8_0.name(),
        KvKind::Bf16.values(),
        KvKind::F16.bytes(),
    );
    match KvKind::F32 {
        KvKind::F32 | KvKind::F16 | KvKind::Bf16 | KvKind::Q8_0 => {}
    }
    value::<KvKind>();
    eq_hash::<KvKind>();
    let _: fn(&KvKind) -> String = ToString::to_string;
    fn kv_type<T: KvType + bytemuck::Pod + Send + Sync + 'static>() -> KvKind {
        T::KIND
    }
    let _ = (
        kv_type::<f32>(),
        kv_type::<f16>(),
        kv_type::<bf16>(),
        kv_type::<BlockQ8_0>(),
    );
    let BlockQ8_0 { d, qs }: BlockQ8_0 = default();
    let _: (f16, [i8; 32]) = (d, qs);
    let _: fn(&[f32; 32]) -> BlockQ8_0 = BlockQ8_0::quantize;
    const _: usize = qkv::kv::Q8_0_VALUES;
    value::<BlockQ8_0>();
}

fn levels() -> impl Iterator<Item = Isa> {
    match Isa::Scalar {
        Isa::Scalar | Isa::Avx2 | Isa::Avx512 | Isa::Neon => {}
    }
    let _: [u8; 4] = [
        Isa::Scalar as u8,
        Isa::Avx2 as u8,
        Isa::Avx512 as u8,
        Isa::Neon as u8,
    ];
    let _: [Isa; 4] = Isa::ALL;
    let _: fn() -> Isa = Isa::detect;
    let _: fn(Isa) -> bool = Isa::is_available;
    let _: fn(u8) -> Option<Isa> = Isa::from_u8;
    let _: fn(Isa) -> &'static str = Isa::name;
    let _: fn(Isa) -> usize = Isa::lanes;
    let _: AttentionOn<Isa> = Isa::attention;
    value::<Isa>();
    eq_hash::<Isa>();
    fn ordered<T: PartialOrd + Ord + Display>() {}
    ordered::<Isa>();

    match Emulated::Lanes4 {
        Emulated::Lanes4 | Emulated::Lanes8 | Emulated::Lanes16 => {}
    }
    let _: [Emulated; 3] = Emulated::ALL;
    let _: fn(Emulated) -> usize = Emulated::lanes;
    let _: AttentionOn<Emulated> = Emulated::attention;
    value::<Emulated>();
    eq_hash::<Emulated>();

    Isa::available()
}

fn split() {
    // `Level` is `#[non_exhaustive]` (its `Emulated` variant exists with the `emulated`
    // feature): users match it with a wildcard arm.
    match Level::default() {
        Level::Detect => {}
        Level::Isa(isa) => {
            let _: Isa = isa;
        }
        Level::Emulated(e) => {
            let _: Emulated = e;
        }
        _ => {}
    }
    let _: Level = Level::from(Isa::Scalar);
    let _: Level = Level::from(Emulated::Lanes4);
    let _: AttentionOn<Level> = Level::attention;
    let _: fn(Level, Out, &Params, In, In, In, Out, Lse) -> Res = Level::attention_in;
    value::<Level>();
    eq_hash::<Level>();

    let _: fn(&Params, In, In, In, Range<usize>, Out, Out) -> Res = qkv::split::partial;
    let _: fn(Level, &Params, In, In, In, Range<usize>, Out, Out) -> Res = qkv::split::partial_at;
    let _: fn(Level, Out, &Params, In, In, In, Range<usize>, Out, Out) -> Res =
        qkv::split::partial_in;
    let _: fn(&Params, Out, Out, In, In) -> Res = qkv::split::merge;
    let _: fn(Out, &mut f32, In, f32) -> Res = qkv::split::merge_rows;
    let _: fn(&Params, Out, Out) -> Res = qkv::split::add_sinks;
    plan();
}

/// `qkv::plan`: tasks any thread pool can run, no_std. (`qkv::parallel::Plan` is the same
/// type.)
fn plan() {
    use qkv::plan::Plan;
    let Plan {
        q_block: _,
        kv_block: _,
    }: Plan = Plan::auto(&SHAPE, 2);
    let _: fn(&Shape, usize) -> Plan = Plan::auto;
    let _: fn(Plan, &Shape) -> usize = Plan::tasks;
    let _: fn(Plan, &Shape) -> usize = Plan::partial_len;
    let _: fn(Plan, &Shape, usize) -> Option<Range<usize>> = Plan::task_partial;
    value::<Plan>();
    eq_hash::<Plan>();
    let _: fn(Level, Plan, &Params, In, In, In, usize, Out) -> Res = qkv::plan::run_task;
    let _: fn(Level, Out, Plan, &Params, In, In, In, usize, Out) -> Res = qkv::plan::run_task_in;
    let _: fn(Plan, &Params, In, Out, Lse) -> Res = qkv::plan::finish;
}

/// `qkv::ragged`: a batch of sequences of different lengths in one call.
fn ragged() {
    use qkv::ragged::{self, Batch};
    let Batch { cu_q, cu_k } = Batch::new(&[0, 3], &[0, 5]);
    let _: (&[usize], &[usize]) = (cu_q, cu_k);
    let _: fn(&'static [usize], &'static [usize]) -> Batch<'static> = Batch::new;
    let _: fn(&Batch<'static>) -> usize = Batch::len;
    let _: fn(&Batch<'static>) -> bool = Batch::is_empty;
    value::<Batch>();
    eq_hash::<Batch>();
    let _: fn(&Params, &Batch, In, In, In, Out, Lse) -> Res = ragged::attention;
    let _: fn(Level, &Params, &Batch, In, In, In, Out, Lse) -> Res = ragged::attention_at;
}

fn stream<'p, 's>(s: Stream<'p, 's>) -> Stream<'p, 's> {
    let _: fn(&Shape) -> usize = Stream::state_len;
    let _: fn(&Params<'p>, &'s mut [f32]) -> Result<Stream<'p, 's>, Error> = Stream::new;
    let _: fn(&Params<'p>, &'s mut [f32]) -> Result<Stream<'p, 's>, Error> = Stream::resume;
    let _: fn(&mut Stream<'p, 's>) = Stream::reset;
    let _: fn(&mut Stream<'p, 's>, In, In, In, Range<usize>) -> Res = Stream::update;
    let _: fn(&mut Stream<'p, 's>, Out, In, In, In, Range<usize>) -> Res = Stream::update_in;
    let _: fn(&mut Stream<'p, 's>, Out, Lse) -> Res = Stream::finish;
    fn stream_traits<T: Debug + Send + Sync + Unpin>() {}
    stream_traits::<Stream<'p, 's>>();
    // `with_level` takes `impl Into<Level>`: each of its argument types.
    s.with_level(Isa::Scalar)
        .with_level(Emulated::Lanes4)
        .with_level(Level::Detect)
}

fn exp_and_tolerance() {
    let _: fn(pulp::Scalar, f32) -> f32 = qkv::exp::exp::<pulp::Scalar>;
    let _: fn(f32) -> f32 = qkv::exp::exp1;
    let _: fn(pulp::Scalar, f32) -> f32 = qkv::exp::tanh::<pulp::Scalar>;
    let _: fn(f32) -> f32 = qkv::exp::tanh1;
    let _: fn(pulp::Scalar, f32, f32) -> f32 = qkv::exp::softcap::<pulp::Scalar>;
    let _: fn(f32, f32) -> f32 = qkv::exp::softcap1;
    let _: f32 = qkv::tolerance::EPS;
    let _: fn(f32, f32, usize, usize) -> f32 = qkv::tolerance::output_bound;
    let _: fn(f32, usize, usize, f32) -> f32 = qkv::tolerance::lse_bound;
    let _: fn(f32, f32, usize, usize, f32, usize) -> f32 = qkv::tolerance::merged_output_bound;
    let _: fn(f32, usize, usize, f32, usize) -> f32 = qkv::tolerance::merged_lse_bound;
    let _: fn(f32, f32, usize, usize, f32, usize) -> f32 = qkv::tolerance::stream_output_bound;
    let _: fn(f32, usize, usize, f32, usize) -> f32 = qkv::tolerance::stream_lse_bound;
}

#[cfg(feature = "parallel")]
fn parallel() {
    // `qkv::parallel::Plan` is `qkv::plan::Plan` (checked in `plan`), re-exported.
    use qkv::parallel::Plan;
    let _: fn(Plan) -> qkv::plan::Plan = |p| p;
    let _: Attention = qkv::parallel::attention;
    let _: fn(Level, Plan, &Params, In, In, In, Out, Lse) -> Res = qkv::parallel::attention_planned;
    let _: fn(&Params, &qkv::ragged::Batch, In, In, In, Out, Lse) -> Res = qkv::parallel::ragged;
}

#[cfg(feature = "capi")]
fn capi() {
    use core::ffi::c_char;
    use qkv::capi::*;
    use qkv::capi_split::*;

    // The values of the status codes and enumerations are ABI: each keeps its number.
    for (status, value) in [
        (QKV_OK, 0),
        (QKV_ERR_ZERO_DIM, 1),
        (QKV_ERR_HEADS_NOT_DIVISIBLE, 2),
        (QKV_ERR_TOO_SHORT, 3),
        (QKV_ERR_OVERFLOW, 4),
        (QKV_ERR_OVERLAP, 5),
        (QKV_ERR_INVALID_SCALE, 6),
        (QKV_ERR_UNSUPPORTED, 7),
        (QKV_ERR_NULL_POINTER, 8),
        (QKV_ERR_MISALIGNED, 9),
        (QKV_ERR_ALIASING, 10),
        (QKV_ERR_STRUCT_SIZE, 11),
        (QKV_ERR_UNKNOWN_FLAGS, 12),
        (QKV_ERR_UNKNOWN_MASK, 13),
        (QKV_ERR_UNKNOWN_QUERY_POS, 14),
        (QKV_ERR_UNKNOWN_ISA, 15),
        (QKV_ERR_INTERNAL, 16),
        (QKV_ERR_WORKSPACE_TOO_SMALL, 17),
        (QKV_ERR_BLOCK_SIZE, 18),
        (QKV_ERR_TYPE, 19),
        (QKV_ERR_TASK, 20),
        (QKV_ERR_INVALID_SOFTCAP, 21),
        (QKV_ERR_VARIANT, 22),
    ] {
        assert_eq!(status, value);
    }
    let _: i32 = QKV_OK;
    let _: [QkvStatus; 23] = ALL_STATUSES;
    let _: [&str; 23] = STATUS_NAMES;
    for (kind, value) in [
        (QKV_MASK_NONE, 0),
        (QKV_MASK_CAUSAL, 1),
        (QKV_MASK_BAND, 2),
        (QKV_QUERY_POS_BOTTOM_RIGHT, 0),
        (QKV_QUERY_POS_TOP_LEFT, 1),
        (QKV_QUERY_POS_OFFSET, 2),
        (QKV_ISA_SCALAR, 0),
        (QKV_ISA_AVX2, 1),
        (QKV_ISA_AVX512, 2),
        (QKV_ISA_NEON, 3),
    ] {
        let _: (i32, i32) = (kind, value);
        assert_eq!(kind, value);
    }
    let _: [u32; 3] = [QKV_FLAG_SCALE, QKV_KNOWN_FLAGS, QKV_VERSION];
    let types: [u32; 4] = [QKV_TYPE_F32, QKV_TYPE_F16, QKV_TYPE_BF16, QKV_TYPE_Q8_0];
    assert_eq!(types, [0, 1, 2, 3]);
    let _: [usize; 6] = [
        QKV_UNBOUNDED,
        QKV_DESC_SIZE_V1,
        QKV_DESC_SIZE_V2,
        QKV_DESC_SIZE_V3,
        QKV_DESC_SIZE_V4,
        QKV_DESC_MAX_SIZE,
    ];
    const _: QkvStatus = error_status(Error::InvalidScale);
    let _: fn(Error) -> QkvStatus = error_status;

    let QkvLayout {
        head_stride: _,
        row_stride: _,
    }: QkvLayout = QkvLayout::from(PLANAR);
    let _: QkvLayout = default();
    value::<QkvLayout>();
    eq_hash::<QkvLayout>();

    const DESC: QkvDesc = QkvDesc::planar(4, 2, 3, 5, 8, 6);
    let _: fn(usize, usize, usize, usize, usize, usize) -> QkvDesc = QkvDesc::planar;
    // Every field by name, with no `..`: one the list leaves out fails to compile here.
    macro_rules! every_field {
        ($($f:ident),* $(,)?) => {
            let QkvDesc { $($f: _),* } = DESC;
        };
    }
    qkv_desc_fields!(every_field);
    let d = DESC;
    let _: (*const f32, i64, f32) = (d.bias, d.query_offset, d.scale);
    let _: (u32, i32, i32, u32, u32) = (d.flags, d.mask, d.query_pos, d.k_type, d.v_type);
    let _: (*const f32, usize) = (d.sinks, d.sinks_count);
    let _: (*const f32, usize) = (d.alibi, d.alibi_count);
    let _: (f32, u32) = (d.softcap, d.reserved);
    let _: (*const u32, usize, usize) = (d.block_table, d.block_table_count, d.page_len);
    let _: (usize, usize, usize) = (d.k_page_stride, d.v_page_stride, d.page_offset);
    // A raw pointer inside: not Send or Sync, like the C struct.
    fn desc_traits<T: Copy + Debug + PartialEq + Default>() {}
    desc_traits::<QkvDesc>();

    // The C argument types, short so that each signature reads on one line: a tensor read
    // (`R`) or written (`W`), and K or V of any type (`T`).
    type Desc = *const QkvDesc;
    type R = *const f32;
    type W = *mut f32;
    type T = *const core::ffi::c_void;
    type Call = unsafe extern "C" fn(Desc, R, T, T, W, W) -> QkvStatus;
    let _: Call = qkv_attention_f32;
    let _: Call = qkv_reference_f32;
    let _: unsafe extern "C" fn(Desc, R, T, T, W, W, W, usize) -> QkvStatus = qkv_attention_f32_ws;
    let _: unsafe extern "C" fn(Desc) -> usize = qkv_workspace_size;
    let _: unsafe extern "C" fn(Desc) -> usize = qkv_workspace_min_size;
    let _: unsafe extern "C" fn(i32, Desc, R, T, T, W, W) -> QkvStatus = qkv_attention_f32_isa;
    let _: extern "C" fn() -> i32 = qkv_detected_isa;
    let _: extern "C" fn(i32) -> i32 = qkv_isa_available;
    let _: extern "C" fn(i32) -> *const c_char = qkv_isa_name;
    let _: extern "C" fn(QkvStatus) -> *const c_char = qkv_status_str;
    let _: extern "C" fn() -> u32 = qkv_version;

    let _: unsafe extern "C" fn(Desc, R, T, T, usize, usize, W, W) -> QkvStatus = qkv_partial_f32;
    let _: unsafe extern "C" fn(Desc, R, T, T, usize, usize, W, W, W, usize) -> QkvStatus =
        qkv_partial_f32_ws;
    let _: unsafe extern "C" fn(Desc, W, W, R, R) -> QkvStatus = qkv_merge_f32;
    let _: unsafe extern "C" fn(Desc, W, W) -> QkvStatus = qkv_add_sinks_f32;
    let _: unsafe extern "C" fn(Desc, *mut usize) -> QkvStatus = qkv_stream_state_len;
    let _: unsafe extern "C" fn(Desc, W, usize) -> QkvStatus = qkv_stream_init;
    let _: unsafe extern "C" fn(Desc, W, usize, R, T, T, usize, usize) -> QkvStatus =
        qkv_stream_update;
    let _: unsafe extern "C" fn(Desc, W, usize, R, T, T, usize, usize, W, usize) -> QkvStatus =
        qkv_stream_update_ws;
    let _: unsafe extern "C" fn(Desc, W, usize, W, W) -> QkvStatus = qkv_stream_finish;

    let QkvPlan {
        q_block: _,
        kv_block: _,
        tasks: _,
        partial_len: _,
    } = QkvPlan::default();
    value::<QkvPlan>();
    type P = *const QkvPlan;
    let _: unsafe extern "C" fn(Desc, usize, *mut QkvPlan) -> QkvStatus = qkv_plan_make;
    let _: unsafe extern "C" fn(P, Desc, R, T, T, usize, W, W, usize) -> QkvStatus =
        qkv_plan_run_task;
    let _: unsafe extern "C" fn(P, Desc, R, W, W) -> QkvStatus = qkv_plan_finish;
    #[cfg(feature = "parallel")]
    {
        let _: Call = qkv_attention_parallel_f32;
    }

    // Ragged batches (feature `capi-ragged`, default): the descriptor, `cu_q`, `cu_k` and
    // their length, then the one-shot call's tensors.
    #[cfg(feature = "capi-ragged")]
    {
        type Cu = *const usize;
        type RaggedCall = unsafe extern "C" fn(Desc, Cu, Cu, usize, R, T, T, W, W) -> QkvStatus;
        let _: RaggedCall = qkv_attention_ragged_f32;
        #[cfg(feature = "parallel")]
        {
            let _: RaggedCall = qkv_attention_ragged_parallel_f32;
        }
    }
}

/// Runs the functions above: they only name items (no call computes anything), so a
/// compiled test binary is the whole check.
#[test]
fn public_api_is_unchanged() {
    let _ = (SHAPE, PLANAR, INTERLEAVED, AT, MASKS, PARAMS, ISA);
    top_level();
    shape_and_layout();
    masks();
    bias_and_params(PARAMS);
    errors();
    kv_types();
    let _ = levels();
    split();
    ragged();
    let _: fn(Stream<'static, 'static>) -> Stream<'static, 'static> = stream;
    exp_and_tolerance();
    #[cfg(feature = "parallel")]
    parallel();
    #[cfg(feature = "capi")]
    capi();
}
