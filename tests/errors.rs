//! Bad input returns a typed error, never panics, and leaves `out` and `lse` untouched.

mod common;
use common::levels;
use qkv::{Bias, Dim, Error, Isa, Layout, Params, Shape, Tensor};

/// Runs every level and the reference; all must return `want` and write nothing.
fn expect(
    p: &Params, q: &[f32], k: &[f32], v: &[f32], out_len: usize, lse_len: Option<usize>,
    want: Error,
) {
    let mut results = vec![];
    let mut out = vec![7.0f32; out_len];
    let mut lse = lse_len.map(|n| vec![7.0f32; n]);
    results.push(qkv::reference::attention(
        p,
        q,
        k,
        v,
        &mut out,
        lse.as_deref_mut(),
    ));
    results.push(qkv::attention(p, q, k, v, &mut out, lse.as_deref_mut()));
    for r in levels() {
        results.push(r.attention(p, q, k, v, &mut out, lse.as_deref_mut()));
    }
    for got in results {
        assert_eq!(got, Err(want));
    }
    assert!(out.iter().all(|&x| x == 7.0), "out was written on error");
    assert!(
        lse.iter().flatten().all(|&x| x == 7.0),
        "lse was written on error"
    );
    assert!(!want.to_string().is_empty());
}

#[test]
fn zero_dimensions() {
    let buf = [0.0f32; 64];
    for (shape, dim) in [
        (Shape::new(0, 2, 2, 4), Dim::QHeads),
        (Shape::new(2, 2, 2, 4).gqa(2, 0), Dim::KvHeads),
        (Shape::new(1, 2, 2, 0), Dim::HeadDim),
        (Shape::new(1, 2, 2, 4).with_v_dim(0), Dim::VDim),
    ] {
        expect(
            &Params::new(shape),
            &buf,
            &buf,
            &buf,
            16,
            None,
            Error::ZeroDim(dim),
        );
    }
}

#[test]
fn heads_not_divisible() {
    let buf = [0.0f32; 256];
    let p = Params::new(Shape::new(1, 2, 2, 4).gqa(3, 2));
    expect(
        &p,
        &buf,
        &buf,
        &buf,
        64,
        None,
        Error::HeadsNotDivisible {
            q_heads: 3,
            kv_heads: 2,
        },
    );
}

#[test]
fn short_slices_name_the_tensor() {
    let p = Params::new(Shape::new(2, 3, 5, 4).with_v_dim(6));
    let (q, k, v) = (vec![0.0; 24], vec![0.0; 40], vec![0.0; 60]);
    let e = |tensor, needed, len| Error::TooShort {
        tensor,
        needed,
        len,
    };
    expect(&p, &q[1..], &k, &v, 36, None, e(Tensor::Q, 24, 23));
    expect(&p, &q, &k[..39], &v, 36, None, e(Tensor::K, 40, 39));
    expect(&p, &q, &k, &v[..10], 36, None, e(Tensor::V, 60, 10));
    expect(&p, &q, &k, &v, 35, None, e(Tensor::Out, 36, 35));
    expect(&p, &q, &k, &v, 36, Some(5), e(Tensor::Lse, 6, 5));
    let bias = [0.0; 14];
    let pb = p.with_bias(Bias::broadcast(&bias, 5));
    expect(&pb, &q, &k, &v, 36, None, e(Tensor::Bias, 15, 14));
    // A stride that reaches past the end is caught even if the dense size would fit.
    let strided = p.with_layouts(
        Layout {
            head_stride: 13,
            row_stride: 4,
        },
        p.k,
        p.v,
        p.out,
    );
    expect(&strided, &q, &k, &v, 36, None, e(Tensor::Q, 25, 24));
}

#[test]
fn overflowing_strides() {
    let buf = [0.0f32; 64];
    let p = Params::new(Shape::new(3, 2, 2, 4));
    let huge = Layout {
        head_stride: usize::MAX / 2 + 1,
        row_stride: 4,
    };
    expect(
        &p.with_layouts(p.q, huge, p.v, p.out),
        &buf,
        &buf,
        &buf,
        24,
        None,
        Error::Overflow(Tensor::K),
    );
    let huge = Layout {
        head_stride: 8,
        row_stride: usize::MAX,
    };
    expect(
        &p.with_layouts(p.q, p.k, p.v, huge),
        &buf,
        &buf,
        &buf,
        24,
        None,
        Error::Overflow(Tensor::Out),
    );
    let p = Params::new(Shape::new(1, usize::MAX, 1, 1).gqa(usize::MAX, 1));
    let mut out = [0.0; 1];
    assert!(qkv::attention(&p, &buf, &buf, &buf, &mut out, None).is_err());
}

#[test]
fn overlapping_output() {
    let buf = [0.0f32; 64];
    let p = Params::new(Shape::new(2, 3, 2, 4));
    for out in [
        Layout {
            head_stride: 12,
            row_stride: 3,
        },
        Layout {
            head_stride: 8,
            row_stride: 4,
        },
        Layout {
            head_stride: 0,
            row_stride: 4,
        },
    ] {
        expect(
            &p.with_layouts(p.q, p.k, p.v, out),
            &buf,
            &buf,
            &buf,
            64,
            None,
            Error::Overlap(Tensor::Out),
        );
    }
    // Interleaved and padded layouts are fine.
    for out in [
        Layout::interleaved(2, 4),
        Layout {
            head_stride: 5,
            row_stride: 10,
        },
    ] {
        let mut o = [0.0; 64];
        qkv::attention(
            &p.with_layouts(p.q, p.k, p.v, out),
            &buf,
            &buf,
            &buf,
            &mut o,
            None,
        )
        .unwrap();
    }
}

#[test]
fn invalid_scale() {
    let buf = [0.0f32; 64];
    for s in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let p = Params::new(Shape::new(1, 2, 2, 4)).with_scale(s);
        expect(&p, &buf, &buf, &buf, 8, None, Error::InvalidScale);
    }
}

#[test]
fn unavailable_level_is_an_error() {
    let buf = [0.0f32; 64];
    let p = Params::new(Shape::new(1, 2, 2, 4));
    for isa in Isa::ALL.into_iter().filter(|i| !i.is_available()) {
        let mut out = [7.0; 8];
        assert_eq!(
            isa.attention(&p, &buf, &buf, &buf, &mut out, None),
            Err(Error::Unsupported(isa))
        );
        assert_eq!(out, [7.0; 8]);
    }
}
