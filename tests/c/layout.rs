//! Prints the ABI facts of `qkv::capi` as Rust sees them, in the format of `layout.c`.
//! Compiled by tests/capi.rs with `rustc --extern qkv=...` against the rlib built with the
//! `capi` feature; the two outputs must be identical.

use core::mem::{align_of, offset_of, size_of, size_of_val};
use qkv::capi::*;

#[macro_use]
mod desc_fields;

macro_rules! desc {
    ($($f:ident),* $(,)?) => {{
        let d = QkvDesc::default();
        $(
            println!("offset qkv_desc.{} {}", stringify!($f), offset_of!(QkvDesc, $f));
            println!("fieldsize qkv_desc.{} {}", stringify!($f), size_of_val(&d.$f));
        )*
    }};
}

macro_rules! value {
    ($($v:ident),* $(,)?) => {
        $( println!("value {} {}", stringify!($v), $v as i64); )*
    };
}

fn main() {
    println!("size qkv_layout {}", size_of::<QkvLayout>());
    println!("align qkv_layout {}", align_of::<QkvLayout>());
    println!(
        "offset qkv_layout.head_stride {}",
        offset_of!(QkvLayout, head_stride)
    );
    println!(
        "offset qkv_layout.row_stride {}",
        offset_of!(QkvLayout, row_stride)
    );

    println!("size qkv_desc {}", size_of::<QkvDesc>());
    println!("align qkv_desc {}", align_of::<QkvDesc>());
    // Every field: the list tests/public_api.rs holds to the struct's.
    qkv_desc_fields!(desc);
    println!("size qkv_status {}", size_of::<QkvStatus>());
    println!("size qkv_plan {}", size_of::<QkvPlan>());
    println!("align qkv_plan {}", align_of::<QkvPlan>());
    for (field, offset) in [
        ("q_block", offset_of!(QkvPlan, q_block)),
        ("kv_block", offset_of!(QkvPlan, kv_block)),
        ("tasks", offset_of!(QkvPlan, tasks)),
        ("partial_len", offset_of!(QkvPlan, partial_len)),
    ] {
        println!("offset qkv_plan.{field} {offset}");
    }

    for (name, status) in STATUS_NAMES.iter().zip(ALL_STATUSES) {
        println!("value {name} {}", status as i64);
    }
    value!(
        QKV_MASK_NONE,
        QKV_MASK_CAUSAL,
        QKV_MASK_BAND,
        QKV_QUERY_POS_BOTTOM_RIGHT,
        QKV_QUERY_POS_TOP_LEFT,
        QKV_QUERY_POS_OFFSET,
        QKV_ISA_SCALAR,
        QKV_ISA_AVX2,
        QKV_ISA_AVX512,
        QKV_ISA_NEON,
        QKV_FLAG_SCALE,
        QKV_TYPE_F32,
        QKV_TYPE_F16,
        QKV_TYPE_BF16,
        QKV_TYPE_Q8_0,
    );
    println!(
        "value QKV_UNBOUNDED == SIZE_MAX {}",
        (QKV_UNBOUNDED == usize::MAX) as i64
    );
    value!(
        QKV_DESC_SIZE_V1,
        QKV_DESC_SIZE_V2,
        QKV_DESC_SIZE_V3,
        QKV_DESC_SIZE_V4,
        QKV_DESC_MAX_SIZE,
        QKV_VERSION
    );
    // QKV_VERSION comes from Cargo.toml's version, so this checks the header's macros too.
    println!("value QKV_VERSION_MAJOR {}", QKV_VERSION >> 16);
    println!("value QKV_VERSION_MINOR {}", (QKV_VERSION >> 8) & 0xff);
    println!("value QKV_VERSION_PATCH {}", QKV_VERSION & 0xff);
}
