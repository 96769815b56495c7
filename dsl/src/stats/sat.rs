//! Saturating counts: spec sizes are user input (any u64), so every product and sum of them
//! saturates at `u64::MAX` instead of overflowing. A product or sum of non-negative numbers
//! folded with saturating steps is exactly `min(true value, u64::MAX)`: once a partial result
//! saturates it stays saturated, unless a later factor is 0, which makes the true product 0 too.

use std::iter::Sum;
use std::ops::{Add, AddAssign, Mul};

/// A `u64` whose `+` and `*` saturate at `u64::MAX`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Sat(pub u64);

impl Sat {
    pub fn get(self) -> u64 {
        self.0
    }
}

macro_rules! saturating_op {
    ($op:ident, $method:ident, $sat:ident) => {
        impl $op for Sat {
            type Output = Sat;
            fn $method(self, rhs: Sat) -> Sat {
                Sat(self.0.$sat(rhs.0))
            }
        }
        impl $op<u64> for Sat {
            type Output = Sat;
            fn $method(self, rhs: u64) -> Sat {
                Sat(self.0.$sat(rhs))
            }
        }
        impl $op<Sat> for u64 {
            type Output = Sat;
            fn $method(self, rhs: Sat) -> Sat {
                Sat(self.$sat(rhs.0))
            }
        }
    };
}

saturating_op!(Add, add, saturating_add);
saturating_op!(Mul, mul, saturating_mul);

impl AddAssign for Sat {
    fn add_assign(&mut self, rhs: Sat) {
        *self = *self + rhs;
    }
}

impl Sum for Sat {
    fn sum<I: Iterator<Item = Sat>>(iter: I) -> Sat {
        iter.fold(Sat(0), Add::add)
    }
}

/// Saturating sum of plain counts.
pub(crate) fn sum(xs: impl IntoIterator<Item = u64>) -> u64 {
    xs.into_iter().map(Sat).sum::<Sat>().get()
}

/// A float that JSON can hold: NaN → 0, below 0 → 0, +∞ → `f64::MAX`. Every float of
/// `Stats` is a non-negative count, cost or loss.
pub(crate) fn finite(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, f64::MAX)
    }
}
