//! Revisions, expectations and per-key TTLs.
//!
//! [`Revision`] and [`Expect`] (`seq.rs`) depend on nothing, so the error type can carry a
//! revision; [`Ttl`] (`ttl.rs`) validates into that error type.

pub(crate) mod seq;
mod ttl;

pub use seq::{Expect, Revision};
pub use ttl::Ttl;

/// Appends `n` in decimal to `out` without the formatting machinery: expectations, TTLs and
/// lease marks go into the headers of every write.
pub(crate) fn push_decimal(out: &mut String, mut n: u64) {
    // u64::MAX has 20 digits, written from the last.
    let mut digits = [0u8; 20];
    let mut len = 0;
    for slot in digits.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
        len += 1;
        if n == 0 {
            break;
        }
    }
    let digits = digits.get(digits.len() - len..).unwrap_or_default();
    // ASCII digits: always UTF-8.
    out.push_str(std::str::from_utf8(digits).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    proptest::proptest! {
        #[test]
        fn decimals_are_the_formatted_ones(n: u64) {
            let mut s = String::from("x");
            super::push_decimal(&mut s, n);
            proptest::prop_assert_eq!(s, format!("x{n}"));
        }
    }

    #[test]
    fn decimal_edges() {
        for n in [0, 9, 10, 99, 100, u64::MAX] {
            let mut s = String::new();
            super::push_decimal(&mut s, n);
            assert_eq!(s, n.to_string());
        }
    }
}
